"""Per-layer rows pair a Keras layer with the TFLite tensor it became (never by scale), and
validation of regression outputs."""

import keras
import numpy as np
import pytest

from export.device.families import KernelFamily
from export.device.reference import Graph
from export.hard_layers import FakeQuant
from export.hard_pooling import device_rounding
from export.harden import harden
from export.tflite import convert
from export.validate import (
    check,
    exact_link,
    hard_outputs,
    infer_task,
    model_outputs,
    pair_layers,
    validate,
)
from tests.seeds import seeded
from toolkit import QuantScheme, quantize
from toolkit.errors import ConfigError

L = keras.layers


def _hard(model, x, **scheme):
    return harden(quantize(model, QuantScheme(**scheme), calibration_data=x))


def test_saturated_relu6_layers_with_the_identical_scale_pair_with_their_own_tensors():
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((6,), name="x")
    a = L.ReLU(6.0, name="relu6_a")(L.Dense(16, name="dense_a")(inputs))
    b = L.ReLU(6.0, name="relu6_b")(L.Dense(16, name="dense_b")(a))
    model = keras.Model(inputs, L.Dense(3, name="out")(b))
    x = 50.0 * np.random.default_rng(0).normal(size=(256, 6)).astype(np.float32)  # both ReLU6 saturate
    hard = _hard(model, x)
    grids = {layer.name: layer.grid() for layer in hard.layers if isinstance(layer, FakeQuant)}
    a_quant, b_quant = (name for name in grids if name.startswith("relu6"))
    assert grids[a_quant] == grids[b_quant]  # the identical scale 6/255: a scale match cannot tell them apart
    graph = Graph(convert(hard, "int8"))
    pairs = pair_layers(hard, graph)
    assert "relu6_a_1/" in graph.tensors[pairs[a_quant]].name and "relu6_b" not in graph.tensors[pairs[a_quant]].name
    assert "relu6_b_1/" in graph.tensors[pairs[b_quant]].name
    assert len(set(pairs.values())) == len(pairs)
    report = validate(hard, convert(hard, "int8"), x[:64], np.zeros(64, np.int64))
    assert report["unmatched_layers"] == []
    assert all(row["max_error_steps"] <= 1.01 for row in report["layers"])  # each row compares its own tensor


def test_an_autoencoder_is_validated_as_regression_with_one_tensor_per_layer():
    keras.utils.set_random_seed(seeded(1))
    inputs = keras.Input((32,), name="signal")
    x = inputs
    for i, width in enumerate([16, 8, 16]):
        x = L.Dense(width, activation="relu", name=f"fc{i}")(x)
    model = keras.Model(inputs, L.Dense(32, name="reconstruction")(x))
    x = np.random.default_rng(1).normal(size=(200, 32)).astype(np.float32)
    hard = _hard(model, x, weight_bits=8)
    tflite_bytes = convert(hard, "int8")
    report = validate(hard, tflite_bytes, x, x)  # float targets: regression
    assert report["task"] == "regression" and "accuracy" not in report and "agreement" not in report
    assert set(report["error"]) == {"hard", "tflite"} and report["error"]["tflite"]["mse"] >= 0
    assert report["unmatched_layers"] == []
    pairs = pair_layers(hard, Graph(tflite_bytes))
    assert len(set(pairs.values())) == len(pairs)
    assert all(row["max_error_steps"] <= 1.01 for row in report["layers"])
    assert report["reference"]["xnnpack"]["outputs_equal"] is True
    assert check(report) == []
    assert check(report, min_agreement=0.9)[0].startswith("--min-agreement 0.9 needs a classification task")


def test_one_pass_gives_the_outputs_and_every_fakequants_as_separate_passes_do():
    """`hard_outputs` (validate's one pass where the per-layer drift takes every input) equals the
    hard model's own outputs and a probe of its FakeQuants, element for element; the per-layer
    rows are the same whichever path computed them; layer_samples < 1 is refused."""
    keras.utils.set_random_seed(seeded(2))
    inputs = keras.Input((8, 8, 3), name="image")
    a = L.ReLU(6.0, name="relu6")(L.Conv2D(8, 3, padding="same", name="conv")(inputs))
    b = L.Add(name="add")([a, L.Conv2D(8, 1, name="pointwise")(a)])
    pooled = L.GlobalAveragePooling2D(name="pool")(L.AveragePooling2D(2, name="avg")(b))
    model = keras.Model(inputs, L.Dense(4, name="out")(pooled))
    x = np.random.default_rng(seeded(2)).normal(size=(48, 8, 8, 3)).astype(np.float32)
    hard = _hard(model, x, weight_bits=4)
    outputs, layers = hard_outputs(hard, x, with_layers=True)
    quant_layers = [layer for layer in hard.layers if isinstance(layer, FakeQuant)]
    probe = keras.Model(hard.inputs, [layer.output for layer in quant_layers])
    with device_rounding(hard):
        np.testing.assert_array_equal(outputs, model_outputs(hard, x))
        for own, alone in zip(layers, model_outputs(probe, x), strict=True):
            np.testing.assert_array_equal(own, alone)
    assert hard_outputs(hard, x, with_layers=False)[1] is None
    tflite_bytes, labels = convert(hard, "int8"), np.zeros(len(x), np.int64)
    one_pass = validate(hard, tflite_bytes, x, labels)                          # 48 <= 256 inputs: one pass
    two_passes = validate(hard, tflite_bytes, np.concatenate([x, x]), np.zeros(2 * len(x), np.int64), layer_samples=48)
    assert one_pass["layers"] == two_passes["layers"]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="layer_samples >= 1"):
            validate(hard, tflite_bytes, x, labels, layer_samples=bad)


