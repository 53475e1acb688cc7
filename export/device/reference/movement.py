"""The ops that move int8 values without computing new ones: reshapes, slices, padding (with the
zero point), concatenation (on one grid), space/batch rearrangements. The same in every family."""

from __future__ import annotations

import numpy as np

from .context import Context, UnsupportedOpError

__all__ = ["batch_to_space_nd", "concatenation", "expand_dims", "pack", "pad", "reshape", "shape", "space_to_batch_nd", "squeeze", "strided_slice"]


def reshape(context: Context):
    x = context.value(0)
    if context.has_input(1):
        target = [int(d) for d in np.asarray(context.value(1)).reshape(-1)]
    else:
        target = list(getattr(context.options, "newShape", None) or context.output().shape)
    return [x.reshape(_batched_shape(x, target))]


def _batched_shape(x: np.ndarray, target: list) -> list:
    """A static target shape of a batch-1 graph applied to a batch of N: the leading 1 becomes N,
    and a shape that dropped the batch (a batch-1 Flatten to (C,), read by a broadcasting ADD)
    gets N in front."""
    target = list(target)
    known = int(np.prod([d for d in target if d != -1])) if target else 1
    if -1 in target or known == x.size or known * x.shape[0] != x.size:
        return target
    return [x.shape[0], *target[1:]] if target and target[0] == 1 else [x.shape[0], *target]


def expand_dims(context: Context):
    x = context.value(0)
    axis = int(np.asarray(context.value(1)).reshape(-1)[0])
    return [np.expand_dims(x, axis if axis >= 0 else x.ndim + 1 + axis)]


def squeeze(context: Context):
    x = context.value(0)
    dims = list(getattr(context.options, "squeezeDims", None) or [])
    return [np.squeeze(x, axis=tuple(d % x.ndim for d in dims)) if dims else np.squeeze(x)]


def shape(context: Context):
    return [np.asarray(context.value(0).shape, np.int32)]


def pack(context: Context):
    axis = int(getattr(context.options, "axis", 0))
    return [np.stack([np.asarray(context.value(i)) for i in range(len(context.op.inputs))], axis=axis)]


def strided_slice(context: Context):
    x = np.asarray(context.value(0))
    begin, end, strides = (np.asarray(context.value(i)).reshape(-1) for i in (1, 2, 3))
    options = context.options
    for name in ("ellipsisMask", "newAxisMask"):
        if getattr(options, name, 0):
            raise UnsupportedOpError(f"strided slice with {name}")
    slices = []
    for d in range(len(begin)):
        start = None if (options.beginMask >> d) & 1 else int(begin[d])
        stop = None if (options.endMask >> d) & 1 else int(end[d])
        if getattr(options, "offset", False) and stop is not None:
            stop = int(begin[d]) + stop
        slices.append(slice(start, stop, int(strides[d])))
    out = x[tuple(slices)]
    shrink = [d for d in range(len(begin)) if (options.shrinkAxisMask >> d) & 1]
    return [out.reshape([s for d, s in enumerate(out.shape) if d not in shrink]) if shrink else out]


def pad(context: Context):
    x = context.value(0)
    paddings = np.asarray(context.value(1)).reshape(-1, 2)
    fill = context.tensor(0).grid()[1] if context.tensor(0).quantized else 0
    if context.has_input(2):
        fill = int(np.asarray(context.value(2)).reshape(-1)[0])
    return [np.pad(x, [tuple(int(v) for v in row) for row in paddings], constant_values=fill)]


def concatenation(context: Context):
    out_scale, out_zero = context.output().grid()
    parts = []
    for i in range(len(context.op.inputs)):
        scale, zero_point = context.tensor(i).grid()
        value = context.value(i)
        if scale != out_scale or zero_point != out_zero:
            raise UnsupportedOpError(f"concatenation input {i} has another grid than the output")
        parts.append(value)
    axis = int(context.options.axis) % parts[0].ndim
    out = np.concatenate(parts, axis=axis).astype(np.int64)
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def space_to_batch_nd(context: Context):
    x = context.value(0)
    block = [int(v) for v in np.asarray(context.value(1)).reshape(-1)]
    paddings = np.asarray(context.value(2)).reshape(-1, 2)
    zero_point = context.tensor(0).grid()[1] if context.tensor(0).quantized else 0
    x = np.pad(x, [(0, 0), *[tuple(int(v) for v in row) for row in paddings], (0, 0)], constant_values=zero_point)
    n, h, w, c = x.shape
    bh, bw = block
    x = x.reshape(n, h // bh, bh, w // bw, bw, c).transpose(2, 4, 0, 1, 3, 5)
    return [x.reshape(bh * bw * n, h // bh, w // bw, c)]


def batch_to_space_nd(context: Context):
    x = context.value(0)
    bh, bw = (int(v) for v in np.asarray(context.value(1)).reshape(-1))
    crops = np.asarray(context.value(2)).reshape(-1, 2)
    nb, h, w, c = x.shape
    n = nb // (bh * bw)
    x = x.reshape(bh, bw, n, h, w, c).transpose(2, 3, 0, 4, 1, 5).reshape(n, h * bh, w * bw, c)
    return [x[:, crops[0, 0]:h * bh - crops[0, 1], crops[1, 0]:w * bw - crops[1, 1], :]]
