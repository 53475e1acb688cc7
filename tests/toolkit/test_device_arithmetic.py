"""The device's rules in `toolkit.device_arithmetic`, each against the code that states it
elsewhere: XNNPACK's ADD against the integer reference's, the host's input quantization against
`export.device.check.quantize_input`, powers of two against numpy's ldexp."""

import numpy as np
import pytest
import tensorflow as tf

from export.device.check import quantize_input
from export.device.reference.elementwise import _xnnpack_add
from tests.seeds import seeded
from toolkit.device_arithmetic import add_xnnpack, power_of_two, quantize_host
from toolkit.quantizers import Grid


def _grid(scale: float, zero_point: int) -> Grid:
    return Grid(scale=tf.constant(scale, tf.float32), zero_point=tf.constant(float(zero_point)), qmin=-128, qmax=127)


def test_powers_of_two_are_exact():
    exponents = np.arange(-126, 127)
    np.testing.assert_array_equal(power_of_two(exponents).numpy(), np.ldexp(np.float32(1), exponents).astype(np.float32))
    exponents = np.arange(-1022, 1023)
    np.testing.assert_array_equal(power_of_two(exponents, tf.float64).numpy(), np.ldexp(1.0, exponents))


def test_add_is_xnnpacks_add_of_the_integer_reference():
    """Random grids (output steps near the operands' sum, so few sums saturate) and every int8
    pair: the output quantizer's clip of add_xnnpack equals the reference's ADD."""
    rng = np.random.default_rng(seeded(0))
    q_a, q_b = (v.ravel() for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    unsaturated = plain_misses = 0
    for _ in range(20):
        s_a, s_b = np.exp(rng.uniform(-6, 0, 2)).astype(np.float32)
        s_out = np.float32((s_a + s_b) * rng.uniform(0.6, 1.5))
        z_a, z_b, z_out = (int(v) for v in rng.integers(-100, 100, 3))
        expected = _xnnpack_add(q_a, q_b, s_a, z_a, s_b, z_b, s_out, z_out, (-128, 127)).astype(np.int64)
        a = s_a * (q_a - z_a).astype(np.float32)
        b = s_b * (q_b - z_b).astype(np.float32)
        ours = add_xnnpack(a, _grid(s_a, z_a), b, _grid(s_b, z_b), _grid(s_out, z_out)).numpy()
        ours = np.clip(np.round(ours / s_out).astype(np.int64) + z_out, -128, 127)
        np.testing.assert_array_equal(ours, expected)
        unsaturated += int(np.sum(np.abs(expected) < 127))
        rounded_sum = np.clip(np.round((a + b) / s_out).astype(np.int64) + z_out, -128, 127)   # the float simulation
        plain_misses += int(np.sum(rounded_sum != expected))
    assert unsaturated > 20 * len(q_a) // 4   # the comparison is not all clip
    assert plain_misses > 0   # the rule is not the rounded real sum (9-23 pairs in 1.3 M for seeds 0-3)


def test_the_input_is_quantized_as_the_host_quantizes_it():
    """Inputs at and a hair beside the half steps, where float32 x / s (the float simulation)
    and the host's float64 part."""
    rng = np.random.default_rng(seeded(1))
    scale, zero_point = np.float32(0.0371), -5
    halves = (np.arange(-140, 140) + 0.5 - zero_point) * np.float64(scale)
    x = np.concatenate([halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf),
                        rng.normal(scale=3, size=4096)]).astype(np.float32)
    expected = quantize_input(x, {"dtype": np.int8, "quantization": (scale, zero_point)}).astype(np.int64)
    ours = quantize_host(x, _grid(scale, zero_point)).numpy()
    np.testing.assert_array_equal(np.round(ours / scale).astype(np.int64) + zero_point, expected)
    in_float32 = np.clip(np.round(x / scale + np.float32(zero_point)), -128, 127).astype(np.int64)   # fake_quant
    assert np.sum(in_float32 != expected) > 100   # the ulp neighbours of the half steps: 337 of them


def test_the_command_line_names_map_to_the_recipe_fields():
    """`--device-arithmetic none` is the float simulation throughout (its epochs unused); a
    family keeps its epochs; an unknown name is a ConfigError naming it."""
    from toolkit.device_families import device_arithmetic_named
    from toolkit.errors import ConfigError

    assert device_arithmetic_named("none", 5) == {"device_arithmetic": None, "device_epochs": None}
    assert device_arithmetic_named("xnnpack", 2) == {"device_arithmetic": "xnnpack", "device_epochs": 2}
    with pytest.raises(ConfigError, match="Unknown device arithmetic 'ruy'"):
        device_arithmetic_named("ruy", 1)
