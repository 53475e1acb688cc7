"""Split each SeparableConv2D into the two layers TFLite runs it as (float, exact).

    SeparableConv2D(filters, k, strides, padding, dilation, depth_multiplier m, activation, bias)(x)
      = Conv2D(filters, 1, activation, bias)(DepthwiseConv2D(k, strides, padding, dilation, m,
                                                             no bias, linear)(x))

with the depthwise kernel (kh, kw, c_in, m) and the pointwise kernel (1, 1, c_in m, filters)
copied as they are. The converter emits the same pair (DEPTHWISE_CONV_2D, CONV_2D) with an int8
tensor between them, so after the split `quantize` gives each kernel its own quantizer and
grid, the intermediate tensor its activation quantizer, and a BatchNormalization after the
layer folds into the pointwise Conv2D. The two layers are named `<name>_depthwise` and
`<name>_pointwise`.
"""

from __future__ import annotations

import keras

from toolkit.graph import to_functional

__all__ = ["separable_parts", "split_separable_convs"]


def _halves(layer: keras.layers.SeparableConv2D) -> tuple[keras.layers.DepthwiseConv2D, keras.layers.Conv2D]:
    config = layer.get_config()
    depthwise = keras.layers.DepthwiseConv2D(
        config["kernel_size"], strides=config["strides"], padding=config["padding"], data_format=config["data_format"],
        dilation_rate=config["dilation_rate"], depth_multiplier=config["depth_multiplier"], use_bias=False,
        name=f"{layer.name}_depthwise")
    pointwise = keras.layers.Conv2D(config["filters"], 1, data_format=config["data_format"], activation=config["activation"],
                                    use_bias=config["use_bias"], name=f"{layer.name}_pointwise")
    return depthwise, pointwise


def separable_parts(model: keras.Model) -> dict[str, str]:
    """{part name: the SeparableConv2D it comes from} for the two layers each SeparableConv2D of
    `model` is split into: a scheme override naming the SeparableConv2D applies to both."""
    return {f"{layer.name}_{part}": layer.name for layer in model.layers
            if isinstance(layer, keras.layers.SeparableConv2D) for part in ("depthwise", "pointwise")}


def split_separable_convs(model: keras.Model) -> keras.Model:
    """A new functional model with every SeparableConv2D split in two (see the module docstring);
    `model` itself when it has none."""
    model = to_functional(model)
    if not any(isinstance(layer, keras.layers.SeparableConv2D) for layer in model.layers):
        return model
    halves = {}

    def call_layer(layer, *args, **kwargs):
        if not isinstance(layer, keras.layers.SeparableConv2D):
            return layer(*args, **kwargs)
        depthwise, pointwise = halves[layer.name] = _halves(layer)
        return pointwise(depthwise(args[0]))

    split = keras.models.clone_model(model, call_function=call_layer)
    for layer in model.layers:
        if isinstance(layer, keras.layers.SeparableConv2D):
            depthwise, pointwise = halves[layer.name]
            weights = layer.get_weights()
            depthwise.set_weights(weights[:1])
            pointwise.set_weights(weights[1:])
        elif layer.weights:
            split.get_layer(layer.name).set_weights(layer.get_weights())
    return split
