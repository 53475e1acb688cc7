"""HARD_SWISH, x relu6(x + 3) / 6, on int8: TFLite's int16 fixed point, one table of 256 entries.

Every family computes it alike: LiteRT's reference and builtin kernels on x86-64 and on the
emulated ARM64 CPU models, with XNNPACK or without (probed over 60 random grids x the 256 int8
inputs on each; 0 differ), and TFLite Micro (the same probe, 10 grids).

With v = (q - z_in) 2^7 (the input on a grid 128 times finer, s_h = s_in / 128, float32) and two
int16 multipliers, each QuantizeMultiplier's Q31 multiplier rounded to Q15 (`_to_q15`):
    (M_o, e_o) for s_h / s_out (e_o <= 0), (M_r, e_r) for s_h / (3 / 2^15),
    p = SRDHM16(v, M_o)                                  the input on the output grid, pre-shift
    r = v 2^(e_r - 1) saturated (e_r > 0), SRDHM16(r, M_r), then 2^1 saturated (e_r > 0) or
        RoundingDivideByPOT(r, -e_r) (e_r < 0)          (x + 3) / 6 on a 2^-15 grid, in [-1, 1)
    r = (r + 2^15) >> 1                                  relu6(x + 3) / 6 in [0, 1), Q15
    out = RoundingDivideByPOT(SDHM16(r, p), -e_o) + z_out, clamped to int8
SRDHM16 rounds (gemmlowp's int16 SaturatingRoundingDoublingHighMul: nudge 2^14, division
truncating toward zero); SDHM16 truncates toward zero (TFLite's SaturatingDoublingHighMul).
"""

from __future__ import annotations

import numpy as np

from . import fixed_point as fp
from .context import Context

__all__ = ["hard_swish"]

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


def hard_swish(context: Context):
    context.require_int8(0)
    (si, zi), (so, zo) = context.tensor(0).grid(), context.output().grid()
    table = hard_swish_table(si, zi, so, zo)
    return [table[context.value(0).astype(np.int64) + 128]]


def hard_swish_table(input_scale: float, input_zero: int, output_scale: float, output_zero: int) -> np.ndarray:
    """The int8 output for each int8 input -128..127 (see the module docstring)."""
    hires = np.float32(1.0 / 128.0) * np.float32(input_scale)
    output_multiplier, output_exponent = fp.quantize_multiplier(float(hires / np.float32(output_scale)))
    reluish_multiplier, reluish_exponent = fp.quantize_multiplier(float(hires / np.float32(3.0 / 32768.0)))
    output_multiplier, reluish_multiplier = _to_q15(output_multiplier), _to_q15(reluish_multiplier)
    v = (np.arange(-128, 128, dtype=np.int64) - input_zero) * 128
    preshift = _srdhm16(v, output_multiplier)
    reluish = v
    if reluish_exponent > 0:
        reluish = _saturating_left_shift16(reluish, reluish_exponent - 1)
    reluish = _srdhm16(reluish, reluish_multiplier)
    if reluish_exponent > 0:
        reluish = _saturating_left_shift16(reluish, 1)
    elif reluish_exponent < 0:
        reluish = fp.rounding_divide_by_pot(reluish, -reluish_exponent)
    reluish = (reluish + (1 << 15)) >> 1
    out = fp.rounding_divide_by_pot(_sdhm16(reluish, preshift), -output_exponent) + output_zero
    return np.clip(out, -128, 127).astype(np.int8)


def _to_q15(multiplier: int) -> int:
    """TFLite's DownScaleInt32ToInt16Multiplier: a Q31 multiplier rounded to Q15 (ties up),
    saturating at 2^15 - 1."""
    if multiplier >= (1 << 31) - 1 - (1 << 15):   # would round to 2^15
        return INT16_MAX
    return (multiplier + (1 << 15)) >> 16


def _srdhm16(a, b):
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    product = a * b
    nudged = product + np.where(product >= 0, 1 << 14, 1 - (1 << 14))
    high = np.sign(nudged) * (np.abs(nudged) >> 15)     # C's division: truncates toward zero
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, high)


def _sdhm16(a, b):
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    product = a * b
    high = np.sign(product) * (np.abs(product) >> 15)
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, high)


def _saturating_left_shift16(x, exponent: int):
    return np.clip(np.asarray(x, np.int64) << exponent, INT16_MIN, INT16_MAX)
