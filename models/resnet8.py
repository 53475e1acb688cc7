"""MLPerf Tiny image classification reference: ResNet-8 (32x32x3 CIFAR-10 -> 10), softmax out.

After mlcommons/tiny, benchmark/training/image_classification/keras_model.py
(`resnet_v1_eembc`): Conv2D 16 3x3 - BN - ReLU, then three residual stacks of 16, 32 and 64
filters (Conv 3x3 - BN - ReLU - Conv 3x3 - BN, added to the identity, or to a strided 1x1 conv
where the shape changes, then ReLU; stacks 2 and 3 stride 2), AveragePooling2D over the 8x8
map, Flatten, Dense 10 softmax. He-normal kernels, L2 1e-4 on the convs. 16 filters, as the
MLPerf Tiny v0.5-v1.x submissions (78k trainable parameters); the current reference file's default is 26.
"""

import keras

from models.registry import register

L = keras.layers


def _conv(filters: int, kernel: int, strides: int, name: str):
    return L.Conv2D(filters, kernel, strides=strides, padding="same", kernel_initializer="he_normal",
                    kernel_regularizer=keras.regularizers.L2(1e-4), name=name)


@register("resnet8", (32, 32, 3), 10,
          real_data="CIFAR-10: x_*: float32 (N, 32, 32, 3) in [0, 1], y_*: int (N,)",
          reference="MLPerf Tiny image classification: ResNet-8 (16 filters)")
def build(input_shape=(32, 32, 3), num_classes=10, filters=16) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = L.Activation("relu", name="relu0")(L.BatchNormalization(name="bn0")(_conv(filters, 3, 1, "conv0")(inputs)))
    for stack, multiple in enumerate((1, 2, 4), start=1):
        strides = 1 if stack == 1 else 2
        y = _conv(filters * multiple, 3, strides, f"stack{stack}_conv_a")(x)
        y = L.Activation("relu", name=f"stack{stack}_relu_a")(L.BatchNormalization(name=f"stack{stack}_bn_a")(y))
        y = L.BatchNormalization(name=f"stack{stack}_bn_b")(_conv(filters * multiple, 3, 1, f"stack{stack}_conv_b")(y))
        if stack > 1:  # the identity path changes shape: a strided 1x1 conv, no BN (as the reference)
            x = _conv(filters * multiple, 1, strides, f"stack{stack}_shortcut")(x)
        x = L.Activation("relu", name=f"stack{stack}_relu")(L.Add(name=f"stack{stack}_add")([x, y]))
    x = L.AveragePooling2D(pool_size=min(x.shape[1:3]), name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(num_classes, activation="softmax", kernel_initializer="he_normal", name="classes")(x)
    return keras.Model(inputs, outputs, name="resnet8")
