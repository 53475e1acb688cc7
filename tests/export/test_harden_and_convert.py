import keras
import numpy as np
import pytest
import tensorflow as tf

from export import hard_layers
from export.device.reference import Graph
from export.harden import harden
from export.tflite import convert, weight_mismatches, weight_tensors
from export.validate import pair_layers
from tests.export.conftest import calibrated
from tests.seeds import seeded
from toolkit import QuantScheme, quantize
from toolkit.errors import ConfigError
from toolkit.qat_layers import QuantizeActivation
from toolkit.quantizers import exported_range, nudged_grid
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import set_alpha


@pytest.mark.parametrize("kind", ["conv1d", "conv2d"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_hard_model_is_the_quantized_model_at_infinite_alpha(kind, bits):
    quantized, x = calibrated(kind, bits)
    _with_random_biases(quantized, bits)
    set_alpha(quantized, HARD_ALPHA)
    expected = quantized.predict(x, verbose=0)
    hard = harden(quantized)   # biases baked on the int32 grid, where the quantized model trains them
    step = hard.layers[-1].grid()[0]
    # Same grids, same integers, same biases: equal but for rare one-step flips where float
    # reordering (Keras conv vs tf.nn.conv2d) lands a value on the other side of a rounding boundary.
    steps_off = np.abs(hard.predict(x, verbose=0) - expected) / step
    assert steps_off.max() <= 1.0 + 1e-4 and np.mean(steps_off > 1e-3) < 0.01
    # The float biases (TFLite rounds them itself) move outputs by a step or two, no more.
    unbaked = harden(quantized, bake_bias=False)
    assert np.max(np.abs(unbaked.predict(x, verbose=0) - expected)) / step <= 2.0 + 1e-4
    assert not hard.trainable_weights
    paths = [v.path for v in hard.variables]
    assert not any(p.endswith(("rounding_alpha", "range_min", "range_initialized", "kernel_step")) for p in paths)


def _input_steps(model) -> dict[str, float]:
    """Kernel layer name -> the step of the int8 tensor it reads (its `input_activation`)."""
    from toolkit.qat_layers import QUANT_KERNEL_LAYERS

    return {layer.name: float(layer.input_activation().quantizer.grid().scale) for layer in model.layers
            if isinstance(layer, QUANT_KERNEL_LAYERS) and layer.input_activation() is not None}


def _with_random_biases(model, seed: int):
    """The calibrated model's biases are 0 (on every grid): give them values the grid moves."""
    rng = np.random.default_rng(seeded(seed))
    for name in _input_steps(model):
        bias = model.get_layer(name).bias
        bias.assign(rng.normal(size=bias.shape).astype(np.float32))
    return model


def test_the_quantized_model_trains_its_biases_on_the_int32_grid_with_a_straight_through_gradient():
    from toolkit.quantizers import bias_on_accumulator_grid

    quantized = _with_random_biases(calibrated("conv1d", 3)[0], 4)
    assert set(_input_steps(quantized)) == {"conv", "skip", "logits"}
    for name, input_step in _input_steps(quantized).items():
        layer = quantized.get_layer(name)
        kernel_steps = np.asarray(layer.weight_quantizer.scale(layer.float_kernel), np.float64).reshape(-1)
        expected = bias_on_accumulator_grid(layer.bias.numpy(), input_step, kernel_steps)
        np.testing.assert_allclose(layer.grid_bias().numpy(), expected, rtol=1e-5, atol=1e-7 * np.abs(expected).max())
        assert not np.allclose(layer.grid_bias().numpy(), layer.bias.numpy())   # the grid moves them
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(layer.grid_bias() * np.arange(layer.bias.shape[0]))
        np.testing.assert_array_equal(tape.gradient(total, layer.bias).numpy(), np.arange(layer.bias.shape[0]))
    # A layer called outside its model has no int8 input to read: its float bias.
    alone = quantized.get_layer("logits").__class__.from_config(quantized.get_layer("logits").get_config())
    alone.build(quantized.get_layer("logits").input.shape)
    assert alone.input_activation() is None


def test_a_loaded_quantized_model_keeps_its_biases_on_the_grid(tmp_path):
    quantized, x = calibrated("conv1d", 3)
    quantized = _with_random_biases(quantized, 5)
    path = tmp_path / "quantized.keras"
    quantized.save(path)
    loaded = keras.saving.load_model(path)
    assert _input_steps(loaded) == _input_steps(quantized) and set(_input_steps(loaded)) == {"conv", "skip", "logits"}
    for name in _input_steps(loaded):
        np.testing.assert_array_equal(loaded.get_layer(name).grid_bias(), quantized.get_layer(name).grid_bias())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), quantized.predict(x, verbose=0))


