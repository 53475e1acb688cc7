"""The tfmot bridge: softedge rounding inside tfmot's QAT machinery, exact export."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.seeds import seeded
from toolkit import AlphaSchedule, QuantScheme

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tf_keras():
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    import tf_keras

    yield tf_keras
    # Importing tfmot sets TF_USE_LEGACY_KERAS=1 for this process and its children; undo it.
    if saved is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = saved


def small_tf_keras_model(tf_keras):
    layers = tf_keras.layers
    inputs = tf_keras.Input((8, 8, 1))
    x = layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = layers.ReLU(name="relu")(x)  # tfmot's LayerReLUQuantize gives `conv` a no-op config
    x = layers.Reshape((64, 6), name="reshape")(x)
    x = layers.Conv1D(4, 3, activation="relu", name="conv1d")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(3, name="logits")(x)
    return tf_keras.Model(inputs, outputs)


def test_importing_softedge_does_not_import_tfmot():
    code = ("import sys, toolkit, models, app.cli, export.harden, export.tflite, export.validate; "
            "print('tensorflow_model_optimization' in sys.modules, 'tf_keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.stdout.split() == ["False", "False"], result.stderr[-2000:]


def test_tfmot_default_leaves_conv_followed_by_relu_unquantized(tf_keras):
    import tensorflow_model_optimization as tfmot

    quantized = tfmot.quantization.keras.quantize_model(
        tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Conv2D(4, 3, name="conv"),
                             tf_keras.layers.ReLU(name="relu")]))
    assert quantized.get_layer("quant_conv")._weight_vars == []  # the finding the bridge corrects


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_bridge_quantizes_every_kernel_and_exports_exactly(tf_keras, bits):
    from export.harden import harden
    from export.tflite import convert, weight_mismatches
    from toolkit import tfmot_bridge

    tf_keras.utils.set_random_seed(seeded(bits))
    model = tfmot_bridge.quantize_tfmot(small_tf_keras_model(tf_keras), QuantScheme(weight_bits=bits, rounding="soft"))
    kernels = {layer.name for layer, _, _ in tfmot_bridge._kernel_quantizers(model)}
    assert kernels == {"quant_conv", "quant_conv1d", "quant_logits"}
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                        callbacks=[tfmot_bridge.AnnealRoundingTfmot(AlphaSchedule("linear", 1.0, 7.0, steps=8))])
    assert history.history["alpha"] == pytest.approx([3.25, 6.25])  # 1 + 6 * step / 8 at steps 3 and 7
    hard = harden(model)
    tflite_bytes = convert(hard, "int8")
    assert weight_mismatches(hard, tflite_bytes) == []
    qmax = 2 ** (bits - 1) - 1
    kinds = set()
    for _, kind, ints, _ in tfmot_bridge.kernel_integers(hard):
        kinds.add(kind)
        assert ints.min() >= -qmax and ints.max() <= qmax
    assert kinds == {"conv2d", "conv1d", "dense"}
    # toolkit.set_alpha reaches the bridge's alpha weights too.
    from toolkit import set_alpha

    set_alpha(model, 123.0)
    from toolkit.schedules import alpha_variables

    assert [float(v.numpy()) for v in alpha_variables(model)] == [123.0] * 3


def test_bridge_config_survives_a_clone(tf_keras):
    from toolkit import tfmot_bridge

    model = tfmot_bridge.quantize_tfmot(small_tf_keras_model(tf_keras), QuantScheme(weight_bits=3, rounding="sigmoid"))
    with tfmot_bridge.quantize_scope():
        clone = tf_keras.models.clone_model(model)
    quantizers = [q.get_config() for _, _, q in tfmot_bridge._kernel_quantizers(clone)]
    assert len(quantizers) == 3
    assert all(q["bits"] == 3 and q["rounding"] == "sigmoid" for q in quantizers)


def test_exactness_check_is_not_vacuous_for_a_model_without_quantized_kernels(tf_keras):
    from export.tflite import weight_mismatches

    plain = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    converter = tf.lite.TFLiteConverter.from_keras_model(plain)
    assert "exactness unproven" in weight_mismatches(plain, converter.convert())[0]


def test_a_keras_3_model_is_refused_with_the_native_path_named():
    import keras

    from toolkit.errors import ConfigError
    from toolkit.tfmot_bridge import quantize_tfmot

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="k3")
    with pytest.raises(ConfigError, match=r"'k3' is a Keras 3 model.*toolkit\.quantize"):
        quantize_tfmot(model)
