"""harden(model) -> hard_model: every smooth rounding swapped for hard rounding on the same grid.

For each quantized kernel layer, q = clip(round(W / s), -qmax, qmax) (ties to even, the
straight-through forward the model trained against as alpha -> inf) is baked as W = q * s into
the matching `hard_layers` layer; each `QuantizeActivation` becomes a `FakeQuant` on its nudged
range, a `QuantAveragePooling` becomes FakeQuant -> `HardAveragePooling` -> FakeQuant, both on
its input's grid (the pooled tensor keeps its input's scale, as in TFLite; inside
`hard_pooling.device_rounding` the pooling rounds exact ties as the device does), and a
`QuantChannelAffine` becomes MUL (constant on its int8 grid) -> FakeQuant -> ADD (likewise).

Biases are baked onto the grid TFLite stores them on, int32 with step s_in * s_w (s_in the step
of the layer's int8 input, s_w the kernel step of the channel): b = round(b / (s_in s_w)) s_in s_w.
Without it the converter rounds them (error up to s_in s_w / 2, which at 3-bit weights is a
sizeable fraction of an output step) and the TFLite model drifts from the hard Keras model. The result is a plain Keras 3 model with no training state (no alpha, no moving
averages, no learned steps as trainable weights) that `tflite.convert` turns into int8.
"""

from __future__ import annotations

import keras
import numpy as np

from export.hard_layers import FakeQuant, HardConstantOp
from export.hard_pooling import HardAveragePooling
from export.preflight import check_model_finite
from toolkit.errors import ConfigError
from toolkit.layer_types import layer_type_of
from toolkit.qat_layers import (
    QUANT_KERNEL_LAYERS,
    QuantAdd,
    QuantAveragePooling,
    QuantChannelAffine,
    QuantizeActivation,
)
from toolkit.quantizers import (
    constant_fake_quant,
    constant_range,
    exported_range,
    nudged_grid,
)
from toolkit.rewrite import is_quantized_model

__all__ = ["harden"]


def _common(layer, kernel_shape, scale):
    return dict(
        kernel_shape=kernel_shape,
        scale_shape=(scale.size,),
        weight_bits=layer.weight_quantizer.bits,
        use_bias=layer.use_bias,
        activation=keras.activations.serialize(layer.activation),
        name=layer.name,
    )


def _hard_layer(layer, bake_bias: bool = True):
    """(hard layer, [kernel, kernel_scale, (bias)]) for one quantized kernel layer."""
    q = layer.weight_quantizer.integers(layer.float_kernel).numpy()
    scale = np.asarray(layer.weight_quantizer.scale(layer.float_kernel), np.float32)
    description = layer_type_of(layer)
    if description is None or description.hard_class is None:
        raise ConfigError(f"Layer {layer.name!r} ({type(layer).__name__}) has a weight quantizer that harden does not know.")
    description.check_exportable(layer)
    baked = description.hard_layout((q * scale).astype(np.float32))  # W = q * s, on the grid, stored layout
    hard = description.hard_class(**_common(layer, baked.shape, scale), **description.hard_options(layer))
    weights = [baked, scale.reshape(-1)]
    if layer.use_bias:
        # The bias the layer computes with: on the int32 grid where its input is int8 (`grid_bias`).
        weights.append(np.asarray(layer.grid_bias() if bake_bias else layer.bias, np.float32))
    return hard, weights


def _hard_constant(op: str, variable, name: str) -> HardConstantOp:
    """The constant of a `QuantChannelAffine` on its int8 grid, with that grid's nudged range."""
    values = constant_fake_quant(variable).numpy()
    lo, hi = exported_range(nudged_grid(*constant_range(variable), 8))
    return HardConstantOp(op, values, float(lo), float(hi), name=name)


