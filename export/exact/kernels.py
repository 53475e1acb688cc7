"""The integer reference's heavy ops in TensorFlow, for one kernel family: CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED (exact int8 dot products in float32 where every partial sum
is an integer below 2^24, else float64, as `reference.conv` decides), the pools and MEAN, the
moves, QUANTIZE from float and DEQUANTIZE. Each reads the same `FamilyRules` field and the same
static facts (multipliers, bounds, padding) as its numpy original, taken from the reference's
`Context`, and computes its arithmetic on the batch in TensorFlow.

A kernel is `kernel(context, inputs) -> outputs` with `inputs` the op's input tensors (None for
a constant, which `context.value` holds). `NotInTensorFlow` sends an op (or a configuration
TensorFlow's kernels do not take, such as a strided dilated convolution) to the numpy original.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from export.device.reference import conv as reference_conv
from export.device.reference import pooling as reference_pooling
from export.device.reference import quantize as reference_quantize
from export.device.reference.context import Context, UnsupportedOpError
from export.device.reference.requantize import kernel_scales, multipliers
from export.exact.fixed_point import fixed_point, requantize

__all__ = ["KERNELS", "ExactContext", "NotInTensorFlow"]


class NotInTensorFlow(Exception):
    """This op, as configured, runs on the numpy reference's kernel (tf.numpy_function)."""


class ExactContext(Context):
    """The reference's `Context` of an op (no values: TensorFlow holds them), and whether its
    requantization is fused with XLA (`compiled`)."""

    def __init__(self, graph, op, values: dict, rules, compiled: bool = False):
        super().__init__(graph, op, values, rules)
        self.compiled = compiled


def _padding(context: Context) -> str:
    return "SAME" if context.graph.padding_names.get(context.options.padding) == "SAME" else "VALID"


def _centered(context: Context, x, dtype):
    _, zero_point = context.tensor(0).grid()
    return tf.cast(x, dtype) - tf.constant(zero_point, dtype)


def _requantize_channels(context: Context, acc, rounding: str, rules):
    """Accumulators (channels last, integer-valued floats) plus the op's int32 bias, to int8 by
    `rounding` with the op's per-channel scales."""
    double, single = kernel_scales(context)
    _, zero_point = context.output().grid()
    bounds = context.output_bounds(ties_even=rules.bounds_ties_even)
    common = {"bias": reference_conv.int32_bias(context), "compiled": context.compiled}
    if rounding == "float32":
        return requantize(acc, "float32", zero_point, bounds, single=single, **common)
    if rounding == "float64":
        return requantize(acc, "float64", zero_point, bounds, double=double, **common)
    return requantize(acc, rounding, zero_point, bounds, multipliers=multipliers(double), **common)


def conv_2d(context: Context, inputs):
    context.require_int8(0)
    weights = reference_conv.int_weights(context)                       # (out, kh, kw, in)
    out_channels, kh, kw, in_channels = weights.shape
    x = inputs[0]
    if x.shape[-1] != in_channels:
        raise UnsupportedOpError(f"grouped convolution ({x.shape[-1]} input channels, filter has {in_channels})")
    options = context.options
    strides = (int(options.strideH), int(options.strideW))
    dilations = (max(int(options.dilationHFactor or 1), 1), max(int(options.dilationWFactor or 1), 1))
    if max(strides) > 1 and max(dilations) > 1:
        raise NotInTensorFlow("TensorFlow's CPU convolution takes no stride with a dilation")
    dtype = tf.float32 if reference_conv.exact_dtype(context, weights, kh * kw * in_channels) is np.float32 else tf.float64
    kernel = tf.constant(weights.transpose(1, 2, 3, 0), dtype)
    acc = tf.nn.conv2d(_centered(context, x, dtype), kernel, [1, *strides, 1], _padding(context), dilations=[1, *dilations, 1])
    rules = reference_conv.conv_rules(context)
    return [_requantize_channels(context, acc, rules.conv_requantize, rules)]


