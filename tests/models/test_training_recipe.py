"""The training recipe's pieces: precise BatchNorm statistics, the XLA choice, anomaly metrics,
the hard end of the annealing."""

import dataclasses

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from export.device.check import roc_auc
from models import datasets, registry
from models.datasets import Dataset, training_pairs
from models.training import Recipe, recalibrate_batch_norm, task_metrics, train_quantized, use_xla
from tests.seeds import seeded
from toolkit import QuantScheme
from toolkit.errors import ConfigError
from toolkit.qat_layers import QUANT_KERNEL_LAYERS
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import alpha_variables

L = keras.layers


def test_recalibrated_batch_norm_holds_the_mean_of_its_batch_statistics():
    keras.utils.set_random_seed(seeded(0))
    inputs = keras.Input((5,))
    dense = L.Dense(3, name="dense")
    model = keras.Model(inputs, L.BatchNormalization(momentum=0.99, name="bn")(dense(inputs)))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(256, 5)).astype(np.float32)
    recalibrate_batch_norm(model, x, batch_size=64)
    features = keras.Model(inputs, dense.output)(x).numpy().reshape(4, 64, 3)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=1).mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), features.var(axis=1).mean(axis=0), rtol=1e-4)
    assert bn.momentum == 0.99  # restored


def test_xla_is_off_for_depthwise_models_unless_asked():
    assert use_xla(registry.build("mnist1d_cnn")) is True
    assert use_xla(registry.build("ds_cnn")) is False
    assert use_xla(registry.build("ds_cnn"), jit_compile=True) is True
    assert use_xla(registry.build("mobilenet_v2_035")) is False


def test_device_roc_auc_equals_scikit_learns_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=500).astype(np.float64)  # many ties
    labels = (rng.random(500) < 0.3 + 0.02 * scores).astype(int)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(roc_auc(scores, np.zeros(500)))


def test_anomaly_metrics_score_reconstruction_error():
    x = np.zeros((4, 3), np.float32)
    outputs = np.array([[0, 0, 0], [0.1, 0, 0], [1, 1, 1], [2, 0, 0]], np.float32)  # errors 0, 1/300, 1, 4/3
    metrics = task_metrics(outputs, x, np.array([0, 0, 1, 1]), "anomaly")
    assert metrics["auc"] == 1.0 and metrics["normal_mse"] == pytest.approx(0.01 / 6)
    metrics = task_metrics(outputs, x, np.array([1, 0, 0, 1]), "anomaly")
    assert metrics["auc"] == 0.5


def test_an_autoencoder_trains_on_its_normal_samples_as_targets():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    data = Dataset("d", x, np.array([0, 1, 0, 0]), x, np.array([0, 1, 0, 0]), task="anomaly")
    inputs, targets = training_pairs(data, "anomaly")
    assert np.array_equal(inputs, x[[0, 2, 3]]) and inputs is targets
    assert training_pairs(data, "classification")[1] is data.y_train


@pytest.mark.parametrize("end_hard", [True, False])
def test_training_ends_with_the_weights_harden_exports(end_hard):
    """With `end_hard` the trained model's alpha is HARD_ALPHA and every kernel it computes with
    is its hard integers times their step, q s with q = clip(round(w / s)), bit for bit: the
    weights `harden` bakes. Without, the schedule's last alpha stays in the model."""
    data = datasets.load("digits")
    data = dataclasses.replace(data, x_train=data.x_train[:256], y_train=data.y_train[:256])
    keras.utils.set_random_seed(seeded(0))
    model = registry.build("digits_cnn", data.input_shape, data.num_classes)
    recipe = Recipe(float_epochs=0, qat_epochs=1, end_hard=end_hard)
    trained, history = train_quantized(model, data, QuantScheme(weight_bits=3, rounding="soft"), recipe, seed=seeded(0))
    alphas = {float(variable.numpy()) for variable in alpha_variables(trained)}
    assert alphas == {np.float32(HARD_ALPHA if end_hard else history["alpha"][-1])}
    if end_hard:
        for layer in (layer for layer in trained.layers if isinstance(layer, QUANT_KERNEL_LAYERS)):
            quantizer, kernel = layer.weight_quantizer, layer.float_kernel
            hard = quantizer.scale(kernel) * keras.ops.cast(quantizer.integers(kernel), "float32")
            np.testing.assert_array_equal(layer.quantized_kernel().numpy(), hard.numpy(), err_msg=layer.name)


def test_the_last_epochs_train_on_the_device_arithmetic():
    """Recipe(device_arithmetic, device_epochs=1) of 2 QAT epochs: the first epoch trains on the
    float simulation, the second (and the returned model) on the device's arithmetic."""
    data = datasets.load("digits")
    data = dataclasses.replace(data, x_train=data.x_train[:256], y_train=data.y_train[:256])
    keras.utils.set_random_seed(seeded(0))
    model = registry.build("digits_cnn", data.input_shape, data.num_classes)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append({layer.device_arithmetic for layer in self.model.layers if isinstance(layer, QUANT_KERNEL_LAYERS)})

    recipe = Recipe(float_epochs=0, qat_epochs=2, device_arithmetic="xnnpack", device_epochs=1)
    trained, history = train_quantized(model, data, QuantScheme(weight_bits=4), recipe, seed=seeded(0), callbacks=[Record()])
    assert seen == [{None}, {"xnnpack"}] and seen.index({"xnnpack"}) == recipe.device_from
    assert (Recipe(qat_epochs=3, device_epochs=None).device_from, Recipe(qat_epochs=3, device_arithmetic=None).device_from) == (0, 3)
    kernels = [layer for layer in trained.layers if isinstance(layer, QUANT_KERNEL_LAYERS)]
    assert {layer.device_arithmetic for layer in kernels} == {"xnnpack"} and any(layer.follows_device() for layer in kernels)
    assert np.isfinite(history["loss"]).all()


@pytest.mark.parametrize("fields, message", [({"device_arithmetic": "ruy"}, "Unknown device arithmetic 'ruy'"),
                                             ({"qat_epochs": 2, "device_epochs": 3}, "device_epochs None or 1..qat_epochs")])
def test_device_arithmetic_settings_are_checked(fields, message):
    with pytest.raises(ConfigError, match=message):
        Recipe(**fields)
