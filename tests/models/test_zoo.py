"""The model zoo: each MLPerf Tiny reference (and MobileNetV2-0.35) as its reference defines it,
its synthetic data, and its path through quantize -> harden -> convert with every trained
integer stored and no requantization the trained graph lacks."""

import re

import keras
import numpy as np
import pytest

from bench.architectures import with_trained_looking_batch_norms
from export.device.check import quantize_input
from export.device.reference import Graph, probed_families
from export.exactness import compare_families
from export.harden import harden
from export.tflite import convert, weight_mismatches
from export.validate import ONE_STEP, per_layer_drift
from models import datasets, registry
from tests.seeds import seeded
from toolkit import QuantScheme, quantize
from toolkit.errors import ConfigError
from toolkit.ptq import AdaRoundSettings, post_training_rounding, ptq_scheme
from toolkit.qat_layers import QuantAveragePooling
from toolkit.rewrite import quantized_layers

L = keras.layers
MLPERF = ("ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder", "mobilenet_v2_035")


def _count(model, kind, **config):
    return sum(isinstance(layer, kind) and all(layer.get_config().get(k) == v for k, v in config.items())
               for layer in model.layers)


def test_every_zoo_model_builds_at_its_registered_shape_and_says_its_data():
    for name in registry.names():
        entry = registry.entry(name)
        model = registry.build(name)
        assert tuple(model.inputs[0].shape[1:]) == entry.input_shape
        expected = entry.input_shape if entry.task == "anomaly" else (entry.num_classes,)
        assert tuple(model.outputs[0].shape[1:]) == expected
        assert entry.real_data, f"{name} does not say which data set it expects"


def test_ds_cnn_is_the_mlperf_tiny_reference():
    model = registry.build("ds_cnn")
    first = model.get_layer("conv0").get_config()
    assert (first["filters"], tuple(first["kernel_size"]), tuple(first["strides"])) == (64, (10, 4), (2, 2))
    assert _count(model, L.DepthwiseConv2D) == 4 and _count(model, L.Conv2D, kernel_size=(1, 1), filters=64) == 4
    assert [layer.rate for layer in model.layers if isinstance(layer, L.Dropout)] == [0.2, 0.4]
    assert tuple(model.get_layer("pool").pool_size) == (24, 5)  # (49 // 2, 10 // 2) on the 25x5 map, as the reference
    assert model.get_layer("depthwise1").depthwise_regularizer is not None
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 23_756  # the reference model card's count


def test_resnet8_and_mobilenet_v1_and_the_autoencoder_are_the_references():
    resnet = registry.build("resnet8")
    assert _count(resnet, L.Add) == 3 and _count(resnet, L.Conv2D) == 9  # 7 3x3 + 2 strided 1x1 shortcuts
    assert [layer.filters for layer in resnet.layers if isinstance(layer, L.Conv2D) and layer.name.endswith("_b")] == [16, 32, 64]
    mobilenet = registry.build("mobilenet_v1_025")
    depthwise = [layer for layer in mobilenet.layers if isinstance(layer, L.DepthwiseConv2D)]
    assert len(depthwise) == 13 and [i for i, layer in enumerate(depthwise, 1) if layer.strides == (2, 2)] == [2, 4, 6, 12]
    assert mobilenet.get_layer("pointwise13").filters == 256 and tuple(mobilenet.get_layer("pool").pool_size) == (3, 3)
    autoencoder = registry.build("fc_autoencoder")
    assert [layer.units for layer in autoencoder.layers if isinstance(layer, L.Dense)] == [128] * 4 + [8] + [128] * 4 + [640]
    assert _count(autoencoder, L.BatchNormalization) == 9


@pytest.mark.parametrize("name", ["ds_cnn", "resnet8", "fc_autoencoder"])
def test_synthetic_data_has_the_models_shape_and_task_and_is_fixed(name):
    entry = registry.entry(name)
    data = datasets.load("synthetic", model=name)
    again = datasets.load(f"synthetic:{name}")
    assert data.input_shape == entry.input_shape and data.task == entry.task
    assert data.x_train.dtype == np.float32 and np.all(np.isfinite(data.x_train))
    assert np.array_equal(data.x_train, again.x_train) and np.array_equal(data.y_test, again.y_test)
    if entry.task == "classification":
        assert set(np.unique(data.y_train)) == set(range(entry.num_classes))
    else:
        assert not np.any(data.y_train) and set(np.unique(data.y_test)) == {0, 1}


def test_synthetic_images_are_in_the_unit_range():
    data = datasets.load("synthetic", model="resnet8")
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1 and 0.3 < data.x_train.mean() < 0.7


def test_synthetic_needs_a_zoo_model():
    with pytest.raises(ConfigError, match="synthetic:MODEL"):
        datasets.load("synthetic")
    with pytest.raises(ConfigError, match="synthetic:MODEL"):
        datasets.load("synthetic", model="mine.keras")


