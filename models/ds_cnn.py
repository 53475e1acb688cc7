"""MLPerf Tiny keyword spotting reference: DS-CNN (49x10x1 MFCCs -> 12 keywords), softmax out.

After mlcommons/tiny, benchmark/training/keyword_spotting/keras_model.py (`ds_cnn`, from Zhang
et al. 2017, "Hello Edge", arXiv:1711.07128): Conv2D 64 (10x4, stride 2, same) - BN - ReLU -
Dropout 0.2; four depthwise-separable blocks (DepthwiseConv2D 3x3 - BN - ReLU - Conv2D 64 1x1 -
BN - ReLU); Dropout 0.4; AveragePooling2D over (H/2, W/2) of the *input* = (24, 5) on the 25x5
feature map (as the reference: the last row is not pooled); Flatten; Dense 12 softmax. L2 1e-4
on every kernel. 23,756 trainable parameters, as the reference model card.

Keras 3: DepthwiseConv2D takes `depthwise_regularizer` (the reference passes Keras 2's
`kernel_regularizer`, which Keras 3 rejects); everything else is as the reference.
"""

import keras

from models.registry import register

L = keras.layers


@register("ds_cnn", (49, 10, 1), 12,
          real_data="Speech Commands v2, 12 classes (10 words, silence, unknown); 49x10 MFCC frames (30 ms windows, "
                    "20 ms stride, 10 coefficients) as x_*: float32 (N, 49, 10, 1), y_*: int (N,)",
          reference="MLPerf Tiny keyword spotting: DS-CNN (Hello Edge, Zhang et al. 2017)")
def build(input_shape=(49, 10, 1), num_classes=12, filters=64) -> keras.Model:
    regularizer = keras.regularizers.L2(1e-4)
    inputs = keras.Input(shape=input_shape, name="mfcc")
    x = L.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=regularizer, name="conv0")(inputs)
    x = L.BatchNormalization(name="bn0")(x)
    x = L.Activation("relu", name="relu0")(x)
    x = L.Dropout(0.2, name="dropout0")(x)
    for block in range(1, 5):
        x = L.DepthwiseConv2D((3, 3), padding="same", depthwise_regularizer=regularizer, name=f"depthwise{block}")(x)
        x = L.BatchNormalization(name=f"depthwise{block}_bn")(x)
        x = L.Activation("relu", name=f"depthwise{block}_relu")(x)
        x = L.Conv2D(filters, (1, 1), padding="same", kernel_regularizer=regularizer, name=f"pointwise{block}")(x)
        x = L.BatchNormalization(name=f"pointwise{block}_bn")(x)
        x = L.Activation("relu", name=f"pointwise{block}_relu")(x)
    x = L.Dropout(0.4, name="dropout1")(x)
    x = L.AveragePooling2D(pool_size=(input_shape[0] // 2, input_shape[1] // 2), name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="keywords")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")
