"""QUANTIZE (float32 -> int8, or a requantization int8 -> int8) and DEQUANTIZE, rounded by the
family's rules (`rules.FamilyRules.quantize_float`, `requantize_int8`, `dequantize`)."""

from __future__ import annotations

import numpy as np

from . import fixed_point as fp
from .context import Context
from .requantize import requantize

__all__ = ["DEQUANTIZE_BLOCK", "dequantize", "quantize"]


def quantize(context: Context):
    source, target = context.tensor(0), context.output()
    x = context.value(0)
    scale, zero_point = target.grid()
    if source.type == "float32":
        # reference: TFLite's AffineQuantize, zero_point + round_half_away(x / scale); builtin and
        # XNNPACK multiply by the float32 reciprocal and round ties to even (probed with exact ties).
        x = np.asarray(x, np.float32)
        if context.rules.quantize_float == "half-away":
            q = fp.round_half_away(x / np.float32(scale)) + zero_point
        else:
            q = np.rint(x * (np.float32(1.0) / np.float32(scale))) + zero_point
        return [np.clip(q, -128, 127).astype(np.int8)]
    context.require_int8(0)
    in_scale, in_zero = source.grid()
    centered = x.astype(np.int64) - in_zero
    if context.rules.requantize_int8 == "8-bit":
        ratio = np.float32(in_scale) / np.float32(scale)
        multiplier = int(np.rint(np.float32(256.0) * ratio))
        out = ((centered * multiplier + 0x80) >> 8) + zero_point
        return [np.clip(out, -128, 127).astype(np.int8)]
    multiplier = fp.quantize_multiplier(float(in_scale) / float(scale))
    return [requantize(centered, None, "double", zero_point, (-128, 127), multiplier)]


DEQUANTIZE_BLOCK = 8


def dequantize(context: Context):
    """float32 (q - z) s. The builtin kernel's SIMD loop computes q s - z s, which rounds
    differently, over whole blocks of 8 elements of the flattened tensor (the batch included) and
    (q - z) s on the elements after the last whole block (probed with 10 to 1,500 elements)."""
    scale, zero_point = context.tensor(0).grid()
    q = np.ascontiguousarray(context.value(0), np.int32)   # the blocks run over the row-major buffer
    out = (q - zero_point).astype(np.float32) * np.float32(scale)
    if context.rules.dequantize == "product-difference-in-8s":
        flat, blocked = out.reshape(-1), q.size - q.size % DEQUANTIZE_BLOCK
        flat[:blocked] = (q.reshape(-1)[:blocked].astype(np.float32) * np.float32(scale)
                          - np.float32(zero_point) * np.float32(scale))
    return [out]
