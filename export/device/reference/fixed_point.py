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
    fixed point, ruy's ARM64 NEON output stage (LiteRT's optimized CONV_2D and FULLY_CONNECTED
    on aarch64, probed under emulation): with r = max(-e, 0) > 0, the high half truncated
    (sqdmulh), then the right shift rounded with ties toward +infinity (srshl):
        h = (acc 2^max(e,0) M) >> 31, y = (h + 2^(r-1)) >> r
    and with r = 0 the high half rounded, h = (acc 2^e M + 2^30) >> 31 (as above).
    fixed point, LiteRT's ARM64 NEON depthwise output stage: as ruy's x86 rule for e <= 0, but a
    left shift e > 0 comes after the rounded high half: y = ((acc M + 2^30) >> 31) << e.
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
    "multiply_by_quantized_multiplier_high_truncated",
    "multiply_by_quantized_multiplier_upward_shift_last",
    "multiply_by_quantized_multiplier_single",
    "quantize_multiplier",
    "round_half_away",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN_VALUE, INT32_MAX_VALUE = -(1 << 31), (1 << 31) - 1


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


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp: round(a b / 2^31) of int32 a, b; MIN x MIN saturates to MAX.

    gemmlowp adds a nudge of 2^30 (1 - 2^30 for a negative product) and divides truncating toward
    zero, which is floor((a b + 2^30) / 2^31) for either sign: ties go toward +infinity.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    high = a * b
    high += np.int64(1 << 30)
    high >>= 31
    if np.any(b == INT32_MIN_VALUE) and np.any(a == INT32_MIN_VALUE):
        high = np.where((a == INT32_MIN_VALUE) & (b == INT32_MIN_VALUE), np.int64(INT32_MAX_VALUE), high)
    return high


def rounding_divide_by_pot(x, exponent):
    """gemmlowp: round(x / 2^exponent), ties away from zero (exponent >= 0, per element or channel)."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = np.left_shift(np.int64(1), exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def _high_part(x, multiplier, shift):
    """SaturatingRoundingDoublingHighMul(x 2^max(e, 0), M) and the remaining right shift max(-e, 0)."""
    shift = np.asarray(shift, np.int64)
    x = np.asarray(x, np.int64)
    if np.any(shift > 0):
        x = x << np.maximum(shift, 0)
    return saturating_rounding_doubling_high_mul(x, multiplier), np.maximum(-shift, 0)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier with double rounding (its default build)."""
    high, right = _high_part(x, multiplier, shift)
    return rounding_divide_by_pot(high, right)


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

    Computed as one shift, (x 2^max(e,0) M + 2^30 + 2^(30+r) [r > 0]) >> (31 + r): for integers,
    floor((floor(a / b) + c) / d) = floor((a + c b) / (b d)), so the two roundings are unchanged.
    """
    shift = np.asarray(shift, np.int64)
    x = np.asarray(x, np.int64)
    if np.any(shift > 0):
        x = x << np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    offset = np.int64(1 << 30) + np.where(right > 0, np.left_shift(np.int64(1), right + 30), 0)
    product = x * np.asarray(multiplier, np.int64)
    product += offset
    product >>= right + 31
    return product


def multiply_by_quantized_multiplier_high_truncated(x, multiplier, shift):
    """ruy's output stage on ARM64 (LiteRT's optimized CONV_2D and FULLY_CONNECTED there): where a
    right shift r = max(-e, 0) > 0 follows, the doubling high half is truncated (sqdmulh) and the
    shift rounds with ties toward +infinity (srshl): floor((floor(x M / 2^31) + 2^(r-1)) / 2^r),
    computed as one shift, (x M + 2^(30+r)) >> (31 + r). With r = 0 the high half is rounded,
    (x 2^e M + 2^30) >> 31: the "upward" rule. Always within one step of it, and below it where
    they differ (r > 0)."""
    shift = np.asarray(shift, np.int64)
    x = np.asarray(x, np.int64)
    if np.any(shift > 0):
        x = x << np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    offset = np.where(right > 0, np.left_shift(np.int64(1), right + 30), np.int64(1 << 30))
    product = x * np.asarray(multiplier, np.int64)
    product += offset
    product >>= right + 31
    return product


def multiply_by_quantized_multiplier_upward_shift_last(x, multiplier, shift):
    """LiteRT's depthwise output stage on ARM64: the rounded doubling high half of x M (ties toward
    +infinity), then the exponent: a left shift e > 0 after it (so the outputs of such a channel
    are multiples of 2^e), or a right shift rounded with ties toward +infinity (the "upward" rule)."""
    shift = np.asarray(shift, np.int64)
    upward = multiply_by_quantized_multiplier_upward(x, multiplier, np.minimum(shift, 0))
    return upward << np.maximum(shift, 0)
