"""A small 2-D CNN for the 8x8 scikit-learn digits, logits out.

Conv-BN-ReLU (16), depthwise-separable block (depthwise 3x3 + pointwise 32), global average
pooling, dense: a tiny microcontroller-sized model that exercises every quantized layer type.
BN momentum 0.9: with 1437 training images, 0.99 leaves the moving statistics far behind
(`make bench-recipe`: 96.4% vs 91.9% float test accuracy after 30 epochs, mean of 3 seeds).

`keras_module` builds the same architecture with another Keras-compatible module (tf_keras for
the tfmot bridge and baseline); `batch_norm=False` gives the architecture after BN folding
(convs with biases, no BN), the same layer names, so folded weights can be copied in.
"""

import keras

from models.registry import register


@register("digits_cnn", (8, 8, 1), 10, real_data="built in: scikit-learn's 8x8 digits (`--data digits`)",
          reference="softedge's own small CNN for the 8x8 digits")
def build(input_shape=(8, 8, 1), num_classes=10, keras_module=keras, batch_norm=True) -> keras.Model:
    layers = keras_module.layers
    inputs = keras_module.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=not batch_norm, name="conv0")(inputs)
    if batch_norm:
        x = layers.BatchNormalization(momentum=0.9, name="bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=not batch_norm, name="depthwise1")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(32, 1, use_bias=not batch_norm, name="pointwise1")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras_module.Model(inputs, outputs, name="digits_cnn")
