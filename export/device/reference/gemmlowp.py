"""gemmlowp's fixed-point transcendentals, vectorized in numpy: what TFLite's reference int8
SOFTMAX (and TFLite Micro's) computes, bit for bit.

A fixed-point number with I integer bits is an int32 `raw` meaning raw / 2^(31 - I). Products are
SaturatingRoundingDoublingHighMul of the raws (I_a + I_b integer bits); "rescale" from I to J
integer bits multiplies the raw by 2^(I - J): a saturating left shift, or RoundingDivideByPOT
(ties away from zero) for a right shift. Int32 sums do not wrap in the ranges used here (int64
holds them).

    exp_on_negative_values(a, I)    exp(a) for a <= 0, result with 0 integer bits: a is split into
        a multiple of 1/4 and a remainder r in [-1/4, 0); exp(r) is a 4th-order Taylor expansion
        around -1/8, exp(-1/8) (1 + x + x^2/2 + x^3/6 + x^4/24) with x = r + 1/8; each set bit 2^k
        (k = -2..4) of the multiple multiplies by the constant exp(-2^k); a = 0 gives One (2^31 - 1).
    one_over_one_plus_x_for_x_in_0_1(a)   1 / (1 + a): three Newton-Raphson steps on
        d = (1 + a) / 2 from 48/17 - 32/17 d, with 2 integer bits, returned as x / 2.
    get_reciprocal(x, I)            TFLite's GetReciprocal: 1 / x as (raw, num_bits_over_unit):
        x shifted left by its leading zeros, 1 / (1 + fraction), and the number of bits above 1.
"""

from __future__ import annotations

import numpy as np

from . import fixed_point as fp

__all__ = ["exp_on_negative_values", "get_reciprocal", "one_over_one_plus_x_for_x_in_0_1",
           "rounding_divide_by_pot", "saturating_left_shift", "srdhm"]

INT32_MIN, INT32_MAX = fp.INT32_MIN_VALUE, fp.INT32_MAX_VALUE
srdhm = fp.saturating_rounding_doubling_high_mul
rounding_divide_by_pot = fp.rounding_divide_by_pot


def saturating_left_shift(x, exponent: int):
    """x 2^exponent, saturated to int32."""
    return np.clip(np.asarray(x, np.int64) << exponent, INT32_MIN, INT32_MAX)


def _rescale(raw, source_bits: int, target_bits: int):
    exponent = source_bits - target_bits
    if exponent > 0:
        return saturating_left_shift(raw, exponent)
    return rounding_divide_by_pot(raw, -exponent) if exponent < 0 else np.asarray(raw, np.int64)


# exp(-2^k) with 0 integer bits, for k = -2..4 (gemmlowp's barrel shifter).
_EXP_OF_MINUS_POWERS = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                        (2, 39332535), (3, 720401), (4, 242))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    constant_term = 1895147668      # exp(-1/8)
    one_third = 715827883
    x = a + (1 << 28)               # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    polynomial = rounding_divide_by_pot(srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + srdhm(constant_term, x + polynomial)


def exp_on_negative_values(a, integer_bits: int):
    """exp(a) for raw a <= 0 with `integer_bits` integer bits; the result has 0 integer bits."""
    a = np.asarray(a, np.int64)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in _EXP_OF_MINUS_POWERS:
        if integer_bits > exponent:
            bit = (remainder >> (fractional_bits + exponent)) & 1
            result = np.where(bit != 0, srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)  # exp(a < -32) = 0
    return np.where(a == 0, np.int64(INT32_MAX), result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """1 / (1 + a) for raw a in [0, 1) with 0 integer bits; the result has 0 integer bits."""
    a = np.asarray(a, np.int64)
    total = a + INT32_MAX                                      # RoundingHalfSum(a, One)
    half_denominator = np.where(total >= 0, (total + 1) // 2, -((-(total - 1)) // 2))
    x = 1515870810 + srdhm(half_denominator, -1010580540)     # 48/17 - 32/17 d, 2 integer bits
    one = 1 << 29
    for _ in range(3):
        x = x + _rescale(srdhm(x, one - srdhm(half_denominator, x)), 4, 2)
    return _rescale(x, 1, 0)                                   # x / 2, back to 0 integer bits


def _count_leading_zeros(x):
    x = np.asarray(x, np.int64) & 0xFFFFFFFF
    bit_length = np.zeros(x.shape, np.int64)
    for k in range(32):
        bit_length += (x >> k) > 0
    return 32 - bit_length


def get_reciprocal(x, integer_bits: int):
    """TFLite's GetReciprocal of raw x > 0 with `integer_bits` integer bits: (raw of 1 / x scaled
    into [1/2, 1], num_bits_over_unit)."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = _count_leading_zeros(x)
    num_bits_over_unit = integer_bits - headroom_plus_one
    shifted_minus_one = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), num_bits_over_unit
