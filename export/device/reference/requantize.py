"""Requantization: an int32 accumulator (held in int64) to int8, by each family's rule (the names
are those of `rules`), and the multipliers and scales the convolutions requantize with."""

from __future__ import annotations

import functools

import numpy as np

from . import fixed_point as fp
from .context import Context
from .rules import FamilyRules

__all__ = ["conv_requantize", "in_chunks", "kernel_scales", "multipliers", "requantize"]


def requantize(acc, real_scale, rounding: str, zero_point: int, bounds: tuple[int, int], multipliers=None):
    """acc (int64) -> int8. rounding: "float32" (XNNPACK, ties to even), "float64" (reference
    FULLY_CONNECTED, ties away), "double" / "upward" / "high-truncated" / "upward-shift-last" (fixed point with
    `multipliers` = (M, e); see fixed_point's docstring)."""
    if rounding == "float32":
        out = acc.astype(np.float32)
        out *= np.asarray(real_scale, np.float32)
        np.rint(out, out=out)      # an integer-valued float32; beyond 2^24 it clamps all the same
    elif rounding == "float64":
        out = fp.round_half_away(acc * np.asarray(real_scale, np.float64)).astype(np.int64)
    else:
        multiplier, shift = multipliers
        out = _FIXED_POINT[rounding](acc, multiplier, shift)
    out += zero_point
    np.clip(out, bounds[0], bounds[1], out=out)
    return out.astype(np.int8)


_FIXED_POINT = {"double": fp.multiply_by_quantized_multiplier, "upward": fp.multiply_by_quantized_multiplier_upward,
                "high-truncated": fp.multiply_by_quantized_multiplier_high_truncated,
                "upward-shift-last": fp.multiply_by_quantized_multiplier_upward_shift_last}


def multipliers(real_scales) -> tuple[np.ndarray, np.ndarray]:
    return _multipliers_of(np.asarray(real_scales, np.float64).reshape(-1).tobytes())


@functools.lru_cache(maxsize=1024)
def _multipliers_of(real_scales: bytes) -> tuple[np.ndarray, np.ndarray]:
    pairs = [fp.quantize_multiplier(float(m)) for m in np.frombuffer(real_scales, np.float64)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


# Rows of a batch a heavy op computes at once: its int64 intermediates then stay near the
# CPU's caches (2^17 output elements, 1 MiB each), which is 1.5-2x faster than the whole batch.
_CHUNK_ELEMENTS = 1 << 17


def in_chunks(compute, x: np.ndarray, out_elements_per_row: int) -> np.ndarray:
    """compute(x[rows]) over chunks of rows along axis 0, concatenated."""
    rows = max(1, _CHUNK_ELEMENTS // max(out_elements_per_row, 1))
    if len(x) <= rows:
        return compute(x)
    return np.concatenate([compute(x[start:start + rows]) for start in range(0, len(x), rows)])


def kernel_scales(context: Context, weights_index: int = 1):
    """(double real scales, float32 real scales) s_in s_w[c] / s_out of a conv/FC, per channel.

    TFLite computes the double one as double(s_in) double(s_w[c]) / double(s_out), except for a
    FULLY_CONNECTED with per-tensor weights in LiteRT (GetQuantizedConvolutionMultipler): there
    the product s_in s_w is taken in float32 first, double(float32(s_in s_w)) / double(s_out).
    The two multipliers differ in their last bits, which moves outputs near a rounding boundary
    by one step (probed on LiteRT's builtin kernels: 3 of 76,800 outputs of a 640 -> 128 layer).
    TFLite Micro (the tflite-micro wheel) takes the double product for FULLY_CONNECTED too:
    with the float32 product, 1 of 10,000 logits of a trained MNIST-1D CNN (W8) differed from
    it; with the double product, none."""
    input_scale = context.tensor(0).scale[0]
    weight_scale = context.tensor(weights_index).scale
    output_scale = context.output().scale[0]
    if context.op.name == "FULLY_CONNECTED" and weight_scale.size == 1 and context.rules.fc_float32_scale_product:
        product = np.float64(np.float32(input_scale) * np.float32(weight_scale[0]))
        double = np.atleast_1d(product / np.float64(output_scale))
    else:
        double = np.float64(input_scale) * weight_scale.astype(np.float64) / np.float64(output_scale)
    single = (np.float32(input_scale) * weight_scale.astype(np.float32)) / np.float32(output_scale)
    return double, single


def conv_requantize(context: Context, acc_by_channel, rounding: str, rules: FamilyRules, channels: slice = slice(None)):
    """int64 accumulators laid out channel first, (C, rows), to int8 laid out (rows, C), with the
    requantization `rounding` and the activation bounds of `rules`; `channels`: which output
    channels these are (their scales).

    Channel first, each per-channel multiplier broadcasts over a long contiguous row: numpy's
    elementwise ops then run about 3x faster than over a short last axis."""
    double, single = kernel_scales(context)
    if double.size > 1:
        double, single = double[channels], single[channels]
    scale, zero_point = context.output().grid()
    bounds = context.output_bounds(ties_even=rules.bounds_ties_even)
    if rounding == "float32":
        out = requantize(acc_by_channel, single[:, None], "float32", zero_point, bounds)
    elif rounding == "float64":
        out = requantize(acc_by_channel, double[:, None], "float64", zero_point, bounds)
    else:
        multiplier, shift = multipliers(double)
        out = requantize(acc_by_channel, None, rounding, zero_point, bounds, (multiplier[:, None], shift[:, None]))
    return out.T
