"""MAX_POOL_2D, AVERAGE_POOL_2D and REDUCE_MAX (GlobalMaxPooling), on one grid in and out as
TFLite requires, and MEAN (GlobalAveragePooling2D), whose requantization is its family's
(`rules.FamilyRules.mean`, `mean_keep_dims_hw`)."""

from __future__ import annotations

import numpy as np

from . import fixed_point as fp
from .context import Context, UnsupportedOpError
from .conv import same_padding, valid_size

__all__ = ["MEAN_BLOCK", "average_pool_2d", "fixed_point_mean", "float32_mean", "max_pool_2d", "mean", "raw_sum_mean",
           "reduce_max", "reduced_axes", "window_counts"]


def _pool_windows(context: Context, x: np.ndarray, fill):
    """(N, OH, OW, fh, fw, C) windows and a validity mask (padding is outside the input)."""
    options = context.options
    fh, fw, sh, sw = options.filterHeight, options.filterWidth, options.strideH, options.strideW
    n, h, w, c = x.shape
    valid = np.ones((1, h, w, 1), bool)
    if context.graph.padding_names.get(options.padding) == "SAME":
        oh, top, bottom = same_padding(h, fh, sh, 1)
        ow, left, right = same_padding(w, fw, sw, 1)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
        valid = np.pad(valid, ((0, 0), (top, bottom), (left, right), (0, 0)))
    else:
        oh, ow = valid_size(h, fh, sh, 1), valid_size(w, fw, sw, 1)

    def windows(array):
        rows = [[array[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :] for j in range(fw)] for i in range(fh)]
        return np.stack([np.stack(row, axis=3) for row in rows], axis=3)

    return windows(x), windows(valid)


def max_pool_2d(context: Context):
    context.require_int8(0)
    windows, _ = _pool_windows(context, context.value(0).astype(np.int64), -(1 << 20))
    out = windows.max(axis=(3, 4))
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def window_counts(context: Context, shape) -> np.ndarray:
    """(1, OH, OW, 1): how many input positions each pooling window of an input of `shape`
    covers (padding excluded)."""
    _, valid = _pool_windows(context, np.zeros((1, *shape[1:3], 1), np.int64), 0)
    return valid.sum(axis=(3, 4)).astype(np.int64)


def average_pool_2d(context: Context):
    """sum / count over the valid window, rounded half away from zero, in the input's grid."""
    context.require_int8(0)
    x = context.value(0).astype(np.int64)
    windows, _ = _pool_windows(context, x, 0)
    total = windows.sum(axis=(3, 4))
    count = window_counts(context, x.shape)
    half = count // 2
    out = np.where(total > 0, _div_trunc(total + half, count), _div_trunc(total - half, count))
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def _div_trunc(a, b):
    return np.where((a >= 0) == (b > 0), np.abs(a) // np.abs(b), -(np.abs(a) // np.abs(b)))


def mean(context: Context):
    """MEAN over `axes` (GlobalAveragePooling2D): the int32 sum, then one requantization.

    Builtin and reference (TFLite's QuantizedMeanOrSum): (M, e) = quantize_multiplier(s_in / s_out),
    k = min(floor(log2 n), 32, 31 + e), M' = (M 2^k) // n, e' = e - k, and
    out = MultiplyByQuantizedMultiplier(sum - n z_in, M', e') + z_out, equal grids in and out
    included: LiteRT 2.3 (builtin and BUILTIN_REF) and TFLite Micro take this path there too, not
    the truncating sum // n of TFLite's older same-grid branch (probed on MobileNetV2-0.35, a 3x3
    MEAN on one grid: 3,790 of 20,480 elements differed with truncation, 0 without). XNNPACK: with m = float32(float32(s_in / s_out) / n) (the
    grid ratio first, then the count) and the zero point folded into a float32 bias
    b = -(z_in n) m, out = lrintf(float32(sum) m + b) + z_out. Near-ties tell the orders apart:
    folding z_in into the integer sum rounds 36.50002 steps up where XNNPACK gives 36 (a trained
    digits_cnn), and m = s_in / (s_out n) in one division 76.50001 up where it gives 76
    (MobileNetV2-0.35 at W2: 43 of 81,920 elements).
    """
    context.require_int8(0)
    x = context.value(0).astype(np.int64)
    axes = reduced_axes(context, x.ndim)
    keep = bool(getattr(context.options, "keepDims", False))
    (si, zi), (so, zo) = context.tensor(0).grid(), context.output().grid()
    count = int(np.prod([x.shape[a] for a in axes]))
    total = x.sum(axis=axes, keepdims=keep)
    if keep and x.ndim == 4 and axes == (1, 2) and context.rules.mean_keep_dims_hw == "raw-sum-bias":
        return [_mean_4d_raw_sum(total, count, si, zi, so, zo)]
    if context.rules.mean == "float32":
        scale, bias = float32_mean(count, si, zi, so)
        out = np.rint(total.astype(np.float32) * scale + bias).astype(np.int64) + zo
        return [np.clip(out, -128, 127).astype(np.int8)]
    multiplier, shift = fixed_point_mean(count, si, so)
    out = fp.multiply_by_quantized_multiplier(total - zi * count, multiplier, shift) + zo
    return [np.clip(out, -128, 127).astype(np.int8)]


def float32_mean(count: int, si, zi: int, so) -> tuple[np.float32, np.float32]:
    """XNNPACK's MEAN: (m, b), m = float32(float32(s_in / s_out) / n), b = -(z_in n) m (float32):
    out = lrintf(float32(sum) m + b) + z_out."""
    scale = (np.float32(si) / np.float32(so)) / np.float32(count)
    return scale, -(np.float32(zi) * np.float32(count)) * scale


def fixed_point_mean(count: int, si, so) -> tuple[int, int]:
    """TFLite's QuantizedMeanOrSum multiplier (M', e') of (sum - n z_in): (M, e) =
    quantize_multiplier(s_in / s_out), k = min(floor(log2 n), 32, 31 + e), M' = (M 2^k) // n,
    e' = e - k."""
    multiplier, shift = fp.quantize_multiplier(float(si) / float(so))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << k) // count, shift - k