def depthwise_conv_2d(context: Context, inputs):
    context.require_int8(0)
    weights = reference_conv.int_weights(context)                       # (1, kh, kw, in * multiplier)
    _, kh, kw, out_channels = weights.shape
    x = inputs[0]
    in_channels = int(x.shape[-1])
    multiplier = out_channels // in_channels
    options = context.options
    strides = (int(options.strideH), int(options.strideW))
    dilations = (max(int(options.dilationHFactor or 1), 1), max(int(options.dilationWFactor or 1), 1))
    if strides[0] != strides[1] or (max(strides) > 1 and max(dilations) > 1):
        raise NotInTensorFlow("TensorFlow's depthwise convolution takes equal strides, and none with a dilation")
    dtype = tf.float32 if reference_conv.exact_dtype(context, weights, kh * kw) is np.float32 else tf.float64
    kernel = tf.constant(weights[0].reshape(kh, kw, in_channels, multiplier), dtype)
    acc = tf.nn.depthwise_conv2d(_centered(context, x, dtype), kernel, [1, *strides, 1], _padding(context),
                                 dilations=dilations)
    rules = reference_conv.conv_rules(context)
    static_shape = (1, *x.shape[1:])
    if rules.depthwise_3x3_requantize is not None and reference_conv.fast_3x3_depthwise(context, static_shape, kh, kw, multiplier):
        return [_requantize_channels(context, acc, rules.depthwise_3x3_requantize, rules)]
    blocked = _requantize_channels(context, acc, rules.depthwise_requantize, rules)
    if not rules.depthwise_scalar_tail or out_channels % reference_conv.DEPTHWISE_BLOCK == 0:
        return [blocked]
    # Whole blocks of 8 channels by the SIMD rule, the channels after them in "double".
    tail = _requantize_channels(context, acc, "double", rules)
    in_blocks = np.arange(out_channels) < out_channels - out_channels % reference_conv.DEPTHWISE_BLOCK
    return [tf.where(tf.constant(in_blocks), blocked, tail)]


def fully_connected(context: Context, inputs):
    context.require_int8(0)
    weights = reference_conv.int_weights(context)                       # (out, in)
    x = inputs[0]
    dtype = tf.float32 if reference_conv.exact_dtype(context, weights, weights.shape[1]) is np.float32 else tf.float64
    rows = tf.reshape(_centered(context, x, dtype), [-1, weights.shape[1]])
    acc = tf.matmul(rows, tf.constant(weights.T, dtype))
    out = _requantize_channels(context, acc, context.rules.fc_requantize, context.rules)
    if getattr(context.options, "keepNumDims", False):
        return [tf.reshape(out, tf.concat([tf.shape(x)[:-1], [weights.shape[0]]], 0))]
    return [out]


def _pool_shape(context: Context):
    options = context.options
    return [int(options.filterHeight), int(options.filterWidth)], [int(options.strideH), int(options.strideW)]


def _clip_int8(context: Context, values):
    low, high = context.output_bounds()
    return tf.cast(tf.clip_by_value(values, low, high), tf.int8)


def max_pool_2d(context: Context, inputs):
    context.require_int8(0)
    size, strides = _pool_shape(context)
    out = tf.nn.max_pool2d(tf.cast(inputs[0], tf.float32), size, strides, _padding(context))
    return [_clip_int8(context, out)]


def average_pool_2d(context: Context, inputs):
    """The sum over the valid window (the float64 mean times the count, rounded: exact), divided
    by the count with ties away from zero, on the input's grid."""
    context.require_int8(0)
    size, strides = _pool_shape(context)
    x = inputs[0]
    mean = tf.nn.avg_pool2d(tf.cast(x, tf.float64), size, strides, _padding(context))
    count = reference_pooling.window_counts(context, x.shape)
    total = tf.cast(tf.round(mean * count.astype(np.float64)), tf.int64)
    half = count // 2
    out = tf.where(total > 0, tf.truncatediv(total + half, count), tf.truncatediv(total - half, count))
    return [_clip_int8(context, out)]


def _reduced_axes(context: Context, rank: int) -> tuple[int, ...]:
    axes = reference_pooling.reduced_axes(context, rank)
    if 0 in axes:
        raise NotInTensorFlow("a reduction over the batch")
    return axes


