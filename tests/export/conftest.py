import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.seeds import seeded
from tests.toolkit.conftest import randomize_batch_norms, small_model
from toolkit import QuantScheme, quantize


def calibrated(kind: str, bits: int, **scheme):
    keras.utils.set_random_seed(seeded(bits))
    model = small_model(kind)
    randomize_batch_norms(model, seed=bits)
    x = np.random.default_rng(bits).normal(size=(128, *model.inputs[0].shape[1:])).astype(np.float32)
    return quantize(model, QuantScheme(weight_bits=bits, **scheme), calibration_data=x), x


L = keras.layers


def post_training_int8(model: keras.Model, x: np.ndarray, io: str = "int8") -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in x[:64])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def common_layers(name: str):
    keras.utils.set_random_seed(seeded(0))
    if name == "convolutions":  # strides, valid/same, dilation (SPACE_TO_BATCH_ND), depth multiplier, Flatten
        inputs = keras.Input((12, 12, 3))
        x = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = L.Conv2D(8, 3, strides=2, activation="relu6")(x)
        x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
        x = L.Conv2D(6, 3, dilation_rate=2, padding="same")(x)
        x = L.Dense(5, activation="relu")(L.Flatten()(x))
        return keras.Model(inputs, L.Dense(4)(x))
    if name == "residual":  # ADD, MUL, LOGISTIC, PAD, pooling, CONCATENATION, MEAN
        inputs = keras.Input((8, 8, 4))
        a = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        total = L.Add()([a, L.Conv2D(4, 1)(inputs)])
        x = L.Multiply()([total, L.Conv2D(4, 1, activation="sigmoid")(inputs)])
        x = L.MaxPooling2D(2)(L.ZeroPadding2D(1)(x))
        x = L.AveragePooling2D(2, padding="same")(x)
        x = L.Concatenate()([x, L.Conv2D(3, 1)(x)])
        return keras.Model(inputs, L.Dense(6)(L.GlobalAveragePooling2D()(x)))
    if name == "activations":  # TANH, LOGISTIC, RELU6 on FULLY_CONNECTED
        inputs = keras.Input((16,))
        x = L.Dense(12, activation="tanh")(inputs)
        x = L.Dense(12, activation="sigmoid")(x)
        x = L.Dense(12, activation="relu6")(x)
        return keras.Model(inputs, L.Dense(3)(x))
    if name == "ds_cnn":  # MLPerf Tiny KWS shape: strided 10x4 conv, depthwise-separable blocks, AveragePooling2D
        inputs = keras.Input((49, 10, 1))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, (10, 4), strides=2, padding="same")(inputs)))
        for _ in range(2):
            x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
            x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 1)(x)))
        x = L.AveragePooling2D(pool_size=x.shape[1:3])(x)
        return keras.Model(inputs, L.Dense(12)(L.Flatten()(x)))
    if name == "reductions":  # REDUCE_MAX (GlobalMaxPooling2D, keep_dims or not), MEAN with keep_dims over H and W
        inputs = keras.Input((9, 7, 4))
        x = L.Conv2D(6, 3, padding="same", activation="relu")(inputs)
        pooled = [L.GlobalMaxPooling2D()(x), L.Flatten()(L.GlobalMaxPooling2D(keepdims=True)(x)),
                  L.Flatten()(L.GlobalAveragePooling2D(keepdims=True)(x))]
        return keras.Model(inputs, L.Dense(5)(L.Add()(pooled)))
    if name == "mobilenet":  # keras.applications MobileNet(0.25): ZeroPadding, ReLU6, depthwise, MEAN
        return keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False,
                                            weights=None, pooling="avg")
    inputs = keras.Input((20, 2))  # Conv1D: EXPAND_DIMS, RESHAPE, AVERAGE_POOL_2D, SHAPE/STRIDED_SLICE/PACK
    x = L.Conv1D(8, 5, padding="same", activation="relu")(inputs)
    x = L.AveragePooling1D(2)(L.Conv1D(8, 3, strides=2, padding="same", activation="relu")(x))
    return keras.Model(inputs, L.Dense(4)(L.Flatten()(x)))


@pytest.fixture(scope="module", params=["convolutions", "residual", "activations", "conv1d", "ds_cnn", "mobilenet",
                                        "reductions"])
def common_model(request):
    model = common_layers(request.param)
    x = 1.5 * np.random.default_rng(1).normal(size=(200, *model.inputs[0].shape[1:])).astype(np.float32)
    return request.param, model, x