@pytest.mark.parametrize("name", ["ds_cnn", "resnet8", "mobilenet_v2_035"])
def test_every_kernel_layer_of_a_zoo_model_finds_the_int8_tensor_it_reads(name):
    # Depthwise-separable blocks, residual Adds, ReLU6 and pooling between the quantizers.
    from models import datasets, registry
    from toolkit import QuantScheme, quantize
    from toolkit.qat_layers import QUANT_KERNEL_LAYERS

    data = datasets.load("synthetic", model=name)
    keras.utils.set_random_seed(seeded(6))
    quantized = quantize(registry.build(name, data.input_shape, data.num_classes), QuantScheme(weight_bits=4),
                         calibration_data=np.asarray(data.x_train[:8], np.float32))
    kernels = [layer.name for layer in quantized.layers if isinstance(layer, QUANT_KERNEL_LAYERS)]
    assert kernels and set(_input_steps(quantized)) == set(kernels)


def test_biases_are_baked_on_the_int32_grid_as_the_quantized_model_computes_them():
    quantized = _with_random_biases(calibrated("conv1d", 3)[0], 7)
    hard = harden(quantized)
    for name, input_step in _input_steps(quantized).items():
        layer = hard.get_layer(name)
        np.testing.assert_array_equal(layer.bias, quantized.get_layer(name).grid_bias())
        grid = input_step * np.asarray(layer.kernel_scale, np.float64)
        ratio = np.asarray(layer.bias, np.float64) / grid
        assert np.abs(ratio).max() > 1   # biases of several grid steps: the check below can fail
        np.testing.assert_allclose(ratio, np.round(ratio), atol=1e-3)
    unbaked = harden(quantized, bake_bias=False)
    np.testing.assert_array_equal(unbaked.get_layer("conv").bias, quantized.get_layer("conv").bias)


def test_hard_model_saves_and_loads_in_safe_mode(tmp_path):
    quantized, x = calibrated("conv2d", 4)
    hard = harden(quantized)
    path = tmp_path / "hard.keras"
    hard.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), hard.predict(x, verbose=0))


@pytest.mark.parametrize("kind", ["conv1d", "conv2d"])
@pytest.mark.parametrize("bits", range(2, 9))
def test_int8_export_stores_exactly_the_trained_integers(kind, bits):
    quantized, _ = calibrated(kind, bits)
    hard = harden(quantized)
    tflite_bytes = convert(hard, "int8")
    assert weight_mismatches(hard, tflite_bytes) == []
    qmax = 2 ** (bits - 1) - 1
    stored = weight_tensors(tflite_bytes)
    assert len(stored) == 3
    for tensor in stored:
        assert tensor["dtype"] == "int8"
        assert tensor["ints"].min() >= -qmax and tensor["ints"].max() <= qmax
        assert tensor["ints"].min() == -qmax or tensor["ints"].max() == qmax


def test_int8_export_stores_exactly_the_trained_activation_steps():
    """Every activation grid the model trained on is the one the .tflite stores (scale bit for
    bit, zero point): 40 random ranges, half of them drawn among those whose plain `min_max()`
    range the converter turns into a step an ulp off (`exported_range` is what makes them exact)."""
    rng = np.random.default_rng(seeded(0))

    def draw(off_by_min_max: bool) -> tuple[float, float]:
        while True:
            low = -float(np.exp(rng.uniform(-6, 3))) if rng.random() < 0.8 else 0.0
            high = float(np.exp(rng.uniform(-6, 3)))
            grid = nudged_grid(tf.constant(low), tf.constant(high), 8)
            bounds = [np.float64(np.float32(bound)) for bound in grid.min_max()]
            if (np.float32((bounds[1] - bounds[0]) / 255) != np.float32(grid.scale)) == off_by_min_max:
                return low, high

    inputs = keras.Input((6,))
    outputs = [keras.layers.Dense(3, name=f"branch_{i}")(inputs) for i in range(40)]
    quantized = quantize(keras.Model(inputs, outputs), QuantScheme(weight_bits=8),
                         calibration_data=rng.normal(size=(16, 6)).astype(np.float32))
    quantizers = [layer for layer in quantized.layers if isinstance(layer, QuantizeActivation)]
    for i, layer in enumerate(quantizers):
        low, high = draw(off_by_min_max=i % 2 == 0)
        layer.quantizer.range_min.assign(low)
        layer.quantizer.range_max.assign(high)
    hard = harden(quantized)
    graph = Graph(convert(hard, "int8"))
    pairs = pair_layers(hard, graph)
    for layer in quantizers:
        grid = layer.quantizer.grid()
        scale, zero_point = graph.tensors[pairs[layer.name]].grid()
        assert (np.float32(scale), zero_point) == (np.float32(grid.scale), int(grid.zero_point)), layer.name


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_int4_weights_are_packed_and_still_exact(bits):
    quantized, _ = calibrated("conv2d", bits)
    int8_bytes = convert(harden(quantized), "int8")
    int4_bytes = convert(harden(quantized), "int4-weights")
    assert {t["dtype"] for t in weight_tensors(int4_bytes)} == {"int4"}
    assert weight_mismatches(harden(quantized), int4_bytes) == []
    assert len(int4_bytes) < len(int8_bytes)


