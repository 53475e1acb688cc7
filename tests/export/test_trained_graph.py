"""The graph that trains is the graph that runs, op by op: each layer alone, QAT and hard Keras
against the int8 kernels (LiteRT and the integer reference)."""

import keras
import numpy as np
import pytest

from export.device.check import quantize_input
from export.device.reference import Graph, probed_families
from export.exactness import compare_families
from export.float_layers import float_ops
from export.hard_pooling import device_rounding
from export.harden import harden
from export.tflite import convert, weight_mismatches
from tests.seeds import seeded
from toolkit import QuantScheme, quantize
from toolkit.qat_layers import QuantAveragePooling

L = keras.layers


def _pooling_model(rank: int, pool_size: int, padding: str = "valid") -> tuple[keras.Model, np.ndarray]:
    """Conv(16, 3, relu) -> AveragePooling -> Flatten -> Dense: the issue's minimal case."""
    keras.utils.set_random_seed(seeded(0))
    if rank == 2:
        inputs = keras.Input((12, 12, 1), name="image")
        x = L.Conv2D(16, 3, activation="relu", name="conv")(inputs)
        x = L.AveragePooling2D(pool_size, padding=padding, name="pool")(x)
    else:
        inputs = keras.Input((24, 2), name="signal")
        x = L.Conv1D(16, 3, activation="relu", name="conv")(inputs)
        x = L.AveragePooling1D(pool_size, padding=padding, name="pool")(x)
    model = keras.Model(inputs, L.Dense(4, name="logits")(L.Flatten(name="flat")(x)))
    data = np.random.default_rng(0).uniform(0, 1, size=(400, *inputs.shape[1:])).astype(np.float32)
    return model, data


