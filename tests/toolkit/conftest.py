import keras
import numpy as np
import pytest

from tests.seeds import seeded


def small_model(kind: str = "conv2d") -> keras.Model:
    """A small float model with every quantizable layer type and the folding/fusion cases."""
    layers = keras.layers
    if kind == "conv1d":
        inputs = keras.Input((16, 2), name="signal")
        x = layers.Conv1D(6, 3, padding="same", use_bias=False, name="conv")(inputs)
        x = layers.BatchNormalization(name="bn")(x)
        x = layers.ReLU(name="relu")(x)
        skip = layers.Conv1D(6, 1, activation="relu", name="skip")(inputs)
        x = layers.Add(name="add")([x, skip])
        x = layers.MaxPooling1D(2, name="pool")(x)
        x = layers.Flatten(name="flatten")(x)
        outputs = layers.Dense(4, name="logits")(x)
        return keras.Model(inputs, outputs, name="small_conv1d")
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(8, 3, padding="same", name="conv"),
            layers.BatchNormalization(name="bn"),
            layers.ReLU(name="relu"),
            layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu6", name="depthwise"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dropout(0.1, name="dropout"),
            layers.Dense(4, activation="softmax", name="probs"),
        ],
        name="small_conv2d",
    )


def randomize_batch_norms(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial BN statistics, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.2, 3, n)])


@pytest.fixture(params=["conv2d", "conv1d"])
def float_model(request):
    keras.utils.set_random_seed(seeded(0))
    model = small_model(request.param)
    randomize_batch_norms(model)
    return model


@pytest.fixture
def inputs_for():
    def make(model, n=32, seed=0):
        shape = (n, *model.inputs[0].shape[1:])
        return np.random.default_rng(seed).normal(size=shape).astype(np.float32)

    return make
