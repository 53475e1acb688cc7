"""One description per layer type: every stage reads it, and each type goes through every stage."""

import keras
import numpy as np
import pytest

from tests.seeds import seeded
from toolkit import LAYER_TYPES, QuantScheme, layer_type_of, quantize
from toolkit.batchnorm_folding import FOLDABLE, fold_batch_norm
from toolkit.qat_layers import QUANT_LAYERS

L = keras.layers


def _single_layer_model(name: str) -> tuple[keras.Model, np.ndarray]:
    """A model around one layer of the type `name`, followed by a BatchNormalization to fold."""
    keras.utils.set_random_seed(seeded(3))
    if name == "dense":
        inputs, layer = keras.Input((7,)), L.Dense(5, name="subject")
    elif name == "conv1d":
        inputs, layer = keras.Input((12, 3)), L.Conv1D(4, 3, padding="same", name="subject")
    elif name == "conv2d":
        inputs, layer = keras.Input((6, 6, 3)), L.Conv2D(4, 3, strides=2, padding="same", name="subject")
    else:
        inputs, layer = keras.Input((6, 6, 3)), L.DepthwiseConv2D(3, depth_multiplier=2, name="subject")
    outputs = L.BatchNormalization(name="bn")(layer(inputs))
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    channels = bn.moving_mean.shape[0]
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, channels), rng.normal(size=channels), rng.normal(size=channels),
                    rng.uniform(0.5, 2, channels)])
    x = rng.normal(size=(64, *inputs.shape[1:])).astype(np.float32)
    return model, x


def test_the_stages_read_one_registry():
    import export.hard_layers  # noqa: F401  (registers the hard forms: export builds on toolkit)

    assert set(QUANT_LAYERS) == set(FOLDABLE) == {d.keras_class for d in LAYER_TYPES.values()}
    for description in LAYER_TYPES.values():
        assert description.qat_class is not None and description.qat_class.layer_type is description
        assert description.hard_class is not None and description.hard_class.layer_type is description


@pytest.mark.parametrize("name", list(LAYER_TYPES))
def test_each_layer_type_folds_quantizes_hardens_and_stores_its_integers_exactly(name):
    from export.device.reference import Graph
    from export.harden import harden
    from export.tflite import convert, weight_mismatches

    description = LAYER_TYPES[name]
    model, x = _single_layer_model(name)
    folded = fold_batch_norm(model)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    quantized = quantize(model, QuantScheme(weight_bits=3), calibration_data=x)
    subject = quantized.get_layer("subject")
    assert layer_type_of(subject) is description and layer_type_of(model.get_layer("subject")) is description
    assert len(description.kernel_axes) == len(subject.float_kernel.shape)
    channels = int(np.prod([subject.float_kernel.shape[a] for a in description.channel_axes]))
    steps = np.asarray(subject.weight_quantizer.scale(subject.float_kernel)).size
    assert steps == (channels if description.per_channel else 1)
    hard = harden(quantized)
    assert layer_type_of(hard.get_layer("subject")) is description
    tflite_bytes = convert(hard, "int8")
    assert weight_mismatches(hard, tflite_bytes) == []
    op_names = [op.name for op in Graph(tflite_bytes).ops]
    assert all(op in op_names for op in description.tflite_ops), op_names


def test_fold_scales_the_output_channels_of_a_depthwise_kernel_in_keras_order():
    depthwise = LAYER_TYPES["depthwise"]
    kernel = np.ones((3, 3, 2, 2))                  # (kh, kw, in, multiplier): output channel c m + j
    folded = depthwise.fold(kernel, np.array([1.0, 2.0, 3.0, 4.0]))
    assert folded[0, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert depthwise.tflite_layout(folded).shape == (1, 3, 3, 4)
    assert depthwise.tflite_layout(folded)[0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
