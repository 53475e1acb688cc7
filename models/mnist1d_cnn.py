"""A small 1-D CNN for MNIST-1D (sequences of length 40, 10 classes), logits out.

Conv-BN-ReLU x3 (32 channels; the BNs fold into the convs for QAT), flatten, dense. BN momentum
0.9: with a few thousand samples, 0.99 leaves the moving statistics behind the weights.

`keras_module` builds the same architecture with another Keras-compatible module (tf_keras for
the tfmot bridge and baseline); `batch_norm=False` gives the architecture after BN folding
(convs with biases, no BN), the same layer names, so folded weights can be copied in.
"""

import keras

from models.registry import register


@register("mnist1d_cnn")
def build(input_shape=(40, 1), num_classes=10, keras_module=keras, batch_norm=True) -> keras.Model:
    layers = keras_module.layers
    inputs = keras_module.Input(shape=input_shape, name="signal")
    x = inputs
    for i, (kernel, stride) in enumerate([(5, 1), (3, 2), (3, 2)]):
        x = layers.Conv1D(32, kernel, strides=stride, padding="same", use_bias=not batch_norm, name=f"conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras_module.Model(inputs, outputs, name="mnist1d_cnn")
