"""ADD and MUL of two int8 tensors, and the int8 -> int8 lookup-table activations (LOGISTIC,
TANH): each rescales by its family's rule (`rules.FamilyRules.add`, `mul`, `table_ties_even`)."""

from __future__ import annotations

import numpy as np

from . import fixed_point as fp
from .context import Context
from .requantize import requantize

__all__ = ["add", "logistic", "mul", "tanh"]


def add(context: Context):
    context.require_int8(0, 1)
    a, b = context.value(0).astype(np.int64), context.value(1).astype(np.int64)
    (sa, za), (sb, zb), (so, zo) = context.tensor(0).grid(), context.tensor(1).grid(), context.output().grid()
    if context.rules.add == "20-bit":
        return [_xnnpack_add(a, b, sa, za, sb, zb, so, zo, context.output_bounds(ties_even=context.rules.bounds_ties_even))]
    left_shift = 20
    twice_max = 2.0 * max(float(sa), float(sb))
    m_a, e_a = fp.quantize_multiplier(float(sa) / twice_max)
    m_b, e_b = fp.quantize_multiplier(float(sb) / twice_max)
    m_o, e_o = fp.quantize_multiplier(twice_max / ((1 << left_shift) * float(so)))
    # TFLite's reference kernel rounds each multiply twice (SaturatingRoundingDoublingHighMul,
    # then RoundingDivideByPOT). LiteRT's builtin kernel on x86 rounds the two input rescales
    # once (ties up) and the output rescale twice. Probed on ResNet-8 (trained at W3 and
    # untrained at W4) and MobileNetV2-0.35: double rounding everywhere missed 1,107 of 4.9 M
    # elements of one ADD, single rounding everywhere 1 of 262 k in another (sums within 2e-6 of
    # a half); this mix missed none of 16 ADDs (36 M elements). Rounding the output rescale
    # upward (ruy's rule) fit as well: those probes do not tell the two apart.
    single = context.rules.add == "single-double"
    rescale = fp.multiply_by_quantized_multiplier_single if single else fp.multiply_by_quantized_multiplier
    scaled_a = rescale((a - za) << left_shift, m_a, e_a)
    scaled_b = rescale((b - zb) << left_shift, m_b, e_b)
    out = fp.multiply_by_quantized_multiplier(scaled_a + scaled_b, m_o, e_o) + zo
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def _xnnpack_add(a, b, sa, za, sb, zb, so, zo, bounds):
    """XNNPACK qs8 add: 20-bit multipliers of s_a/s_out, s_b/s_out and one arithmetic shift."""
    scale_a = np.float32(sa) / np.float32(so)
    scale_b = np.float32(sb) / np.float32(so)
    exponent = int(np.frexp(np.float32(max(scale_a, scale_b)))[1]) - 1
    shift = 20 - exponent
    m_a = int(np.rint(np.float32(np.ldexp(scale_a, shift))))
    m_b = int(np.rint(np.float32(np.ldexp(scale_b, shift))))
    bias = (1 << (shift - 1)) - m_a * za - m_b * zb
    out = ((bias + a * m_a + b * m_b) >> shift) + zo
    return np.clip(out, bounds[0], bounds[1]).astype(np.int8)


def mul(context: Context):
    context.require_int8(0, 1)
    a, b = context.value(0).astype(np.int64), context.value(1).astype(np.int64)
    (sa, za), (sb, zb), (so, zo) = context.tensor(0).grid(), context.tensor(1).grid(), context.output().grid()
    product = (a - za) * (b - zb)
    bounds = context.output_bounds(ties_even=context.rules.bounds_ties_even)
    if context.rules.mul == "float32":
        scale = (np.float32(sa) * np.float32(sb)) / np.float32(so)
        return [requantize(product, scale, "float32", zo, bounds)]
    multiplier = fp.quantize_multiplier(float(sa) * float(sb) / float(so))
    return [requantize(product, None, "double", zo, bounds, multiplier)]




def _lookup_table(context: Context, function):
    """An int8 -> int8 table: out = zero_point + round(f(s_in (q - z_in)) / s_out), clamped."""
    context.require_int8(0)
    (si, zi), (so, zo) = context.tensor(0).grid(), context.output().grid()
    q = np.arange(-128, 128, dtype=np.int64)
    real = np.float32(si) * (q - zi).astype(np.float32)
    transformed = function(real.astype(np.float32)).astype(np.float32)
    if context.rules.table_ties_even:
        table = np.rint(transformed / np.float32(so)) + zo
    else:
        table = fp.round_half_away(transformed * (np.float32(1.0) / np.float32(so))) + zo
    table = np.clip(table, -128, 127).astype(np.int8)
    return [table[context.value(0).astype(np.int64) + 128]]


def logistic(context: Context):
    return _lookup_table(context, lambda v: (np.float32(1.0) / (np.float32(1.0) + np.exp(-v))).astype(np.float32))


def tanh(context: Context):
    return _lookup_table(context, lambda v: np.tanh(v).astype(np.float32))