def test_infer_task():
    assert infer_task(np.array([0, 1, 2])) == "classification"
    assert infer_task(np.zeros((3, 4), np.float32)) == "regression"
    assert infer_task(np.array([0, 1]), "regression") == "regression"


def test_a_model_the_reference_cannot_run_still_gets_per_layer_drift_on_litert():
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((6,), name="x")
    hidden = L.LeakyReLU(0.2, name="leaky")(L.Dense(8, name="fc0")(inputs))  # left in float: an int8 LEAKY_RELU
    model = keras.Model(inputs, L.Dense(3, name="out")(L.Dense(8, activation="relu", name="fc1")(hidden)))
    x = np.random.default_rng(0).normal(size=(128, 6)).astype(np.float32)
    hard = _hard(model, x, weight_bits=8, unsupported="float")
    report = validate(hard, convert(hard, "int8"), x, np.zeros(len(x), np.int64))
    assert "LEAKY_RELU" in report["reference_error"] and report["reference"] == {}
    assert report["runtime"]["layer_kernels"] == "builtin" and report["runtime"]["layer_source"].startswith("LiteRT")
    assert report["unmatched_layers"] == [] and len(report["layers"]) >= 3


def test_the_chain_ends_in_the_exact_simulation_equal_to_the_runtime():
    keras.utils.set_random_seed(seeded(2))
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = L.Flatten(name="flat")(L.AveragePooling2D(2, name="pool")(x))
    model = keras.Model(inputs, L.Dense(5, name="logits")(x))
    data = np.random.default_rng(2).uniform(0, 1, size=(300, 8, 8, 1)).astype(np.float32)
    quantized = quantize(model, QuantScheme(weight_bits=3), calibration_data=data)
    hard = harden(quantized)
    labels = np.random.default_rng(3).integers(0, 5, len(data))
    tflite_bytes = convert(hard, "int8")
    report = validate(hard, tflite_bytes, data, labels, smooth_model=quantized)
    exact = report["exact"]
    assert exact["family"] == report["runtime"]["family"] == "xnnpack"
    assert exact["outputs_equal_runtime"] is True and exact["mismatched_output_elements"] == 0
    # The exact simulation's outputs are the runtime's: every measure of them is the runtime's.
    assert exact["metrics"]["accuracy"] == report["accuracy"]["tflite"]
    assert exact["agreement_hard"] == report["agreement"]["hard_tflite"]
    assert exact["agreement_smooth"] == report["agreement"]["smooth_tflite"]
    assert "exact simulation -> LiteRT (xnnpack) | equal" in report.to_markdown()
    assert check(report) == []
    # A runtime one step off in one element: the link counts it, and the gate fails on it.
    from export.device.check import load_interpreter, predict, quantize_input

    interpreter = load_interpreter(tflite_bytes, "xnnpack")
    input_detail, output_detail = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    runtime = predict(interpreter, data)
    runtime[7, 2] += output_detail["quantization"][0]
    graph = Graph(tflite_bytes)
    link = exact_link(graph, quantize_input(data, input_detail), KernelFamily.XNNPACK, output_detail, runtime,
                      {"hard": runtime}, data, labels, "classification", None)
    assert link["outputs_equal_runtime"] is False and link["mismatched_output_elements"] == 1
    report.exact = link
    assert check(report) == ["LiteRT (xnnpack) differs from the exact simulation in 1 output element(s)"]


def test_model_outputs_are_predicts_for_one_or_several_outputs_and_any_size(monkeypatch):
    from export import validate as validate_module

    keras.utils.set_random_seed(seeded(3))
    inputs = keras.Input((5,))
    hidden = L.Dense(7, activation="relu")(inputs)
    model = keras.Model(inputs, [L.Dense(3)(hidden), hidden])
    x = np.random.default_rng(3).normal(size=(600, 5)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    for eager_inputs in (1024, 100):   # eagerly in batches, then through predict
        monkeypatch.setattr(validate_module, "EAGER_INPUTS", eager_inputs)
        several = validate_module.model_outputs(model, x)
        one = validate_module.model_outputs(keras.Model(inputs, model.outputs[0]), x)
        assert len(several) == 2 and one.shape == (600, 3)
        for got, want in zip([*several, one], [*expected, expected[0]], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
