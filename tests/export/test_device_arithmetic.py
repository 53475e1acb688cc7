"""Training on the device's arithmetic (`toolkit.device_arithmetic`): a QAT model whose kernel
layers compute as XNNPACK computes gives the device's integers, element for element."""

import keras
import numpy as np
import pytest

from export.exact import ExactModel
from export.harden import harden
from export.tflite import convert
from tests.seeds import seeded
from toolkit import QuantScheme, quantize
from toolkit.device_arithmetic import set_device_arithmetic
from toolkit.errors import ConfigError
from toolkit.qat_layers import QUANT_KERNEL_LAYERS
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import set_alpha

L = keras.layers


def _model(seed: int) -> keras.Model:
    """conv (SAME) -> ReLU -> depthwise -> ReLU6 -> 1x1 conv -> ReLU -> Dense: every kernel layer
    reads an int8 tensor and feeds one through fused activations."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10, 10, 3))
    x = L.ReLU()(L.Conv2D(16, 3, padding="same")(inputs))
    x = L.ReLU(6.0)(L.DepthwiseConv2D(3)(x))
    x = L.ReLU()(L.Conv2D(24, 1)(x))
    return keras.Model(inputs, L.Dense(12)(L.Flatten()(x)))


def _on_input_grid(exact: ExactModel, x: np.ndarray):
    """(int8 inputs, the float inputs on their grid): the input QUANTIZE then has nothing to round."""
    scale, zero_point = exact.graph.tensors[exact.graph.inputs[0]].grid()
    q = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    return q, ((q.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_model_on_device_arithmetic_computes_the_devices_integers(bits):
    rng = np.random.default_rng(seeded(bits))
    x = rng.normal(size=(512, 10, 10, 3)).astype(np.float32)
    quantized = quantize(_model(seeded(bits)), QuantScheme(weight_bits=bits), calibration_data=x)
    for layer in quantized.layers:   # biases the int32 grid moves (calibration leaves them 0)
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(scale=0.3, size=layer.bias.shape).astype(np.float32))
    set_alpha(quantized, HARD_ALPHA)
    assert set_device_arithmetic(quantized, "xnnpack") == 4
    exact = ExactModel(convert(harden(quantized), "int8"))   # == LiteRT's XNNPACK (test_exact_model)
    device_inputs, inputs = _on_input_grid(exact, x)
    output = exact.graph.outputs[0]
    scale, zero_point = exact.graph.tensors[output].grid()
    device = exact.run(device_inputs)[output].astype(np.int64)
    ours = np.round(quantized.predict(inputs, verbose=0) / np.float32(scale)).astype(np.int64) + zero_point
    np.testing.assert_array_equal(ours, device)


def test_device_arithmetic_is_kept_in_the_config_and_checked(tmp_path):
    quantized = quantize(_model(0), QuantScheme(weight_bits=4), calibration_data=np.zeros((4, 10, 10, 3), np.float32))
    set_device_arithmetic(quantized, "xnnpack")
    quantized.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    kernels = [layer for layer in loaded.layers if isinstance(layer, QUANT_KERNEL_LAYERS)]
    assert len(kernels) == 4 and {layer.device_arithmetic for layer in kernels} == {"xnnpack"}
    with pytest.raises(ConfigError, match="'ruy'.*xnnpack"):
        set_device_arithmetic(quantized, "ruy")
