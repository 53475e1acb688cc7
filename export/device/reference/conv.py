"""CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: exact int8 dot products (float32 BLAS where
every partial sum is an integer below 2^24, else float64), the int32 bias, then the family's
requantization (`rules.FamilyRules.conv_requantize` / `fc_requantize`)."""

from __future__ import annotations

import numpy as np

from .context import Context, UnsupportedOpError
from .requantize import conv_requantize, in_chunks
from .rules import FamilyRules, rules_of

__all__ = ["DEPTHWISE_BLOCK", "conv_2d", "conv_rules", "depthwise_conv_2d", "exact_dtype", "fast_3x3_depthwise", "fully_connected",
           "int32_bias", "int_weights", "same_padding", "valid_size"]


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2, total - total // 2


def valid_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    effective = (kernel - 1) * dilation + 1
    return (size - effective + stride) // stride


def _padded_windows(context: Context, x: np.ndarray, kh: int, kw: int, dtype):
    """(N, OH, OW, kh, kw, C) windows (a strided view, no copy) of x - zero point in `dtype`,
    padding contributing 0."""
    options = context.options
    sh, sw = options.strideH, options.strideW
    dh, dw = max(getattr(options, "dilationHFactor", 1), 1), max(getattr(options, "dilationWFactor", 1), 1)
    _, zero_point = context.tensor(0).grid()
    n, h, w, c = x.shape
    if context.graph.padding_names.get(options.padding) == "SAME":
        oh, top, bottom = same_padding(h, kh, sh, dh)
        ow, left, right = same_padding(w, kw, sw, dw)
        centered = np.zeros((n, h + top + bottom, w + left + right, c), dtype)
        interior = centered[:, top:top + h, left:left + w, :]
        interior[...] = x
        interior -= zero_point
    else:
        oh, ow = valid_size(h, kh, sh, dh), valid_size(w, kw, sw, dw)
        centered = x.astype(dtype)
        centered -= zero_point
    windows = np.lib.stride_tricks.sliding_window_view(centered, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    windows = windows[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw, :, ::dh, ::dw]  # (N, OH, OW, C, kh, kw)
    return windows.transpose(0, 1, 2, 4, 5, 3)


def exact_dtype(context: Context, weights: np.ndarray, terms: int):
    """float32 where every partial sum of the int8 dot products is an integer below 2^24 (so
    float32 BLAS is exact and twice as fast), else float64 (exact below 2^53)."""
    _, zero_point = context.tensor(0).grid()
    largest_input = max(zero_point + 128, 127 - zero_point)
    largest_weight = int(np.abs(weights).max()) if weights.size else 0
    return np.float32 if terms * largest_input * largest_weight < (1 << 24) else np.float64


def int32_bias(context: Context, index: int = 2):
    if context.has_input(index):
        bias = context.value(index)
        if bias.dtype not in (np.int32, np.int64):
            raise UnsupportedOpError(f"bias tensor {context.tensor(index).name!r} is {bias.dtype}, not int32")
        return bias.astype(np.int64)
    return np.int64(0)


def int_weights(context: Context, index: int = 1) -> np.ndarray:
    tensor = context.tensor(index)
    if tensor.type not in ("int8", "int4") or not tensor.quantized:
        raise UnsupportedOpError(f"weights {tensor.name!r} are {tensor.type}, not int8/int4 (a float layer?)")
    if np.any(tensor.zero_point != 0):
        raise UnsupportedOpError(f"weights {tensor.name!r} have a nonzero zero point")
    return context.value(index).astype(np.int64)


def conv_rules(context: Context) -> FamilyRules:
    """The rules of the family that really runs a CONV_2D / DEPTHWISE_CONV_2D: a family that does
    not take packed int4 weights hands the op to `int4_convs_run_as`."""
    if context.tensor(1).type != "int4":   # (the int4 field is read only where it applies)
        return context.rules
    handed_to = context.rules.int4_convs_run_as
    return context.rules if handed_to is None else rules_of(handed_to)


def conv_2d(context: Context):
    context.require_int8(0)
    weights = int_weights(context)                       # (out, kh, kw, in)
    out_channels, kh, kw, in_channels = weights.shape
    x = context.value(0)
    if x.shape[-1] != in_channels:
        raise UnsupportedOpError(f"grouped convolution ({x.shape[-1]} input channels, filter has {in_channels})")
    dtype = exact_dtype(context, weights, kh * kw * in_channels)
    matrix = weights.reshape(out_channels, -1).astype(dtype)
    bias, rules = _column(int32_bias(context)), conv_rules(context)

    def compute(rows):
        windows = _padded_windows(context, rows, kh, kw, dtype)
        n, oh, ow = windows.shape[:3]
        acc = (matrix @ windows.reshape(n * oh * ow, -1).T).astype(np.int64)   # (out, n oh ow)
        acc += bias
        return conv_requantize(context, acc, rules.conv_requantize, rules).reshape(n, oh, ow, out_channels)

    return [in_chunks(compute, x, int(np.prod(context.output().shape[1:])))]


def _column(bias):
    """A per-channel bias as a column (C, 1) for channel-first accumulators."""
    return bias.reshape(-1, 1) if np.ndim(bias) else bias


DEPTHWISE_BLOCK = 8


def fast_3x3_depthwise(context: Context, input_shape, kh: int, kw: int, multiplier: int) -> bool:
    """Whether LiteRT's aarch64 build runs this DEPTHWISE_CONV_2D on its 3x3 kernel (TFLite's
    Fast3x3FilterKernelSupported): a 3x3 filter, depth multiplier 1, no dilation, stride 1 or 2
    and padding 0 or 1, each the same along both axes, input channels a multiple of 8; with no
    padding the last window must lie inside the input, with padding 1 at most one past it; and
    an input 1 wide or 1 high must be 1 x 1."""
    options = context.options
    strides = (int(options.strideH), int(options.strideW))
    dilations = (int(options.dilationHFactor or 1), int(options.dilationWFactor or 1))
    if (kh, kw) != (3, 3) or multiplier != 1 or dilations != (1, 1) or strides[0] != strides[1] \
            or strides[0] not in (1, 2) or input_shape[-1] % 8:
        return False
    height, width = int(input_shape[1]), int(input_shape[2])
    same = context.graph.padding_names.get(options.padding) == "SAME"
    outs, pads = [], []
    for size, stride in ((height, strides[0]), (width, strides[1])):
        out, before, _ = same_padding(size, 3, stride, 1) if same else (valid_size(size, 3, stride, 1), 0, 0)
        outs.append(out)
        pads.append(before)
    if pads[0] != pads[1] or pads[0] not in (0, 1):
        return False
    ends = [(out - 1) * stride - pad + 3 for out, stride, pad in zip(outs, strides, pads, strict=True)]
    if ends[0] > height + pads[0] or ends[1] > width + pads[0]:
        return False
    return pads[0] == 0 or (width != 1 and height != 1) or width == height


def depthwise_conv_2d(context: Context):
    """Per channel, one multiply-add of the shifted input per filter tap."""
    context.require_int8(0)
    weights = int_weights(context)                       # (1, kh, kw, in * multiplier)
    _, kh, kw, out_channels = weights.shape
    x = context.value(0)
    multiplier = out_channels // x.shape[-1]
    dtype = exact_dtype(context, weights, kh * kw)
    taps = weights[0].astype(dtype)
    bias, rules = _column(int32_bias(context)), conv_rules(context)
    fast_3x3 = rules.depthwise_3x3_requantize is not None and fast_3x3_depthwise(context, x.shape, kh, kw, multiplier)

    def compute(rows):
        windows = _padded_windows(context, rows, kh, kw, dtype)
        if multiplier > 1:
            windows = np.repeat(windows, multiplier, axis=-1)
        acc = np.empty((*windows.shape[:3], out_channels), dtype)
        term = np.empty_like(acc)
        np.multiply(windows[:, :, :, 0, 0, :], taps[0, 0], out=acc)
        for i, j in [(i, j) for i in range(kh) for j in range(kw)][1:]:
            np.multiply(windows[:, :, :, i, j, :], taps[i, j], out=term)
            acc += term
        by_channel = acc.reshape(-1, out_channels).T.astype(np.int64)
        by_channel += bias
        if fast_3x3:
            return conv_requantize(context, by_channel, rules.depthwise_3x3_requantize, rules).reshape(acc.shape)
        if not rules.depthwise_scalar_tail or out_channels % DEPTHWISE_BLOCK == 0:
            return conv_requantize(context, by_channel, rules.depthwise_requantize, rules).reshape(acc.shape)
        # LiteRT's builtin depthwise kernel requantizes whole blocks of 8 output channels with
        # SIMD (ruy's rounding) and the channels after the last whole block one by one with
        # TFLite's scalar MultiplyByQuantizedMultiplier (double rounding); probed for 3-24 channels.
        blocked = slice(0, out_channels - out_channels % DEPTHWISE_BLOCK)
        tail = slice(blocked.stop, out_channels)
        out = np.concatenate([conv_requantize(context, by_channel[blocked], rules.depthwise_requantize, rules, blocked),
                              conv_requantize(context, by_channel[tail], "double", rules, tail)], axis=1)
        return out.reshape(acc.shape)

    return [in_chunks(compute, x, int(np.prod(context.output().shape[1:])))]


def fully_connected(context: Context):
    context.require_int8(0)
    weights = int_weights(context)                       # (out, in)
    x = context.value(0)
    _, zero_point = context.tensor(0).grid()
    dtype = exact_dtype(context, weights, weights.shape[1])
    matrix = weights.astype(dtype)
    bias, rules = _column(int32_bias(context)), context.rules

    def compute(rows):
        centered = rows.astype(dtype)
        centered -= zero_point
        acc = (matrix @ centered.T).astype(np.int64)                         # (out, rows)
        acc += bias
        return conv_requantize(context, acc, rules.fc_requantize, rules)

    out = in_chunks(compute, x.reshape(-1, weights.shape[1]), weights.shape[0])
    if getattr(context.options, "keepNumDims", False):
        return [out.reshape(*x.shape[:-1], weights.shape[0])]
    return [out]