def test_the_exactness_check_catches_a_regrid(monkeypatch):
    # tfmot's way: a 3-bit fake-quant with +-3s, which the converter stores on ints -7..7.
    quantized, _ = calibrated("conv2d", 3)
    hard = harden(quantized)

    def regridded(self):
        scale = tf.reshape(tf.convert_to_tensor(self.kernel_scale), [-1])
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            self.kernel, -3 * scale, 3 * scale, num_bits=3, narrow_range=True)

    monkeypatch.setattr(hard_layers.HardConv2D, "stored_kernel", regridded)
    problems = weight_mismatches(hard, convert(hard, "int8"))
    assert len(problems) == 1 and "'conv'" in problems[0]


@pytest.mark.parametrize("target", ["dynamic", "float16", "float32"])
def test_other_targets_convert_and_run(target):
    from export.device.check import load_interpreter, predict

    quantized, x = calibrated("conv2d", 8)
    hard = harden(quantized)
    outputs = predict(load_interpreter(convert(hard, target), "builtin"), x)
    reference = hard.predict(x, verbose=0)
    assert np.mean(np.argmax(outputs, -1) == np.argmax(reference, -1)) > 0.9


def test_float_model_needs_representative_data_for_int8():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="plain")
    with pytest.raises(ConfigError, match="representative data"):
        convert(model, "int8")
    tflite_bytes = convert(model, "int8", representative_data=np.random.default_rng(0).normal(size=(50, 4)))
    assert weight_tensors(tflite_bytes)[0]["dtype"] == "int8"
    with pytest.raises(ConfigError, match="Unknown target 'int2'"):
        convert(model, "int2")
    with pytest.raises(ConfigError, match="no softedge quantized layer"):
        harden(model)


def test_float_io_keeps_exact_weights_and_float_tensors_at_the_edges():
    quantized, _ = calibrated("conv2d", 3)
    hard = harden(quantized)
    tflite_bytes = convert(hard, "int8", io="float")
    from export.device.check import load_interpreter

    interpreter = load_interpreter(tflite_bytes, "builtin")
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert weight_mismatches(hard, tflite_bytes) == []


def test_saved_model_converts_to_every_float_target_and_int8_with_ptq(tmp_path):
    from export.convert_any import convert_path
    from export.device.check import load_interpreter, predict

    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.export(tmp_path / "saved", verbose=False)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    float16_bytes, kind = convert_path(tmp_path / "saved", "float16")
    assert kind == "savedmodel"
    float16 = load_interpreter(float16_bytes, "builtin")
    assert any(d["dtype"] == np.float16 for d in float16.get_tensor_details())  # stored in float16
    np.testing.assert_allclose(predict(float16, x), model.predict(x, verbose=0), atol=1e-2)
    from export.tflite import convert_saved_model

    with pytest.raises(ConfigError, match="representative data"):
        convert_saved_model(tmp_path / "saved", "int8")
    int8_bytes = convert_saved_model(tmp_path / "saved", "int8", representative_data=x)
    assert {t["dtype"] for t in weight_tensors(int8_bytes)} == {"int8"}


def test_harden_refuses_a_non_finite_activation_range_naming_the_layer():
    """A diverged run's NaN range: one line naming the layer and weight, before any layer is built
    (not numpy's "cannot convert float NaN to integer" from deep inside the export)."""
    quantized, _ = calibrated("conv2d", 4)
    layer = next(layer for layer in quantized.layers if isinstance(layer, QuantizeActivation))
    layer.quantizer.range_max.assign(np.nan)
    with pytest.raises(ConfigError, match=f"layer '{layer.name}' weight .*range_max.*non-finite") as raised:
        harden(quantized)
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="non-finite activation grid"):
        exported_range(layer.quantizer.grid())