@pytest.mark.parametrize("rank, pool_size, padding", [(2, 10, "valid"), (2, 4, "same"), (1, 4, "valid")])
def test_average_pooling_trains_on_its_input_grid_and_rounds_as_the_int8_kernel(rank, pool_size, padding):
    model, data = _pooling_model(rank, pool_size, padding)
    quantized = quantize(model, QuantScheme(weight_bits=4), calibration_data=data)
    pooling = quantized.get_layer("pool")
    assert isinstance(pooling, QuantAveragePooling) and pooling.input_quant_name == "conv_quant"
    hard = harden(quantized)
    tflite_bytes = convert(hard, "int8")
    assert weight_mismatches(hard, tflite_bytes) == []
    graph = Graph(tflite_bytes)
    names = [op.name for op in graph.ops]
    assert "AVERAGE_POOL_2D" in names and "QUANTIZE" not in names  # no requantization after the pooling
    pool_op = graph.ops[names.index("AVERAGE_POOL_2D")]
    conv_op = graph.ops[names.index("CONV_2D")]
    grid = graph.tensors[pool_op.outputs[0]].grid()
    assert grid == graph.tensors[conv_op.outputs[0]].grid()
    assert np.isclose(grid[0], float(pooling.quantizer.grid().scale), rtol=1e-6)

    device_inputs = quantize_input(data, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    comparisons, values = compare_families(tflite_bytes, device_inputs, graph=graph)
    assert all(comparisons[family]["mismatched_elements"] == 0 for family in probed_families())
    scale, zero_point = grid
    hard_pooling = keras.Sequential([hard.get_layer("pool"), hard.get_layer("pool_quant")])
    for family in probed_families():
        device_conv = values[family][conv_op.outputs[0]].astype(np.float32)
        device_pooled = values[family][pool_op.outputs[0]].astype(np.int64)
        conv_real = scale * (device_conv - zero_point)
        if rank == 1:  # the Conv1D output before EXPAND_DIMS: (N, 1, L, C) -> (N, L, C)
            conv_real = conv_real.reshape(len(data), -1, 16)
        qat_ints = np.round(pooling(conv_real, training=False).numpy() / scale + zero_point).astype(np.int64)
        np.testing.assert_array_equal(qat_ints.reshape(device_pooled.shape), device_pooled)  # bit-exact
        # Hard Keras (a float mean through a fake-quant) differs only where the int8 mean is an
        # exact tie k + 1/2, by one step: a fake-quant rounds a tie up in the unsigned domain, and
        # a float mean lands on either side of it; TFLite rounds ties away from zero.
        hard_ints = np.round(hard_pooling(conv_real).numpy() / scale + zero_point).astype(np.int64)
        differ = hard_ints.reshape(device_pooled.shape) != device_pooled
        raw = device_conv.reshape(conv_real.shape) if rank == 1 else device_conv
        raw_mean = hard.get_layer("pool")(raw).numpy().reshape(device_pooled.shape)  # exact for ties
        ties = raw_mean - np.floor(raw_mean) == 0.5
        assert np.max(np.abs(hard_ints.reshape(device_pooled.shape) - device_pooled)) <= 1
        assert np.all(ties[differ])
        if pool_size == 10:  # 100-input windows hit such ties: the test tells the two roundings apart
            assert differ.any()
        with device_rounding():  # as validation measures hard Keras: the device's rounding of ties
            measured = np.round(hard_pooling(conv_real).numpy() / scale + zero_point).astype(np.int64)
        np.testing.assert_array_equal(measured.reshape(device_pooled.shape), device_pooled)


def test_validation_measures_average_pooling_ties_as_the_device_rounds_them(tmp_path):
    """Hard Keras rounds the pooled mean's exact ties up; the device away from zero of the raw
    int8 value. Validation measures inside `device_rounding`: the pooling's local error is 0, on
    a hard model saved and loaded again (as `validate` reads hard.keras)."""
    from export.validate import validate

    model, data = _pooling_model(2, 10)
    hard = harden(quantize(model, QuantScheme(weight_bits=4), calibration_data=data))
    tflite_bytes = convert(hard, "int8")
    hard.save(tmp_path / "hard.keras")
    loaded = keras.saving.load_model(tmp_path / "hard.keras")
    report = validate(loaded, tflite_bytes, data, np.zeros(len(data), np.int64))
    (row,) = [row for row in report["layers"] if row["name"] == "pool_quant"]
    assert row["local_max_error_steps"] < 1e-3, row
    names = [op.name for op in Graph(convert(loaded, "int8")).ops]   # the loaded pooling converts as before
    assert names == [op.name for op in Graph(tflite_bytes).ops] and "AVERAGE_POOL_2D" in names


def test_an_average_pooling_of_the_model_input_keeps_its_own_grid_and_converts():
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((8, 8, 2), name="image")
    x = L.AveragePooling2D(2, name="pool")(inputs)
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.Flatten()(x)))
    data = np.random.default_rng(0).uniform(0, 1, size=(64, 8, 8, 2)).astype(np.float32)
    quantized = quantize(model, QuantScheme(weight_bits=8), calibration_data=data)
    assert not any(isinstance(layer, QuantAveragePooling) for layer in quantized.layers)
    hard = harden(quantized)
    assert weight_mismatches(hard, convert(hard, "int8")) == []


def test_a_model_with_quant_average_pooling_saves_and_loads(tmp_path):
    model, data = _pooling_model(2, 4, "same")
    quantized = quantize(model, QuantScheme(weight_bits=4), calibration_data=data)
    path = tmp_path / "smooth.keras"
    quantized.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("pool"), QuantAveragePooling)
    np.testing.assert_array_equal(loaded.predict(data[:32], verbose=0), quantized.predict(data[:32], verbose=0))


