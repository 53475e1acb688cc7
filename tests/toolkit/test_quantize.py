import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import assert_config_round_trip
from tests.seeds import seeded
from tests.toolkit.conftest import small_model
from toolkit import QuantScheme, fold_batch_norm, quantize, quantized_layers
from toolkit.errors import UnsupportedLayerError
from toolkit.qat_layers import QuantConv1D, QuantDense, QuantDepthwiseConv2D, QuantizeActivation
from toolkit.schedules import set_alpha


def test_batch_norm_folding_is_equivalent(float_model, inputs_for):
    x = inputs_for(float_model)
    folded = fold_batch_norm(float_model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    np.testing.assert_allclose(folded(x).numpy(), float_model(x, training=False).numpy(), atol=1e-5)


def test_quantized_model_has_the_same_topology_and_weights(float_model, inputs_for):
    q = quantize(float_model, QuantScheme(weight_bits=8, rounding="soft"), calibration_data=inputs_for(float_model, 64))
    names = {layer.name for layer in q.layers}
    for layer in float_model.layers:
        if not isinstance(layer, (keras.layers.BatchNormalization, keras.layers.InputLayer)):
            assert layer.name in names
    # W8 at small alpha (soft rounding starts near the identity): close to the folded float model.
    set_alpha(q, 1e-6)
    x = inputs_for(float_model)
    reference = fold_batch_norm(float_model)(x).numpy()
    assert np.max(np.abs(q(x).numpy() - reference)) < 0.1 * np.max(np.abs(reference))


def test_activation_quantizers_sit_where_tflite_holds_int8_tensors():
    q = quantize(small_model("conv1d"), QuantScheme())
    quantizer_inputs = {
        layer.name: layer._inbound_nodes[0].parent_nodes[0].operation.name
        for layer in q.layers if isinstance(layer, QuantizeActivation)
    }
    # input, after the fused relu (not between conv and relu), after the conv with a fused
    # relu, after add, after the logits; nothing after max pooling or flatten.
    assert sorted(quantizer_inputs.values()) == sorted(["signal", "relu", "skip", "add", "logits"])
    q2 = quantize(small_model("conv2d"), QuantScheme())
    followed = {layer._inbound_nodes[0].parent_nodes[0].operation.name for layer in q2.layers if isinstance(layer, QuantizeActivation)}
    assert {"relu", "depthwise", "gap", "probs", "probs_softmax"} <= followed
    softmax_quant = q2.get_layer("probs_softmax_quant").quantizer
    assert softmax_quant.fixed_range == (0.0, 255 / 256)


def test_layer_types_and_per_channel_choices():
    q = quantize(small_model("conv1d"), QuantScheme(weight_bits=4))
    assert isinstance(q.get_layer("conv"), QuantConv1D)
    assert q.get_layer("conv").weight_quantizer.per_channel
    assert isinstance(q.get_layer("logits"), QuantDense)
    assert not q.get_layer("logits").weight_quantizer.per_channel  # TFLite: per-tensor FC
    q2 = quantize(small_model("conv2d"), QuantScheme(weight_bits=4))
    assert isinstance(q2.get_layer("depthwise"), QuantDepthwiseConv2D)
    assert len(quantized_layers(q2)) == 3


@pytest.mark.parametrize("rounding", ["ste", "soft", "sigmoid"])
def test_gradients_reach_every_kernel_and_bias(float_model, inputs_for, rounding):
    q = quantize(float_model, QuantScheme(weight_bits=3, rounding=rounding), calibration_data=inputs_for(float_model))
    x = inputs_for(float_model, seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(q(x, training=True)))
    trainable = q.trainable_variables
    grads = tape.gradient(loss, trainable)
    kernels_and_biases = [(v, g) for v, g in zip(trainable, grads, strict=True) if v.path.split("/")[-1] in ("kernel", "bias")]
    assert len(kernels_and_biases) == 2 * len(quantized_layers(q))
    for variable, grad in kernels_and_biases:
        assert grad is not None, variable.path
        assert np.count_nonzero(grad.numpy()) > 0, variable.path


def test_overrides_and_float_layers():
    scheme = QuantScheme(weight_bits=4, overrides={"conv|logits": {"weight_bits": 8}, "skip": {"float": True}})
    q = quantize(small_model("conv1d"), scheme)
    assert q.get_layer("conv").weight_quantizer.bits == 8
    assert q.get_layer("logits").weight_quantizer.bits == 8
    assert type(q.get_layer("skip")) is keras.layers.Conv1D


def test_unsupported_layer_is_named_or_left_in_float():
    inputs = keras.Input((10,))
    x = keras.layers.Dense(8, name="hidden")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with pytest.raises(UnsupportedLayerError, match=r"'norm' \(LayerNormalization\)"):
        quantize(model, QuantScheme())
    q = quantize(model, QuantScheme(unsupported="float"))
    assert type(q.get_layer("norm")) is keras.layers.LayerNormalization
    gelu = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="gelu", name="d")])
    with pytest.raises(UnsupportedLayerError, match="'d' \\(Dense\\).*gelu"):
        quantize(gelu, QuantScheme())