def mean(context: Context, inputs):
    """MEAN by the family's rule (see `reference.pooling.mean`): the int64 sum, requantized."""
    context.require_int8(0)
    x = inputs[0]
    rank = len(x.shape)
    axes = _reduced_axes(context, rank)
    keep = bool(getattr(context.options, "keepDims", False))
    (si, zi), (so, zo) = context.tensor(0).grid(), context.output().grid()
    count = int(np.prod([int(x.shape[a]) for a in axes]))
    total = tf.reduce_sum(tf.cast(x, tf.int64), axis=list(axes), keepdims=keep)
    if keep and rank == 4 and axes == (1, 2) and context.rules.mean_keep_dims_hw == "raw-sum-bias":
        multiplier, shift, bias = reference_pooling.raw_sum_mean(count, si, zi, so, zo)
        channels = int(x.shape[-1])
        blocked = np.arange(channels) < channels - channels % reference_pooling.MEAN_BLOCK
        out = tf.where(tf.constant(blocked), fixed_point(total, multiplier, shift, "upward"),
                       fixed_point(total, multiplier, shift, "double")) + bias
    elif context.rules.mean == "float32":
        scale, bias = reference_pooling.float32_mean(count, si, zi, so)
        out = tf.cast(tf.round(tf.cast(total, tf.float32) * scale + bias), tf.int64) + zo
    else:
        multiplier, shift = reference_pooling.fixed_point_mean(count, si, so)
        out = fixed_point(total - zi * count, multiplier, shift, "double") + zo
    return [tf.cast(tf.clip_by_value(out, -128, 127), tf.int8)]


def reduce_max(context: Context, inputs):
    context.require_int8(0)
    if context.tensor(0).grid() != context.output().grid():
        raise UnsupportedOpError("REDUCE_MAX with another grid out than in")
    x = inputs[0]
    keep = bool(getattr(context.options, "keepDims", False))
    return [tf.cast(tf.reduce_max(tf.cast(x, tf.int32), axis=list(_reduced_axes(context, len(x.shape))), keepdims=keep), tf.int8)]


def reshape(context: Context, inputs):
    """A batch-1 graph's static target shape applied to the batch (`movement._batched_shape`)."""
    x = inputs[0]
    if context.has_input(1) and inputs[1] is not None:   # computed (a Flatten's [batch, -1]): as given
        return [tf.reshape(x, tf.reshape(inputs[1], [-1]))]
    if context.has_input(1):
        target = [int(d) for d in np.asarray(context.value(1)).reshape(-1)]
    else:
        target = list(getattr(context.options, "newShape", None) or context.output().shape)
    if -1 in target:   # as given (the reference reshapes to it as it is)
        return [tf.reshape(x, target)]
    per_sample = int(np.prod(x.shape[1:]))
    known = int(np.prod(target)) if target else 1
    if known != per_sample:
        raise NotInTensorFlow("a target shape that is not the batch's")
    return [tf.reshape(x, [-1, *target[1:]] if target and target[0] == 1 else [-1, *target])]


def shape(context: Context, inputs):
    return [tf.shape(inputs[0], out_type=tf.int32)]


def pack(context: Context, inputs):
    parts = [tensor if tensor is not None else tf.constant(np.asarray(context.value(i)))
             for i, tensor in enumerate(inputs)]
    return [tf.stack(parts, axis=int(getattr(context.options, "axis", 0)))]


def strided_slice(context: Context, inputs):
    """Of a shape (a Flatten's batch size): TensorFlow's strided slice has TFLite's masks."""
    options = context.options
    if getattr(options, "ellipsisMask", 0) or getattr(options, "newAxisMask", 0) or getattr(options, "offset", False) \
            or any(tensor is not None for tensor in inputs[1:]) or context.tensor(0).type != "int32":
        raise NotInTensorFlow("a slice of values, or with masks the reference refuses")
    begin, end, strides = (np.asarray(context.value(i)).reshape(-1) for i in (1, 2, 3))
    return [tf.strided_slice(inputs[0], begin, end, strides, begin_mask=int(options.beginMask),
                             end_mask=int(options.endMask), shrink_axis_mask=int(options.shrinkAxisMask))]