def test_a_float_layer_is_quantized_on_both_sides_and_listed_with_its_bytes():
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((6,), name="x")
    hidden = L.Activation("elu", name="elu")(L.Dense(8, name="fc0")(inputs))  # TFLite has no int8 ELU
    model = keras.Model(inputs, L.Dense(3, name="out")(L.Dense(8, activation="relu", name="fc1")(hidden)))
    data = np.random.default_rng(0).normal(size=(128, 6)).astype(np.float32)
    quantized = quantize(model, QuantScheme(weight_bits=3, unsupported="float"), calibration_data=data)
    assert "elu_quant" in [layer.name for layer in quantized.layers]  # the boundary after the float layer
    hard = harden(quantized)
    for target in ("int8", "int4-weights"):
        tflite_bytes = convert(hard, target)
        assert weight_mismatches(hard, tflite_bytes) == []  # fc1 keeps its trained integers (it ran in float before)
        assert [(row["op"], row["weight_bytes"]) for row in float_ops(tflite_bytes)] == [("ELU", 0)]
        names = [op.name for op in Graph(tflite_bytes).ops]
        assert names.count("FULLY_CONNECTED") == 3 and "QUANTIZE" in names


def test_a_layer_norm_left_in_float_runs_in_float_entirely(monkeypatch):
    """The converter computes LayerNormalization's mean as an int8 MEAN on its input's grid (the
    mean rounded to a whole input step) inside a layer otherwise in float. The listing names that
    int8 op with its layer; `convert` moves it to float, so the layer computes as it trained: its
    local error is at most one step."""
    import export.tflite
    from export.validate import validate

    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((16, 8))
    x = L.Conv1D(16, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Conv1D(16, 3, padding="same", activation="relu", name="conv_b")(x)
    model = keras.Model(inputs, L.Dense(4, name="out")(L.Flatten()(x)))
    data = np.random.default_rng(seeded(0)).normal(size=(256, 16, 8)).astype(np.float32)
    hard = harden(quantize(model, QuantScheme(weight_bits=8, unsupported="float"), calibration_data=data))
    names = {layer.name for layer in hard.layers}
    with monkeypatch.context() as patch:
        patch.setattr(export.tflite, "run_in_float", lambda tflite_bytes, layer_names: tflite_bytes)
        as_converted = convert(hard, "int8")
    assert ("MEAN", "int8", "ln") in [(row["op"], row["type"], row["layer"]) for row in float_ops(as_converted, names)]
    tflite_bytes = convert(hard, "int8")
    rows = float_ops(tflite_bytes, names)
    assert {row["layer"] for row in rows} == {"ln"} and {row["type"] for row in rows} == {"float32"}
    assert "MEAN" in [row["op"] for row in rows]
    assert weight_mismatches(hard, tflite_bytes) == []
    report = validate(hard, tflite_bytes, data, np.zeros(len(data), np.int64))
    assert report["worst_local_layer"]["error_steps"] <= 1.0 + 1e-3, report["worst_local_layer"]


def test_validate_and_convert_name_the_float_ops(tmp_path):
    from click.testing import CliRunner

    from app.cli import main
    from export.validate import validate

    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((6,), name="x")
    hidden = L.Activation("elu", name="elu")(L.Dense(8, name="fc0")(inputs))
    model = keras.Model(inputs, L.Dense(3, name="out")(hidden))
    data = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    hard = harden(quantize(model, QuantScheme(weight_bits=8, unsupported="float"), calibration_data=data))
    report = validate(hard, convert(hard, "int8"), data, np.zeros(len(data), np.int64))
    assert [row["op"] for row in report["float_ops"]] == ["ELU"]
    assert "| ELU |" in report.to_markdown()
    path = tmp_path / "hard.keras"
    hard.save(path)
    result = CliRunner().invoke(main, ["convert", str(path), "--output", str(tmp_path / "m.tflite")])
    assert result.exit_code == 0, result.output
    assert "warning: 1 op(s) of layers left in float on the device (0 float weight bytes): ELU" in result.output


def test_a_softmax_on_a_collapsed_range_is_refused_before_the_runtime_aborts_on_it():
    from toolkit.errors import ConfigError

    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((6,), name="x")
    logits = L.Dense(3, kernel_initializer="zeros", name="logits")(inputs)  # always 0: a range of width 0
    model = keras.Model(inputs, L.Softmax(name="probabilities")(logits))
    data = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    hard = harden(quantize(model, QuantScheme(weight_bits=8), calibration_data=data))
    with pytest.raises(ConfigError, match=r"softmax input '.*logits.*' has the int8 scale .*aborts"):
        convert(hard, "int8")


@pytest.mark.parametrize("unroll", [False, True])
def test_a_recurrent_layer_is_named_with_its_fix_or_converts_unrolled_in_float(unroll):
    from toolkit.errors import ConfigError, UnsupportedLayerError

    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((8, 4), name="seq")
    hidden = L.LSTM(5, unroll=unroll, name="lstm")(L.Dense(6, name="embed")(inputs))
    model = keras.Model(inputs, L.Dense(3, name="out")(hidden))
    data = np.random.default_rng(0).normal(size=(64, 8, 4)).astype(np.float32)
    with pytest.raises(UnsupportedLayerError, match=r"'lstm' \(LSTM\).*unroll=True"):
        quantize(model, QuantScheme(weight_bits=8))
    hard = harden(quantize(model, QuantScheme(weight_bits=8, unsupported="float"), calibration_data=data))
    if not unroll:
        with pytest.raises(ConfigError, match=r"'lstm' \(LSTM\) is a rolled recurrent layer.*unroll=True"):
            convert(hard, "int8")
        return
    tflite_bytes = convert(hard, "int8")
    assert weight_mismatches(hard, tflite_bytes) == []  # embed and out keep their integers around the float LSTM
    assert any(row["op"] == "FULLY_CONNECTED" for row in float_ops(tflite_bytes))  # the LSTM's own float kernels


def test_a_separable_conv_trains_as_the_depthwise_and_pointwise_pair_tflite_runs():
    from toolkit.separable import split_separable_convs

    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((10, 10, 3), name="image")
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep")(inputs)
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(x))
    model = keras.Model(inputs, L.Dense(4, name="logits")(L.GlobalAveragePooling2D(name="gap")(x)))
    data = np.random.default_rng(0).normal(size=(128, 10, 10, 3)).astype(np.float32)
    split = split_separable_convs(model)
    np.testing.assert_allclose(split.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-5, atol=1e-5)
    quantized = quantize(model, QuantScheme(weight_bits=4), calibration_data=data)
    names = {layer.name: type(layer).__name__ for layer in quantized.layers}
    assert names["sep_depthwise"] == "QuantDepthwiseConv2D" and names["sep_pointwise"] == "QuantConv2D"
    assert "sep_depthwise_quant" in names and "bn" not in names  # the int8 tensor between; BN folded
    hard = harden(quantized)
    tflite_bytes = convert(hard, "int4-weights")
    assert weight_mismatches(hard, tflite_bytes) == []  # both kernels at their bit width, packed
    graph = Graph(tflite_bytes)
    assert [op.name for op in graph.ops][:2] == ["DEPTHWISE_CONV_2D", "CONV_2D"]
    device_inputs = quantize_input(data, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    comparisons, _ = compare_families(tflite_bytes, device_inputs, graph=graph, families=("builtin", "xnnpack"))
    assert all(comparisons[family]["mismatched_elements"] == 0 for family in probed_families() if family in comparisons)


def _standalone_batch_norm_model():
    """A BatchNormalization with no conv/dense before it (after a ReLU, and on the input)."""
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((8, 8, 4), name="image")
    x = L.BatchNormalization(name="bn_in")(inputs)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(8, 3, padding="same", name="conv2")(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.Flatten(name="flat")(x)))
    rng = np.random.default_rng(0)
    for name, channels in (("bn_in", 4), ("bn", 8)):
        model.get_layer(name).set_weights([rng.uniform(0.5, 2, channels), rng.normal(0, 0.5, channels),
                                           rng.normal(0, 0.5, channels), rng.uniform(0.2, 3, channels)])
    return model, rng.normal(size=(300, 8, 8, 4)).astype(np.float32)


