"""keras.applications MobileNetV2, width 0.35, at 96x96x3 (-> 2 classes by default), softmax out.

The keras.applications definition itself (Sandler et al. 2018, arXiv:1801.04381), built with
`weights=None` (no download), `include_top=True`: inverted residual blocks (1x1 expand - BN -
ReLU6 - DepthwiseConv2D 3x3 - BN - ReLU6 - 1x1 project - BN, added to the input where the shape
allows), ZeroPadding2D before the strided depthwise convs, a final 1x1 conv to 1280 channels,
GlobalAveragePooling2D and Dense softmax. A common alternative to MobileNetV1-0.25 for visual
wake words; 399k trainable parameters at 2 classes.
"""

import keras

from models.registry import register


@register("mobilenet_v2_035", (96, 96, 3), 2,
          real_data="Visual Wake Words or any small image set, 96x96 RGB: x_*: float32 (N, 96, 96, 3) in [0, 1], "
                    "y_*: int (N,)",
          reference="keras.applications MobileNetV2, width 0.35")
def build(input_shape=(96, 96, 3), num_classes=2) -> keras.Model:
    base = keras.applications.MobileNetV2(input_shape=input_shape, alpha=0.35, include_top=True, weights=None,
                                          classes=num_classes, classifier_activation="softmax")
    return keras.Model(base.inputs[0], base.outputs[0], name="mobilenet_v2_035")
