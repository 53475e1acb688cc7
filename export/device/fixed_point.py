"""The integer arithmetic of int8 TFLite kernels, vectorized in numpy (int64 holds every int32).

Ways to turn an int32 accumulator `acc` into an int8 output with a real scale m < 256
(m = s_in s_w / s_out for a conv), one per kernel family (see `reference.py`):

    fixed point, double rounding (TFLite reference kernels, TFLite Micro, most builtin kernels):
        (M, e) = quantize_multiplier(m): m = M 2^(e - 31), M in [2^30, 2^31), M = round(frac 2^31)
        y = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc 2^max(e,0), M), max(-e,0))
        two roundings: to nearest (ties away from zero) of acc M / 2^31, then of that / 2^-e
        (ties away from zero again), which can land one step away from round(acc m).
    fixed point, two roundings with ties toward +infinity (ruy's output stage: LiteRT's optimized
    builtin conv, depthwise and fully-connected kernels, probed on x86):
        h = (acc 2^max(e,0) M + 2^30) >> 31, y = (h + 2^(r-1)) >> r with r = max(-e, 0)
    (`multiply_by_quantized_multiplier_single` is the single-rounding variant of TFLite builds with
    TFLITE_SINGLE_ROUNDING: y = (acc M + 2^(30 - e)) >> (31 - e).)
    float32 (XNNPACK's "fp32" requantization of every int8 GEMM and the builtin kernels that
    requantize in float):
        y = lrintf(float32(acc) * float32(m))          (ties to even)

and `round_half_away` (C's std::round / TfLiteRound), used for the multipliers and for the
quantization of activation bounds.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ACTIVATION_RANGES",
    "activation_bounds",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_upward",
    "multiply_by_quantized_multiplier_single",
    "quantize_multiplier",
    "round_half_away",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

INT8_MIN, INT8_MAX = -128, 127


def round_half_away(x):
    """std::round: to nearest, ties away from zero."""
    x = np.asarray(x)
    return np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: (M, e) with real = M 2^(e - 31), M a Q31 number in [2^30, 2^31).

    M = round_half_away(frac 2^31) where real = frac 2^e, frac in [0.5, 1) (std::frexp, in double);
    M = 2^31 is renormalized to 2^30 with e + 1; e < -31 flushes to (0, 0); e > 30 saturates.
    """
    real_multiplier = float(real_multiplier)
    if real_multiplier == 0.0:
        return 0, 0
    fraction, exponent = math.frexp(real_multiplier)
    multiplier = int(round_half_away(fraction * float(1 << 31)))
    if multiplier == 1 << 31:
        multiplier //= 2
        exponent += 1
    if exponent < -31:
        return 0, 0
    if exponent > 30:
        return (1 << 31) - 1, 30
    return multiplier, exponent


def _truncating_divide(x, divisor: int):
    """C++ integer division (toward zero) of an int64 array by a positive power of two."""
    return np.where(x >= 0, x // divisor, -((-x) // divisor))


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp: round(a b / 2^31), ties away from zero (a, b int32; b = M > 0, so no saturation)."""
    product = np.asarray(a, np.int64) * np.asarray(b, np.int64)
    nudge = np.where(product >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    return _truncating_divide(product + nudge, 1 << 31)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp: round(x / 2^exponent), ties away from zero (exponent >= 0, per element or channel)."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = np.left_shift(np.int64(1), exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier with double rounding (its default build)."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.asarray(x, np.int64) * np.left_shift(np.int64(1), left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def multiply_by_quantized_multiplier_single(x, multiplier, shift):
    """Single rounding: (x M + 2^(30 - e)) >> (31 - e), ties toward +infinity."""
    total_shift = 31 - np.asarray(shift, np.int64)
    rounding = np.left_shift(np.int64(1), total_shift - 1)
    return (np.asarray(x, np.int64) * np.asarray(multiplier, np.int64) + rounding) >> total_shift


# The real range of each fused activation (None: unbounded on that side).
ACTIVATION_RANGES = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


def activation_bounds(activation: str, scale: float, zero_point: int, ties: str = "away") -> tuple[int, int]:
    """A fused activation's [min, max] in int8.

    ties="away": TFLite's CalculateActivationRangeQuantized, zero_point + round_half_away(bound / scale)
    in float32; ties="even": XNNPACK's lrintf(bound / scale + zero_point) in float32. Clamped to int8.
    """
    if activation not in ACTIVATION_RANGES:
        raise ValueError(f"fused activation {activation} has no int8 range")

    def quantize(value, default):
        if value is None:
            return default
        if ties == "even":
            q = np.rint(np.float32(value) / np.float32(scale) + np.float32(zero_point))
        else:
            q = zero_point + round_half_away(np.float32(value) / np.float32(scale))
        return int(np.clip(q, INT8_MIN, INT8_MAX))

    low, high = ACTIVATION_RANGES[activation]
    return quantize(low, INT8_MIN), quantize(high, INT8_MAX)


def multiply_by_quantized_multiplier_upward(x, multiplier, shift):
    """ruy's output stage (LiteRT's optimized int8 kernels on x86): two roundings, both to nearest
    with ties toward +infinity: h = (x 2^max(e,0) M + 2^30) >> 31, then (h + 2^(r-1)) >> r, r = max(-e, 0).
    """
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    product = np.asarray(x, np.int64) * np.left_shift(np.int64(1), left) * np.asarray(multiplier, np.int64)
    high = (product + np.int64(1 << 30)) >> 31
    rounding = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    return (high + rounding) >> right