def test_a_batch_norm_with_nothing_to_fold_into_trains_as_tflite_runs_it(tmp_path):
    from export.hard_layers import HardConstantOp
    from toolkit.qat_layers import QuantChannelAffine
    from toolkit.rounding import HARD_ALPHA
    from toolkit.schedules import set_alpha

    model, data = _standalone_batch_norm_model()
    quantized = quantize(model, QuantScheme(weight_bits=4), calibration_data=data)
    assert isinstance(quantized.get_layer("bn"), QuantChannelAffine) and isinstance(quantized.get_layer("bn_in"), QuantChannelAffine)
    quantized.save(tmp_path / "q.keras")
    reloaded = keras.saving.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(reloaded.predict(data[:8], verbose=0), quantized.predict(data[:8], verbose=0))
    hard = harden(quantized)
    tflite_bytes = convert(hard, "int8")
    assert weight_mismatches(hard, tflite_bytes) == []
    graph = Graph(tflite_bytes)
    names = [op.name for op in graph.ops]
    assert names.count("MUL") == 2 and names.count("ADD") == 2 and "QUANTIZE" not in names
    # The converter stores the MUL / ADD constants exactly as the hard model holds them.
    constants = {layer.name: layer for layer in hard.layers if isinstance(layer, HardConstantOp)}
    for op in graph.ops:
        if op.name in ("MUL", "ADD"):
            tensor = graph.tensors[op.inputs[1]]
            name = next(n for n in constants if f"/{n}_1/" in graph.tensors[op.outputs[0]].name)
            scale, zero_point = tensor.grid()
            np.testing.assert_array_equal(tensor.data.astype(np.int64),
                                          np.round(np.asarray(constants[name].values) / scale) + zero_point)
    device_inputs = quantize_input(data, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    comparisons, values = compare_families(tflite_bytes, device_inputs, graph=graph)
    assert all(comparisons[family]["mismatched_elements"] == 0 for family in probed_families())
    # The trained layer at alpha -> inf computes the hard model's values (to float rounding).
    set_alpha(quantized, HARD_ALPHA)
    step = graph.tensors[graph.outputs[0]].grid()[0]
    assert np.abs(quantized.predict(data, verbose=0) - hard.predict(data, verbose=0)).max() <= 1.001 * step


def test_a_batch_norm_over_another_axis_is_refused_by_name():
    from toolkit.errors import UnsupportedLayerError

    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(L.BatchNormalization(axis=1, name="bn_time")(inputs))))
    with pytest.raises(UnsupportedLayerError, match="bn_time.*axis"):
        quantize(model, QuantScheme())