def test_synthetic_classes_are_learnable_from_their_templates():
    """A nearest-class-mean classifier, no training, is far above chance (1/12)."""
    data = datasets.load("synthetic", model="ds_cnn")
    means = np.stack([data.x_train[data.y_train == c].mean(0).ravel() for c in range(12)])
    predicted = np.argmin(((data.x_test.reshape(len(data.x_test), 1, -1) - means) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == data.y_test) > 0.5


@pytest.mark.parametrize("name", MLPERF)
def test_zoo_model_converts_with_its_trained_integers_and_the_trained_graph(name):
    """Untrained with non-trivial BatchNorm statistics, W4: every kernel stored exactly, no QUANTIZE
    between int8 ops (average pooling keeps its input's grid), LiteRT == the integer reference."""
    keras.utils.set_random_seed(seeded(0))
    model = with_trained_looking_batch_norms(registry.build(name))
    x = np.random.default_rng(0).normal(size=(48, *model.inputs[0].shape[1:])).astype(np.float32)
    quantized = quantize(model, QuantScheme(weight_bits=4), calibration_data=x)
    hard = harden(quantized)
    tflite_bytes = convert(hard, "int8")
    assert weight_mismatches(hard, tflite_bytes) == []
    graph = Graph(tflite_bytes)
    assert "QUANTIZE" not in {op.name for op in graph.ops} and "DEQUANTIZE" not in {op.name for op in graph.ops}
    inputs = quantize_input(x[:16], {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    comparisons, values = compare_families(tflite_bytes, inputs, graph=graph)
    for family in probed_families():
        assert comparisons[family]["mismatched_elements"] == 0, (family, comparisons[family].get("first_mismatch"))
    # Every layer's own error (from the device's inputs) is within one step, however deep the
    # model and however much error it inherits.
    rows = per_layer_drift(hard, tflite_bytes, x[:16], "reference", values=values["reference"], graph=graph)
    local = [row["local_max_error_steps"] for row in rows if row["local_max_error_steps"] is not None]
    assert len(local) >= 0.9 * len(rows) and max(local) <= ONE_STEP


@pytest.mark.slow
@pytest.mark.parametrize("name", MLPERF)
def test_zoo_model_after_post_training_rounding_stores_the_learned_integers(name):
    """PTQ with mixed widths, as `softedge plan` writes them (the first kernel at 8 bits, the
    last at 2, the rest at 4; AdaRound, a few iterations: exactness does not depend on how well
    it learned), int8 and int4-packed: every kernel's chosen integers are the .tflite's, through
    depthwise and separable convolutions, residual adds, average pooling and ReLU6."""
    keras.utils.set_random_seed(seeded(0))
    model = with_trained_looking_batch_norms(registry.build(name))
    x = np.random.default_rng(0).normal(size=(64, *model.inputs[0].shape[1:])).astype(np.float32)
    names = [layer.name for layer in quantized_layers(quantize(model, ptq_scheme(QuantScheme()), calibration_data=x))]
    overrides = {re.escape(names[0]): {"weight_bits": 8}, re.escape(names[-1]): {"weight_bits": 2}}
    quantized = quantize(model, ptq_scheme(QuantScheme(weight_bits=4, overrides=overrides)), calibration_data=x)
    records = post_training_rounding(model, quantized, x, "adaround", AdaRoundSettings(iterations=20, batch_size=16))
    assert [record["bits"] for record in records] == [8] + [4] * (len(names) - 2) + [2]
    hard = harden(quantized)
    for target in ("int8", "int4-weights"):
        assert weight_mismatches(hard, convert(hard, target)) == [], target


def test_a_dropout_before_average_pooling_moves_into_it_after_the_quantizer():
    """DS-CNN's Dropout(0.4) -> AveragePooling2D: the pooling still keeps the ReLU's grid, and the
    range the quantizer learns is the inference-time one (dropout's 1/(1-rate) scaling is after it)."""
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = L.AveragePooling2D(6, name="pool")(L.Dropout(0.4, name="drop")(x))
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.Flatten()(x)))
    data = np.random.default_rng(0).uniform(0, 1, size=(256, 8, 8, 1)).astype(np.float32)
    quantized = quantize(model, QuantScheme(weight_bits=8), calibration_data=data)
    pooling = quantized.get_layer("pool")
    assert isinstance(pooling, QuantAveragePooling) and [c["config"]["name"] for c in pooling.between_configs] == ["drop"]
    assert "drop" not in [layer.name for layer in quantized.layers]
    conv_max = float(np.max(keras.Model(model.inputs, model.get_layer("conv").output)(data)))
    assert float(pooling.quantizer.min_max()[1]) <= conv_max * 1.01  # not the 1/(1 - 0.4) = 1.67x of dropout
    reloaded = keras.models.Model.from_config(quantized.get_config())
    assert reloaded.get_layer("pool").between_configs == pooling.between_configs
    hard = harden(quantized)
    assert "drop" not in [layer.name for layer in hard.layers]
    names = [op.name for op in Graph(convert(hard, "int8")).ops]
    assert "AVERAGE_POOL_2D" in names and "QUANTIZE" not in names
