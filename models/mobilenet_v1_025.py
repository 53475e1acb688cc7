"""MLPerf Tiny visual wake words reference: MobileNetV1, width 0.25 (96x96x3 -> person / not), softmax out.

After mlcommons/tiny, benchmark/training/visual_wake_words/vww_model.py (`mobilenet_v1`, from
Silicon Labs' platform_ml_models, eembc/Person_detection): Conv2D 8 3x3 stride 2 - BN - ReLU;
13 depthwise-separable blocks (DepthwiseConv2D 3x3 - BN - ReLU - Conv2D 1x1 - BN - ReLU),
pointwise filters 16, 32, 32, 64, 64, 128 x6, 256, 256, depthwise strides 2 in blocks 2, 4, 6
and 12; AveragePooling2D over the 3x3 map; Flatten; Dense 2 softmax. He-normal kernels, L2 1e-4.
Plain ReLU and 'same' padding as the reference (keras.applications' MobileNet uses ReLU6 and
ZeroPadding2D). 216k trainable parameters.

Keras 3: DepthwiseConv2D takes `depthwise_initializer` / `depthwise_regularizer` (the
reference passes Keras 2's `kernel_*` names, which Keras 3 rejects).
"""

import keras

from models.registry import register

L = keras.layers
# (depthwise stride, pointwise filters as a multiple of the first conv's) per block
_BLOCKS = ((1, 2), (2, 4), (1, 4), (2, 8), (1, 8), (2, 16), (1, 16), (1, 16), (1, 16), (1, 16), (1, 16), (2, 32), (1, 32))


@register("mobilenet_v1_025", (96, 96, 3), 2,
          real_data="Visual Wake Words (COCO 2014, person / not person), 96x96 RGB: x_*: float32 (N, 96, 96, 3) "
                    "in [0, 1], y_*: int (N,) 1 = person",
          reference="MLPerf Tiny visual wake words: MobileNetV1, width 0.25")
def build(input_shape=(96, 96, 3), num_classes=2, filters=8) -> keras.Model:
    regularizer = keras.regularizers.L2(1e-4)
    inputs = keras.Input(shape=input_shape, name="image")
    x = L.Conv2D(filters, 3, strides=2, padding="same", kernel_initializer="he_normal", kernel_regularizer=regularizer,
                 name="conv0")(inputs)
    x = L.Activation("relu", name="relu0")(L.BatchNormalization(name="bn0")(x))
    for block, (strides, multiple) in enumerate(_BLOCKS, start=1):
        x = L.DepthwiseConv2D(3, strides=strides, padding="same", depthwise_initializer="he_normal",
                              depthwise_regularizer=regularizer, name=f"depthwise{block}")(x)
        x = L.Activation("relu", name=f"depthwise{block}_relu")(L.BatchNormalization(name=f"depthwise{block}_bn")(x))
        x = L.Conv2D(filters * multiple, 1, padding="same", kernel_initializer="he_normal", kernel_regularizer=regularizer,
                     name=f"pointwise{block}")(x)
        x = L.Activation("relu", name=f"pointwise{block}_relu")(L.BatchNormalization(name=f"pointwise{block}_bn")(x))
    x = L.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="person")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1_025")