def squeeze(context: Context, inputs):
    x = inputs[0]
    dims = [d % len(x.shape) for d in (getattr(context.options, "squeezeDims", None) or [])]
    if not dims or 0 in dims:
        raise NotInTensorFlow("a squeeze that may take the batch")
    return [tf.squeeze(x, axis=dims)]


def expand_dims(context: Context, inputs):
    x = inputs[0]
    axis = int(np.asarray(context.value(1)).reshape(-1)[0])
    axis = axis if axis >= 0 else len(x.shape) + 1 + axis
    if axis == 0:
        raise NotInTensorFlow("a new leading axis")
    return [tf.expand_dims(x, axis)]


def pad(context: Context, inputs):
    x = inputs[0]
    paddings = np.asarray(context.value(1)).reshape(-1, 2).astype(np.int64)
    if paddings[0].any():
        raise NotInTensorFlow("padding along the batch")
    fill = context.tensor(0).grid()[1] if context.tensor(0).quantized else 0
    if context.has_input(2):
        fill = int(np.asarray(context.value(2)).reshape(-1)[0])
    return [tf.cast(tf.pad(tf.cast(x, tf.int32), paddings, constant_values=fill), x.dtype)]


def concatenation(context: Context, inputs):
    out_grid = context.output().grid()
    for i in range(len(context.op.inputs)):
        if context.tensor(i).grid() != out_grid:
            raise UnsupportedOpError(f"concatenation input {i} has another grid than the output")
        if inputs[i] is None:
            raise NotInTensorFlow("a constant input")
    axis = int(context.options.axis) % len(inputs[0].shape)
    if axis == 0:
        raise NotInTensorFlow("a concatenation along the batch")
    return [_clip_int8(context, tf.concat([tf.cast(part, tf.int32) for part in inputs], axis))]


def quantize(context: Context, inputs):
    """float32 -> int8 by the family's rule; an int8 -> int8 QUANTIZE is a table (`tables`)."""
    if context.tensor(0).type != "float32":
        raise NotInTensorFlow("an int8 requantization (a table)")
    if context.rules.quantize_float == "half-away":
        # x / s: Grappler turns a division by a constant into a product with its reciprocal,
        # which rounds differently (37.499996 became 37.5 on a MobileNet input).
        raise NotInTensorFlow("a division TensorFlow's graph optimizer would rewrite")
    scale, zero_point = context.output().grid()
    q = tf.round(tf.cast(inputs[0], tf.float32) * (np.float32(1.0) / np.float32(scale))) + zero_point
    return [tf.cast(tf.clip_by_value(q, -128, 127), tf.int8)]


def dequantize(context: Context, inputs):
    """(q - z) s, or the builtin kernel's q s - z s over whole blocks of 8 elements of the
    flattened batch (`reference.quantize.dequantize`)."""
    scale, zero_point = context.tensor(0).grid()
    q = tf.cast(inputs[0], tf.int32)
    out = tf.cast(q - zero_point, tf.float32) * np.float32(scale)
    if context.rules.dequantize == "product-difference-in-8s":
        flat_q, flat = tf.reshape(q, [-1]), tf.reshape(out, [-1])
        size = tf.size(flat_q)
        in_blocks = tf.range(size) < size - size % reference_quantize.DEQUANTIZE_BLOCK
        product = tf.cast(flat_q, tf.float32) * np.float32(scale) - np.float32(zero_point) * np.float32(scale)
        out = tf.reshape(tf.where(in_blocks, product, flat), tf.shape(out))
    return [out]


KERNELS = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "FULLY_CONNECTED": fully_connected,
    "MEAN": mean,
    "AVERAGE_POOL_2D": average_pool_2d,
    "MAX_POOL_2D": max_pool_2d,
    "REDUCE_MAX": reduce_max,
    "RESHAPE": reshape,
    "SHAPE": shape,
    "PACK": pack,
    "STRIDED_SLICE": strided_slice,
    "SQUEEZE": squeeze,
    "EXPAND_DIMS": expand_dims,
    "PAD": pad,
    "CONCATENATION": concatenation,
    "QUANTIZE": quantize,
    "DEQUANTIZE": dequantize,
}
