"""Post-training quantization: MSE steps, round to nearest, AdaRound layer by layer."""

import keras
import numpy as np
import pytest

from tests.seeds import seeded
from tests.toolkit.conftest import randomize_batch_norms, small_model
from toolkit import QuantScheme, ptq, quantize
from toolkit.errors import ConfigError
from toolkit.ptq import (
    STEP_FRACTIONS,
    AdaRoundSettings,
    mse_steps,
    post_training_rounding,
    ptq_scheme,
    set_mse_step,
)
from toolkit.rewrite import quantized_layers


def test_mse_steps_minimise_the_rounding_error_over_the_candidates():
    rng = np.random.default_rng(0)
    kernel = rng.standard_t(3, size=(3, 3, 4, 5)).astype(np.float32)   # heavy tails: clipping pays off
    steps = mse_steps(kernel, (0, 1, 2), qmax=3)
    assert steps.shape == (1, 1, 1, 5)

    def error(step):
        return np.sum((kernel - step * np.clip(np.round(kernel / step), -3, 3)) ** 2, axis=(0, 1, 2))

    max_abs = np.max(np.abs(kernel), axis=(0, 1, 2), keepdims=True) / 3
    best = error(steps)
    for fraction in STEP_FRACTIONS:
        assert np.all(best <= error(fraction * max_abs) * (1 + 1e-6))
    assert np.any(best < error(max_abs))   # max-abs scaling is not the optimum here


def _quantized(bits=3):
    keras.utils.set_random_seed(seeded(0))
    model = small_model("conv1d")
    randomize_batch_norms(model)
    x = np.random.default_rng(1).normal(size=(96, 16, 2)).astype(np.float32)
    return model, quantize(model, ptq_scheme(QuantScheme(weight_bits=bits)), calibration_data=x), x


def test_nearest_puts_every_kernel_on_its_grid_at_the_nearest_integers():
    model, quantized, x = _quantized()
    before = {layer.name: layer.float_kernel.numpy().copy() for layer in quantized_layers(quantized)}
    records = post_training_rounding(model, quantized, x, "nearest")
    assert [r["layer"] for r in records] == [layer.name for layer in quantized_layers(quantized)]
    for layer in quantized_layers(quantized):
        step = np.asarray(layer.weight_quantizer.scale(layer.float_kernel))
        integers = layer.weight_quantizer.integers(layer.float_kernel).numpy()
        np.testing.assert_allclose(layer.float_kernel.numpy(), step * integers, rtol=1e-6)   # on the grid
        np.testing.assert_array_equal(integers, np.clip(np.round(before[layer.name] / step), -3, 3))
    assert all(r["changed_from_nearest"] == 0 and r["error"] == r["error_nearest"] for r in records)


def test_adaround_lowers_the_layers_output_error_below_nearest():
    model, quantized, x = _quantized(bits=3)
    settings = AdaRoundSettings(iterations=1500, learning_rate=1e-2)
    records = post_training_rounding(model, quantized, x, "adaround", settings, seed=seeded(0))
    assert sum(r["error"] for r in records) < sum(r["error_nearest"] for r in records)
    assert all(r["error"] <= 1.05 * r["error_nearest"] for r in records), records
    assert any(r["changed_from_nearest"] > 0 for r in records)
    assert all(r["changed_from_nearest"] < 0.5 for r in records)
    assert [it for it, _ in records[0]["losses"]] == [1000, 1500]
    for layer in quantized_layers(quantized):   # the learned integers are the stored ones
        step = np.asarray(layer.weight_quantizer.scale(layer.float_kernel))
        integers = layer.weight_quantizer.integers(layer.float_kernel).numpy()
        np.testing.assert_allclose(layer.float_kernel.numpy(), step * integers, rtol=1e-6)
        assert np.max(np.abs(integers)) <= 3


def test_adaround_does_not_depend_on_how_many_steps_one_compiled_call_runs(monkeypatch):
    """The steps run in compiled chunks; each step's batch, beta and lambda are fixed up front."""
    kernels = []
    for steps_per_call in (1000, 7):
        monkeypatch.setattr(ptq, "_STEPS_PER_CALL", steps_per_call)
        model, quantized, x = _quantized(bits=3)
        post_training_rounding(model, quantized, x, "adaround", AdaRoundSettings(iterations=60, learning_rate=1e-2))
        kernels.append([layer.float_kernel.numpy() for layer in quantized_layers(quantized)])
    for one, other in zip(*kernels, strict=True):
        np.testing.assert_array_equal(one, other)


def test_a_learned_qat_step_starts_at_the_mse_step_not_lsqs():
    from toolkit.quantizers import lsq_step

    keras.utils.set_random_seed(seeded(0))
    model = small_model("conv1d")
    randomize_batch_norms(model)
    quantized = quantize(model, QuantScheme(weight_bits=2, learned_step=True))
    for layer in quantized_layers(quantized):
        quantizer = layer.weight_quantizer
        expected = mse_steps(layer.float_kernel.numpy(), quantizer.reduce_axes, quantizer.qmax)
        np.testing.assert_array_equal(quantizer.step_variable.numpy(), expected)
        assert not np.allclose(lsq_step(layer.float_kernel, quantizer.reduce_axes, quantizer.qmax).numpy(), expected)
        step = set_mse_step(layer)   # PTQ's step: the same
        np.testing.assert_array_equal(quantizer.step_variable.numpy(), expected)
        np.testing.assert_allclose(step, expected, rtol=1e-6)


def test_rounding_needs_a_stored_step_and_a_known_method():
    keras.utils.set_random_seed(seeded(0))
    model = small_model("conv1d")
    x = np.zeros((4, 16, 2), np.float32)
    with pytest.raises(ConfigError, match="stored step"):
        post_training_rounding(model, quantize(model, QuantScheme(weight_bits=4)), x, "nearest")
    with pytest.raises(ConfigError, match="rounding"):
        post_training_rounding(model, quantize(model, ptq_scheme(QuantScheme())), x, "up")


def test_ptq_scheme_stores_steps_everywhere_and_keeps_the_bit_widths():
    scheme = ptq_scheme(QuantScheme(weight_bits=3, rounding="soft", overrides={"conv": {"weight_bits": 8, "rounding": "sigmoid"}}))
    assert scheme.learned_step and scheme.rounding == "ste" and scheme.weight_bits == 3
    assert scheme.for_layer("conv").weight_bits == 8 and scheme.for_layer("conv").learned_step
    assert scheme.for_layer("conv").rounding == "ste"