def test_save_and_load_round_trip_keeps_quantizer_state(float_model, inputs_for, tmp_path):
    x = inputs_for(float_model)
    q = quantize(float_model, QuantScheme(weight_bits=4, learned_step=True), calibration_data=x)
    set_alpha(q, 37.0)
    path = os.fspath(tmp_path / "q.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode on, no custom_objects
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), q.predict(x, verbose=0))
    for layer in q.layers:  # every weight of every layer, quantizer state included
        for saved, restored in zip(layer.weights, loaded.get_layer(layer.name).weights, strict=True):
            assert saved.path == restored.path
            np.testing.assert_array_equal(restored.numpy(), saved.numpy())
    assert any(v.path.endswith("rounding_alpha") and float(v.numpy()) == 37.0 for v in loaded.variables)
    assert any(v.path.endswith("range_max") and float(v.numpy()) != 0.0 for v in loaded.variables)


def test_qat_layer_configs_round_trip():
    assert_config_round_trip(QuantDense(3, weight_quantizer={"bits": 3, "rounding": "sigmoid"}))
    assert_config_round_trip(QuantizeActivation({"bits": 8, "symmetric": True}))


def test_fit_on_tf_data_under_tf_function(inputs_for):
    keras.utils.set_random_seed(seeded(0))
    q = quantize(small_model("conv1d"), QuantScheme(weight_bits=4))
    x = inputs_for(q, 128)
    y = np.random.default_rng(0).integers(0, 4, 128)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=False)
    before = [v.numpy().copy() for v in q.trainable_variables]
    history = q.fit(dataset, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, q.trainable_variables, strict=True))
    assert float(q.get_layer("signal_quant").quantizer.range_initialized) == 1.0


def _separable_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))


def _kernel_bits(model: keras.Model) -> dict[str, int]:
    return {layer.name: layer.weight_quantizer.bits for layer in model.layers if hasattr(layer, "weight_quantizer")}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"sep": {"weight_bits": 3}}, {"sep_depthwise": 3, "sep_pointwise": 3}),
        ({"sep": {"weight_bits": 3}, "sep_pointwise": {"weight_bits": 5}}, {"sep_depthwise": 3, "sep_pointwise": 5}),
        ({"sep_depthwise": {"weight_bits": 2}}, {"sep_depthwise": 2, "sep_pointwise": 8}),
    ],
)
def test_an_override_naming_a_separable_conv_applies_to_both_halves_and_a_half_overrides_it(overrides, expected):
    quantized = quantize(_separable_model(), QuantScheme(weight_bits=8, overrides=overrides))
    bits = _kernel_bits(quantized)
    assert {name: bits[name] for name in expected} == expected


def test_a_separable_conv_left_in_float_leaves_both_halves_in_float():
    quantized = quantize(_separable_model(), QuantScheme(weight_bits=4, overrides={"sep": {"float": True}}))
    assert not {"sep_depthwise", "sep_pointwise"} & set(_kernel_bits(quantized))   # both halves in float
    assert {"sep_depthwise", "sep_pointwise"} <= {layer.name for layer in quantized.layers}
    assert len(_kernel_bits(quantized)) == 1                                        # the Dense is quantized