def _concatenation_model() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """Two conv branches (one with a fused ReLU, one linear) joined by a Concatenate."""
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((8, 8, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="branch_a")(inputs)
    b = L.Conv2D(4, 1, name="branch_b")(inputs)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="after")(L.Concatenate(name="concat")([a, b]))
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling2D(name="pool")(x)))
    rng = np.random.default_rng(seeded(1))
    return model, rng.normal(size=(256, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, 256)


def test_the_branches_of_a_concatenation_train_on_its_grid():
    """TFLite's int8 CONCATENATION takes its inputs on its output's grid, and the converter writes
    each branch straight onto it: the branches train with no quantizer of their own, so no
    layer's own error exceeds a step (on grids of their own the branches were more than a step off)."""
    from export.validate import ONE_STEP, validate

    model, x, y = _concatenation_model()
    quantized = quantize(model, QuantScheme(weight_bits=4), calibration_data=x)
    hard = harden(quantized)
    tflite_bytes = convert(hard, "int8")
    report = validate(hard, tflite_bytes, x, y)
    assert report.weights_exact and all(row["outputs_equal"] for row in report.reference.values())
    assert [row["name"] for row in report.layers if row["local_max_error_steps"] > ONE_STEP] == []
    names = {layer.name for layer in quantized.layers}
    assert "concat_quant" in names and not {"branch_a_quant", "branch_b_quant"} & names
    graph = Graph(tflite_bytes)
    (concat,) = [op for op in graph.ops if op.name == "CONCATENATION"]
    trained_scale, trained_zero = hard.get_layer("concat_quant").grid()
    for index in [*concat.inputs, *concat.outputs]:
        scale, zero_point = graph.tensors[index].grid()
        assert zero_point == trained_zero and scale == pytest.approx(trained_scale, rel=1e-6)