def harden(model: keras.Model, bake_bias: bool = True) -> keras.Model:
    """A hard copy of a softedge quantized model (see the module docstring).

    The hard layers store weights as int8; `tflite.convert(..., "int4-weights")` packs them.

    Args:
        model: the output of `toolkit.quantize` (trained or not), or a tfmot bridge model.
        bake_bias: put biases on TFLite's int32 grid (default), where the quantized model
            computes with them (`grid_bias`): the hard model is then the quantized model at
            alpha = inf. Without it the float biases are kept and TFLite rounds them itself.
    """
    from toolkit.tfmot_bridge import is_tfmot_model

    if is_tfmot_model(model):  # a tfmot bridge model (tf_keras): its quantizers switch to hard mode
        from toolkit.tfmot_bridge import hard_tflite_model

        return hard_tflite_model(model)
    if not is_quantized_model(model):
        raise ConfigError(f"Model {model.name!r} has no softedge quantized layer to harden; quantize it first, "
                          "or convert it as a float model with post-training quantization.")
    check_model_finite(model)   # a NaN weight, step or range: one line naming it, before any work
    weights_by_name = {}
    pools = {}  # hard FakeQuant name -> the QuantAveragePooling it opens
    affines = {}  # name -> the QuantChannelAffine whose final ADD keeps its name

    def clone_layer(layer):
        if isinstance(layer, QUANT_KERNEL_LAYERS):
            hard, weights = _hard_layer(layer, bake_bias)
            weights_by_name[layer.name] = weights
            return hard
        if isinstance(layer, QuantAveragePooling):  # expanded by call_layer, below
            pools[layer.input_quant_name] = layer
            lo, hi = exported_range(layer.quantizer.grid())
            return FakeQuant(lo, hi, num_bits=layer.quantizer.bits, name=layer.input_quant_name)
        if isinstance(layer, QuantizeActivation):
            lo, hi = exported_range(layer.quantizer.grid())
            return FakeQuant(lo, hi, num_bits=layer.quantizer.bits, name=layer.name)
        if isinstance(layer, QuantChannelAffine):  # MUL -> FakeQuant -> ADD, expanded by call_layer
            affines[layer.name] = layer
            return _hard_constant("add", layer.offset, layer.name)
        if isinstance(layer, QuantAdd):   # the device mode is training's: the converter takes an Add
            return keras.layers.Add.from_config({k: v for k, v in layer.get_config().items() if k != "device_arithmetic"})
        clone = layer.__class__.from_config(layer.get_config())
        if layer.weights:
            weights_by_name[layer.name] = layer.get_weights()
        return clone

    def call_layer(layer, *args, **kwargs):
        """A QuantAveragePooling becomes FakeQuant -> pooling -> FakeQuant on the same grid, which
        the converter turns into one AVERAGE_POOL_2D keeping its input's scale and zero point."""
        affine = affines.get(layer.name)
        if affine is not None:
            product = _hard_constant("mul", affine.scale, f"{layer.name}_mul")(args[0])
            lo, hi = exported_range(affine.product_quantizer.grid())
            product = FakeQuant(lo, hi, num_bits=affine.product_quantizer.bits, name=f"{layer.name}_product_quant")(product)
            return layer(product)
        outputs = layer(*args, **kwargs)
        pool = pools.get(layer.name)
        if pool is None:
            return outputs
        pooling = HardAveragePooling(pool.pool_config, layer.min_value, layer.max_value, layer.num_bits,
                                     name=pool.pool.name)
        return FakeQuant(layer.min_value, layer.max_value, num_bits=layer.num_bits, name=f"{pool.name}_quant")(pooling(outputs))

    hard_model = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer)
    # Named as the float model it came from: the converter prefixes every TFLite tensor name
    # with the model's name, and a longer name is bytes in the flatbuffer (MobileNetV1-0.25:
    # 4.4 KB, enough to make the file larger than post-training int8's).
    hard_model.name = model.name.removesuffix("_quantized")
    for layer in hard_model.layers:
        if layer.name in weights_by_name:
            layer.set_weights(weights_by_name[layer.name])
    return hard_model

