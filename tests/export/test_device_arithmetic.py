"""Training on the device's arithmetic (`toolkit.device_arithmetic`): a QAT model whose kernel
layers, Add and input quantizer compute as XNNPACK and the host compute gives the device's
integers, element for element."""

import keras
import numpy as np
import pytest

from export.device.check import quantize_input
from export.exact import ExactModel
from export.harden import harden
from export.tflite import convert
from tests.seeds import seeded
from toolkit import QuantScheme, quantize
from toolkit.device_arithmetic import set_device_arithmetic
from toolkit.errors import ConfigError
from toolkit.qat_layers import QUANT_KERNEL_LAYERS, QuantAdd, QuantizeActivation
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import set_alpha

L = keras.layers


def _model(seed: int) -> keras.Model:
    """conv (SAME) -> ReLU -> depthwise (SAME) -> ReLU6 -> 1x1 conv -> Add (the first conv's
    output) -> ReLU -> Dense: every kernel layer reads an int8 tensor and feeds one through fused
    activations, and the Add sums two int8 tensors."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10, 10, 3))
    first = L.ReLU()(L.Conv2D(16, 3, padding="same")(inputs))
    x = L.ReLU(6.0)(L.DepthwiseConv2D(3, padding="same")(first))
    x = L.ReLU()(L.Add()([first, L.Conv2D(16, 1)(x)]))
    return keras.Model(inputs, L.Dense(12)(L.Flatten()(x)))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_model_on_device_arithmetic_computes_the_devices_integers(bits):
    """Every output integer of the QAT model (hard rounding, XNNPACK's arithmetic) equals the
    device's (the exact simulation of XNNPACK, == LiteRT: test_exact_model) on inputs off the
    input grid, which the host quantizes as `quantize_input` does. (That the float simulation
    misses some of them is shown per rule, where it is exact arithmetic and so holds on every
    machine: tests/toolkit/test_device_arithmetic.py.)"""
    rng = np.random.default_rng(seeded(bits))
    x = rng.normal(size=(512, 10, 10, 3)).astype(np.float32)
    quantized = quantize(_model(seeded(bits)), QuantScheme(weight_bits=bits), calibration_data=x)
    for layer in quantized.layers:   # biases the int32 grid moves (calibration leaves them 0)
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(scale=0.3, size=layer.bias.shape).astype(np.float32))
    set_alpha(quantized, HARD_ALPHA)
    assert set_device_arithmetic(quantized, "xnnpack") == 6   # 4 kernel layers, the Add, the input quantizer
    exact = ExactModel(convert(harden(quantized), "int8"))
    graph = exact.graph
    device_inputs = quantize_input(x, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    scale, zero_point = graph.tensors[graph.outputs[0]].grid()
    device = exact.outputs(device_inputs)[0].astype(np.int64)
    ours = np.round(quantized.predict(x, verbose=0) / np.float32(scale)).astype(np.int64) + zero_point
    np.testing.assert_array_equal(ours, device)


def test_device_arithmetic_is_kept_in_the_config_and_checked(tmp_path):
    quantized = quantize(_model(0), QuantScheme(weight_bits=4), calibration_data=np.zeros((4, 10, 10, 3), np.float32))
    set_device_arithmetic(quantized, "xnnpack")
    quantized.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    followers = [layer for layer in loaded.layers if isinstance(layer, (*QUANT_KERNEL_LAYERS, QuantAdd))]
    assert len(followers) == 5 and {layer.device_arithmetic for layer in followers} == {"xnnpack"}
    assert {layer.device_arithmetic for layer in loaded.layers if isinstance(layer, QuantizeActivation)} == {"xnnpack"}
    assert [type(layer) for layer in harden(loaded).layers if isinstance(layer, L.Add)] == [L.Add]
    with pytest.raises(ConfigError, match="'ruy'.*xnnpack"):
        set_device_arithmetic(quantized, "ruy")
