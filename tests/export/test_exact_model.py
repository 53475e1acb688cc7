"""The exact simulation (`export.exact.ExactModel`): TensorFlow computing what each kernel family
computes, equal to the numpy integer reference on every tensor."""

import numpy as np
import pytest
import tensorflow as tf

from export.device.reference import FAMILIES, Graph, UnsupportedOpError
from export.device.reference import fixed_point as fp
from export.device.reference.requantize import requantize as numpy_requantize
from export.exact import ExactModel
from export.exact.fixed_point import requantize as tf_requantize
from tests.export.conftest import common_layers, post_training_int8
from tests.seeds import seeded


def _device_inputs(graph: Graph, x: np.ndarray, io: str) -> np.ndarray:
    if io == "float":
        return x
    scale, zero_point = graph.tensors[graph.inputs[0]].grid()
    return np.clip(np.floor(x / scale + 0.5) + zero_point, -128, 127).astype(np.int8)


def assert_exact(graph: Graph, inputs, family, compiled: bool = False) -> ExactModel:
    """Every tensor of `graph` equal, the exact model against the numpy reference of `family`."""
    expected = graph.run(inputs, family)
    exact = ExactModel(graph, family, compiled=compiled)
    got = exact.run(inputs)
    assert set(got) == set(expected)
    for index, value in expected.items():
        assert got[index].dtype == value.dtype and got[index].shape == value.shape, (family, graph.tensors[index].name)
        mismatched = int(np.sum(got[index] != value))
        assert mismatched == 0, f"{family}: {mismatched} element(s) of {graph.tensors[index].name!r} differ"
    for index, output in zip(graph.outputs, exact.outputs(inputs), strict=True):   # the fast path: same values
        assert output.dtype == got[index].dtype and np.array_equal(output, got[index]), graph.tensors[index].name
    return exact


# ---------------------------------------------------------------- the requantization rules

_ROUNDINGS = ("double", "upward", "high-truncated", "upward-shift-last", "float32", "float64")


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("rounding", _ROUNDINGS)
def test_each_requantization_rule_equals_the_reference_on_random_accumulators_and_ties(rounding, compiled):
    rng = np.random.default_rng(seeded(7))
    channels = 24
    real = np.exp(rng.uniform(np.log(1e-4), np.log(3.0), channels))   # left shifts (m >= 1) included
    real[:4] = [0.25, 0.5, 2.0, 1.0 / 3.0]                              # ties fall in the shifts
    acc = np.concatenate([rng.integers(-(1 << 24), 1 << 24, size=(400, channels)),
                          rng.integers(-64, 64, size=(400, channels)),
                          np.full((1, channels), -(1 << 31)), np.full((1, channels), (1 << 31) - 1)]).astype(np.int64)
    bias = rng.integers(-5000, 5000, channels)
    single = real.astype(np.float32)
    multiplier, shift = (np.array(v) for v in zip(*[fp.quantize_multiplier(m) for m in real], strict=True))
    expected = numpy_requantize((acc + bias).T, (single if rounding == "float32" else real)[:, None], rounding, -3,
                                (-100, 127), (multiplier[:, None], shift[:, None])).T
    got = tf_requantize(tf.constant(acc.astype(np.float64)), rounding, -3, (-100, 127), single=single, double=real,
                        multipliers=(multiplier, shift), bias=bias, compiled=compiled).numpy()
    np.testing.assert_array_equal(got, expected)


def test_the_rule_test_tells_the_roundings_apart():
    # The same accumulators by a neighbouring rule differ: the test above can fail.
    multiplier, shift = fp.quantize_multiplier(0.25)
    acc = np.array([[-6], [-2], [2], [6]], np.int64)
    double = tf_requantize(tf.constant(acc), "double", 0, (-128, 127), multipliers=([multiplier], [shift])).numpy()
    upward = tf_requantize(tf.constant(acc), "upward", 0, (-128, 127), multipliers=([multiplier], [shift])).numpy()
    assert double.ravel().tolist() == [-2, -1, 1, 2] and upward.ravel().tolist() == [-1, 0, 1, 2]


# ---------------------------------------------------------------- whole graphs

@pytest.mark.parametrize("io", ["int8", "float"])
def test_the_exact_model_equals_the_reference_on_every_tensor_of_the_common_layers(common_model, io):
    name, model, x = common_model
    graph = Graph(post_training_int8(model, x, io))
    inputs = _device_inputs(graph, x, io)
    for family in FAMILIES:
        assert_exact(graph, inputs, family)


@pytest.mark.parametrize("name", ["residual", "ds_cnn", "reductions", "activations"])
def test_the_compiled_exact_model_equals_the_reference(name):
    model = common_layers(name)
    x = 1.5 * np.random.default_rng(seeded(2)).normal(size=(64, *model.inputs[0].shape[1:])).astype(np.float32)
    graph = Graph(post_training_int8(model, x))
    for family in FAMILIES:
        exact = assert_exact(graph, _device_inputs(graph, x, "int8"), family, compiled=True)
        assert exact.run(_device_inputs(graph, x[:5], "int8"))[graph.outputs[0]].shape[0] == 5   # another batch size
        # The fully connected model compiles whole (XLA), the others each requantization.
        assert exact.whole_graph_compiles() == (name == "activations")


def test_heavy_ops_run_in_tensorflow_and_softmax_in_the_reference_kernel():
    import keras

    keras.utils.set_random_seed(seeded(0))
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(4, 3, activation="relu"), L.DepthwiseConv2D(3),
                              L.Flatten(), L.Dense(5), L.Softmax()])
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype(np.float32)
    graph = Graph(post_training_int8(model, x))
    exact = assert_exact(graph, _device_inputs(graph, x, "int8"), "xnnpack")
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE"} <= set(exact.in_tensorflow)
    assert exact.in_numpy == ["SOFTMAX"]


def test_an_op_the_reference_lacks_is_named_by_the_exact_model_too():
    import keras

    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.LeakyReLU(0.2)])
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    graph = Graph(post_training_int8(model, x))
    with pytest.raises(UnsupportedOpError, match=r"op 1 LEAKY_RELU \(output tensor '.+'\) is not executed"):
        ExactModel(graph, "builtin").run(np.zeros((2, 6), np.int8))
    with pytest.raises(ValueError, match="Unknown kernel family 'gpu'"):
        ExactModel(graph, "gpu")


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((2, 6), np.float32), r"takes int8 batches of \(6,\); got float32 of shape \(2, 6\)"),
    (np.zeros((2, 5), np.int8), r"got int8 of shape \(2, 5\)"),
    (np.zeros((6,), np.int8), r"got int8 of shape \(6,\)"),
    ([np.zeros((2, 6), np.int8)] * 2, r"has 1 input\(s\); got 2 array\(s\)"),
])
def test_inputs_of_another_type_shape_or_count_are_refused_by_name(inputs, message):
    import keras

    keras.utils.set_random_seed(seeded(0))
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        ExactModel(post_training_int8(model, x), "xnnpack").run(inputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_cnn", "mnist1d_cnn", "ds_cnn", "resnet8", "fc_autoencoder", "mobilenet_v1_025",
                                  "mobilenet_v2_035"])
def test_the_exact_model_equals_the_reference_on_every_zoo_model(name):
    from bench.families import build

    for bits, target in ((8, "int8"), (4, "int8"), (3, "int8"), (2, "int8"), (4, "int4-weights")):
        tflite_bytes, inputs = build(name, bits, target)
        graph = Graph(tflite_bytes)
        for family in FAMILIES:
            assert_exact(graph, inputs, family)
