"""SOFTMAX over the last axis of an int8 tensor: gemmlowp fixed point, LiteRT's float32 table
(x86-64) or its uint16 table (aarch64), as the family's rules say (`rules.FamilyRules.softmax`)."""

from __future__ import annotations

import numpy as np

from . import fixed_point as fp
from . import gemmlowp
from .context import Context, UnsupportedOpError
from .requantize import multipliers

__all__ = ["softmax", "softmax_input_multiplier"]


_SCALED_DIFF_INTEGER_BITS = 5    # TFLite's kScaledDiffIntegerBits
_ACCUMULATION_INTEGER_BITS = 12  # TFLite's kAccumulationIntegerBits


def softmax(context: Context):
    """int8 SOFTMAX over the last axis, output grid 1/256 with zero point -128.

    reference (TFLite's reference kernel, TFLite Micro): gemmlowp fixed point. With
    (M, e) = quantize_multiplier(beta s_in 2^26) and d = q - max(q) >= d_min
    (d_min = -floor(31 2^26 / 2^e)): E = exp_on_negative_values(SRDHM(d 2^e, M)) with 5 integer bits
    in; S = sum of E / 2^12 (12 integer bits); (R, b) = get_reciprocal(S);
    out = RoundingDivideByPOT(SRDHM(R, E), b + 23) - 128; entries with d < d_min give -128.
    builtin and xnnpack (LiteRT's optimized kernel on x86; XNNPACK takes only float softmax): a
    float32 table T[k] = expf(-s_in beta k), k = max - q; S = T summed in order (float32);
    out = round_half_away(T[k] * (1 / (S s_out))) - 128.
    builtin-arm64 (LiteRT's optimized kernel on aarch64, SoftmaxInt8LUT): a uint16 table
    U[d] = min(65535, floor(float32(expf(float32(beta s_in) d) 65535) + 1/2)), d = q - max(q) in
    [-255, 0]; S = sum of U (int32); (M, e) = quantize_multiplier(float32(1 / float32(S s_out)));
    out = MultiplyByQuantizedMultiplier(U[d], M, e) - 128 (U >= 0: its SIMD and scalar loops
    round alike).
    """
    context.require_int8(0)
    x = context.value(0).astype(np.int64)
    input_scale, _ = context.tensor(0).grid()
    output_scale, output_zero = context.output().grid()
    beta = float(getattr(context.options, "beta", 1.0))
    rows = x.reshape(-1, x.shape[-1])
    diff = rows - rows.max(axis=-1, keepdims=True)
    if context.rules.softmax == "fixed-point":
        out = _softmax_fixed_point(diff, beta, float(input_scale))
    elif context.rules.softmax == "uint16-table":
        out = _softmax_uint16_table(diff, beta, float(input_scale), float(output_scale)) + output_zero
    else:
        table = _expf(-np.float32(input_scale) * np.float32(beta) * np.arange(256, dtype=np.float32))
        exps = table[-diff]
        total = np.add.accumulate(exps, axis=-1, dtype=np.float32)[:, -1:]
        inverse = np.float32(1.0) / (total * np.float32(output_scale))
        out = fp.round_half_away(exps * inverse).astype(np.int64) + output_zero
    return [np.clip(out, -128, 127).astype(np.int8).reshape(x.shape)]


def softmax_input_multiplier(beta: float, input_scale: float) -> float:
    """beta s_in 2^26 (capped at 2^31 - 1): TFLite's PreprocessSoftmaxScaling, which aborts the
    process (a CHECK in QuantizeMultiplierGreaterThanOne) unless it is > 1, i.e. for an int8
    SOFTMAX input scale below 2^-26 / beta: a degenerate (near-zero) calibrated range."""
    return min(beta * input_scale * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)), float((1 << 31) - 1))


def _softmax_fixed_point(diff, beta: float, input_scale: float):
    real = softmax_input_multiplier(beta, input_scale)
    if real <= 1.0:
        raise UnsupportedOpError(f"input scale {input_scale:.3g} is below 2^-26: TFLite aborts on this SOFTMAX")
    multiplier, left_shift = fp.quantize_multiplier(real)
    diff_min = -int(np.floor(((1 << _SCALED_DIFF_INTEGER_BITS) - 1) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS))
                             / float(1 << left_shift)))
    valid = diff >= diff_min
    rescaled = gemmlowp.srdhm(np.where(valid, diff, 0) << left_shift, multiplier)
    exps = gemmlowp.exp_on_negative_values(rescaled, _SCALED_DIFF_INTEGER_BITS)
    terms = gemmlowp.rounding_divide_by_pot(exps, _ACCUMULATION_INTEGER_BITS)
    total = np.where(valid, terms, 0).sum(axis=-1, keepdims=True)
    reciprocal, bits_over_unit = gemmlowp.get_reciprocal(total, _ACCUMULATION_INTEGER_BITS)
    scaled = gemmlowp.srdhm(reciprocal, exps)
    out = fp.rounding_divide_by_pot(scaled, bits_over_unit + 31 - 8)
    return np.where(valid, out - 128, -128)


def _softmax_uint16_table(diff, beta: float, input_scale: float, output_scale: float):
    scale = np.float32(input_scale) * np.float32(beta)
    exps = _expf(scale * np.arange(-255, 1, dtype=np.float32)) * np.float32(65535)   # float32 products
    table = np.minimum(np.floor(exps.astype(np.float64) + 0.5), 65535).astype(np.int64)
    values = table[diff + 255]
    total = values.sum(axis=-1, keepdims=True)
    inverse = np.float32(1.0) / (total.astype(np.float32) * np.float32(output_scale))
    multiplier, shift = multipliers(inverse)   # one (M, e) per row
    return fp.multiply_by_quantized_multiplier(values, multiplier.reshape(inverse.shape), shift.reshape(inverse.shape))


def _expf(values: np.ndarray) -> np.ndarray:
    """C's expf on float32 values, as exp in double rounded to float32: correctly rounded, which
    glibc's expf (within 0.502 ulp) matches but for near-ties; equal on every table probed.
    (numpy's own float32 exp is not: it differed from expf in 9-102 of 256 entries.)"""
    return np.exp(np.asarray(values, np.float64)).astype(np.float32)