MEAN_BLOCK = 16   # channels LiteRT's keep_dims MEAN kernel requantizes at once with SIMD


def raw_sum_mean(count: int, si, zi: int, so, zo: int) -> tuple[int, int, int]:
    """LiteRT's optimized keep_dims MEAN over height and width: (M, e, bias), the multiplier of
    float32 s_in / (n s_out) for the raw int8 sum and the bias z_out - t, t the float32
    z_in s_in / s_out rounded half away from zero (`_mean_4d_raw_sum`)."""
    temp = np.float32(zi) * np.float32(si) / np.float32(so)
    bias = zo - int(temp + np.float32(0.5) if temp > 0 else temp - np.float32(0.5))
    multiplier, shift = fp.quantize_multiplier(float(np.float32(si) / (np.float32(count) * np.float32(so))))
    return multiplier, shift, bias


def _mean_4d_raw_sum(total, count: int, si, zi: int, so, zo: int) -> np.ndarray:
    """LiteRT's optimized int8 MEAN with keep_dims over height and width of a 4-D tensor (a kernel
    of its own): the sum of the raw int8 values through the multiplier of float32 s_in / (n s_out),
    plus the bias z_out - t, t the float32 z_in s_in / s_out rounded half away from zero. Whole
    blocks of 16 channels are requantized with SIMD (ruy's rounding, ties up: "upward"), the
    channels after the last whole block one by one (MultiplyByQuantizedMultiplier, double
    rounding), as its depthwise kernel does in blocks of 8 (probed for 6-40 channels; the
    fixed-point MEAN missed 209 of 1,800 elements, the scalar rule alone 17,400 of 76,800 of a
    256-channel MobileNet head)."""
    multiplier, shift, bias = raw_sum_mean(count, si, zi, so, zo)
    blocked = total.shape[-1] - total.shape[-1] % MEAN_BLOCK
    out = np.concatenate([fp.multiply_by_quantized_multiplier_upward(total[..., :blocked], multiplier, shift),
                          fp.multiply_by_quantized_multiplier(total[..., blocked:], multiplier, shift)], axis=-1) + bias
    return np.clip(out, -128, 127).astype(np.int8)


def reduced_axes(context: Context, rank: int) -> tuple[int, ...]:
    """The axes a MEAN or REDUCE_MAX of a rank-`rank` input reduces, sorted."""
    return tuple(sorted({int(a) % rank for a in np.asarray(context.value(1)).reshape(-1)}))


def reduce_max(context: Context):
    """REDUCE_MAX (GlobalMaxPooling): the largest int8 over `axes`, on the input's grid (TFLite's
    int8 kernel takes one grid in and out, as `quantize` trains it: a pass-through)."""
    context.require_int8(0)
    x = context.value(0)
    if context.tensor(0).grid() != context.output().grid():
        raise UnsupportedOpError("REDUCE_MAX with another grid out than in")
    keep = bool(getattr(context.options, "keepDims", False))
    return [x.max(axis=reduced_axes(context, x.ndim), keepdims=keep).astype(np.int8)]
