"""`quantize(model, scheme)`: rewrite a Keras 3 model into a trainable quantized one.

The rewrite, in one visible pass over the layer graph:
1. A Sequential becomes functional; a SeparableConv2D is split into the DepthwiseConv2D and 1x1
   Conv2D that TFLite runs (`separable`); BatchNormalization after a conv/dense is folded into
   it (`batchnorm_folding`).
2. Dense, Conv1D, Conv2D and DepthwiseConv2D become their `qat_layers` twins with the same
   config and weights and a `WeightQuantizer` from the scheme.
3. `QuantizeActivation` layers go where the converted TFLite model holds an int8 tensor, so
   that the trained graph is the converted one:
   - the model inputs;
   - the output of a kernel layer (after its fused linear/relu/relu6 activation), of Add,
     Concatenate and average pooling, unless its only consumer is a ReLU/ReLU6 layer that
     TFLite fuses into it (then after that activation);
   - softmax / sigmoid / tanh outputs, on the fixed ranges TFLite's int8 kernels require
     (a kernel layer with such an activation is split: linear kernel, quantize, activation,
     quantize).
   A BatchNormalization with no conv/dense before it becomes `QuantChannelAffine`: the MUL by
   an int8 constant, requantize, ADD of an int8 constant that TFLite runs for it (its output
   quantized as an Add's).
   Max pooling, Flatten, Reshape, Dropout, padding and Identity keep their input's grid.
   AveragePooling1D/2D keeps it too, as TFLite's int8 AVERAGE_POOL_2D does: where the pooling is
   the only reader of a layer's output, that layer's quantizer and the pooling become one
   `QuantAveragePooling`, which rounds the average back onto the input grid as the kernel does
   (a Dropout between them moves into it, after the quantizer).
   (An average pooling of the model input, or of a tensor other layers also read, gets its own
   grid, and the converter adds a QUANTIZE after the pooling.)
4. Any other layer raises `UnsupportedLayerError` naming it, unless the scheme says
   `unsupported="float"` or an override marks it `"float": true`. A layer left in float is
   quantized on both sides (its input by its producer's quantizer, its output by one of its
   own where quantized layers read it), so no other layer's integers change.
"""

from __future__ import annotations

import keras
import numpy as np

from toolkit.batchnorm_folding import fold_batch_norm
from toolkit.errors import ConfigError, UnsupportedLayerError
from toolkit.graph import consumers, producers, to_functional
from toolkit.layer_types import grid_layer_classes
from toolkit.qat_layers import (
    QUANT_KERNEL_LAYERS,
    QUANT_LAYERS,
    QuantAdd,
    QuantAveragePooling,
    QuantChannelAffine,
    QuantizeActivation,
)
from toolkit.quantizers import ActivationQuantizer, WeightQuantizer
from toolkit.scheme import QuantScheme
from toolkit.separable import separable_parts, split_separable_convs

__all__ = ["ModelRewrite", "calibrate", "is_quantized_model", "quantize", "quantized_layers"]

L = keras.layers
# The layers without a kernel, by the grid of their output (`toolkit.layer_types.GRID_LAYER_TYPES`).
PASS_THROUGH = grid_layer_classes("input")
RESCALING = grid_layer_classes("own")
AVERAGE_POOLING = grid_layer_classes(average_pooling=True)
IDENTITY_AT_INFERENCE = grid_layer_classes(identity_at_inference=True)
INPUTS_ON_OUTPUT_GRID = grid_layer_classes(inputs_on_output_grid=True)
FUSED_ACTIVATIONS = ("linear", "relu", "relu6")
# TFLite int8 kernels fix these output ranges (scale 1/256 zp -128; tanh 1/128 zp 0).
FIXED_RANGE_ACTIVATIONS = {"softmax": (0.0, 255 / 256), "sigmoid": (0.0, 255 / 256), "tanh": (-1.0, 127 / 128)}


def _activation_name(layer) -> str | None:
    """The activation a layer applies: a name for Activation/ReLU/Softmax layers, None otherwise."""
    if isinstance(layer, L.ReLU):
        config = layer.get_config()
        if config.get("negative_slope", 0) == 0 and config.get("threshold", 0) == 0:
            if config.get("max_value") is None:
                return "relu"
            if config.get("max_value") == 6:
                return "relu6"
        return "relu_variant"
    if isinstance(layer, L.Softmax):
        return "softmax"
    if isinstance(layer, L.Activation):
        return layer.get_config()["activation"]
    return None


def _fuses_into_producer(layer) -> bool:
    return _activation_name(layer) in ("relu", "relu6")


def quantized_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` that carry a weight quantizer."""
    return [layer for layer in model.layers if hasattr(layer, "weight_quantizer")]


def is_quantized_model(model: keras.Model) -> bool:
    """Whether `model` came out of `quantize` (has softedge QAT layers)."""
    return any(isinstance(layer, (QuantizeActivation, *QUANT_KERNEL_LAYERS)) for layer in model.layers)


def check_scheme_fits(model: keras.Model, scheme: QuantScheme) -> None:
    """ConfigError when an override of `scheme` matches no layer `quantize` would see in `model`
    (after separable convolutions are split, their names counting for both halves, and batch
    norms folded), before any training."""
    functional = to_functional(model)
    _check_overrides_match(fold_batch_norm(split_separable_convs(functional)), scheme, model.name,
                           separable_parts(functional))


def _check_overrides_match(source: keras.Model, scheme: QuantScheme, model_name: str, part_of: dict[str, str]) -> None:
    names = [layer.name for layer in source.layers] + sorted(set(part_of.values()))
    unmatched = scheme.unmatched_overrides(names)
    if unmatched:
        raise ConfigError(f"Scheme override {unmatched[0]!r} matches no layer of model {model_name!r} (a key is a regular "
                          f"expression matched in full against: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}).")


def quantize(model: keras.Model, scheme: QuantScheme | None = None, calibration_data=None) -> keras.Model:
    """Returns a new quantization-aware model with `model`'s topology and weights.

    Args:
        model: a Keras 3 Sequential or functional model.
        scheme: a `QuantScheme` (default W8A8, soft rounding).
        calibration_data: optional batches (array or tf.data) that set the activation ranges
            before training (see `calibrate`); without it the ranges are set by the first
            training batch.

    Raises:
        UnsupportedLayerError: for a layer softedge cannot quantize (named, with its class).
        ConfigError: for a model whose graph cannot be read.
    """
    scheme = scheme or QuantScheme()
    if not isinstance(scheme, QuantScheme):
        raise ConfigError(f"Expected a QuantScheme. Received: {type(scheme).__name__}")
    quantized = ModelRewrite(model, scheme).rewritten()
    if calibration_data is not None:
        calibrate(quantized, calibration_data)
    return quantized


class ModelRewrite:
    """One `quantize` pass: the source graph (functional, separable convolutions split, batch
    norms folded) cloned layer by layer (`clone_layer`: each layer's QAT form) and call by call
    (`call_layer`: where quantizers go), then the float weights copied in (`copy_weights`)."""

    def __init__(self, model: keras.Model, scheme: QuantScheme):
        self.scheme = scheme
        functional = to_functional(model)
        self.part_of = separable_parts(functional)     # a SeparableConv2D's halves -> its name
        self.source = fold_batch_norm(split_separable_convs(functional))
        _check_overrides_match(self.source, scheme, model.name, self.part_of)
        self.consumed_by = consumers(self.source)
        self.float_names = _check_supported(self.source, scheme, self.part_of)
        self.pooled_by, self.between_pools = _average_pooled_outputs(self.source, self.float_names)
        self.quantized_inputs: dict[int, object] = {}          # id(model input tensor) -> its quantized tensor
        self.deferred: dict[str, QuantizeActivation] = {}      # average pooling name -> its input's quantizer

    def settings(self, name: str):
        """The scheme's settings for the layer `name` (a separable half: its SeparableConv2D's too)."""
        return self.scheme.for_layer(name, self.part_of.get(name))

    def rewritten(self) -> keras.Model:
        quantized = keras.models.clone_model(self.source, clone_function=self.clone_layer,
                                             call_function=self.call_layer)
        quantized.name = f"{self.source.name}_quantized"
        self.copy_weights(quantized)
        return quantized

    # ------------------------------------------------------------------ quantizers

    def activation_quantizer(self, bits: int, name: str, fixed_range=None) -> QuantizeActivation:
        scheme = self.scheme
        return QuantizeActivation(
            ActivationQuantizer(bits=bits, symmetric=scheme.symmetric_activations, rounding=scheme.activation_rounding,
                                ema_decay=scheme.ema_decay, fixed_range=fixed_range, alpha=scheme.alpha),
            name=name,
        )

    def finish(self, layer_name: str, quantizer: QuantizeActivation, tensor):
        """Applies a layer's output quantizer, or hands it to the average pooling that reads it."""
        if layer_name in self.pooled_by:
            self.deferred[self.pooled_by[layer_name]] = quantizer
            return tensor
        return quantizer(tensor)

    def quantize_input(self, tensor):
        """Model inputs are quantized once, however many layers read them."""
        history = getattr(tensor, "_keras_history", None)
        if history is None or not isinstance(history.operation, L.InputLayer):
            return tensor
        key = id(tensor)
        if key not in self.quantized_inputs:
            self.quantized_inputs[key] = self.activation_quantizer(
                self.scheme.activation_bits, f"{history.operation.name}_quant")(tensor)
        return self.quantized_inputs[key]

    # ------------------------------------------------------------------ the clone

    def clone_layer(self, layer):
        """The layer's QAT form: a kernel layer's twin with its WeightQuantizer, a lone batch norm's
        QuantChannelAffine, or a copy (a float layer, a layer without a kernel)."""
        scheme, config = self.scheme, layer.get_config()
        if isinstance(layer, L.BatchNormalization) and layer.name not in self.float_names:  # nothing to fold into
            bits = self.settings(layer.name).activation_bits
            return QuantChannelAffine(
                layer.moving_mean.shape[0], name=layer.name,
                product_quantizer=ActivationQuantizer(bits=bits, symmetric=scheme.symmetric_activations,
                                                      rounding=scheme.activation_rounding, ema_decay=scheme.ema_decay))
        if type(layer) is L.Add and layer.name not in self.float_names:
            return QuantAdd.from_config(config)   # can follow the device's ADD (device_arithmetic)
        replacement = QUANT_LAYERS.get(type(layer))
        if replacement is None or layer.name in self.float_names:
            return layer.__class__.from_config(config)
        settings = self.settings(layer.name)
        per_channel = settings.per_channel and replacement.layer_type.per_channel
        config["weight_quantizer"] = WeightQuantizer(
            bits=settings.weight_bits, rounding=settings.rounding, per_channel=per_channel,
            learned_step=settings.learned_step, alpha=scheme.alpha).get_config()
        if config.get("activation") in FIXED_RANGE_ACTIVATIONS:
            config["activation"] = "linear"  # applied after the logits are quantized, in call_layer
        return replacement.from_config(config)

    def call_layer(self, layer, *args, **kwargs):
        """Calls the cloned layer and puts the quantizers the converted graph has around it."""
        args, kwargs = keras.tree.map_structure(self.quantize_input, (args, kwargs))
        if layer.name in self.deferred:  # an average pooling on its input's grid
            quantizer = self.deferred.pop(layer.name)
            between = [keras.layers.serialize(self.source.get_layer(name))
                       for name in self.between_pools.get(layer.name, [])]
            return QuantAveragePooling(keras.layers.serialize(layer), quantizer.name, quantizer.quantizer,
                                       between=between, name=layer.name)(args[0])
        if any(layer.name in names for names in self.between_pools.values()):
            return args[0]  # moved into the QuantAveragePooling after it
        outputs = layer(*args, **kwargs)
        if layer.name in self.float_names:
            return self._float_boundary(layer, outputs)
        return self._quantized_output(layer, outputs)

    def _float_boundary(self, layer, outputs):
        """A float layer's output back on an int8 grid where a quantized layer reads it: without
        it the converter keeps the next kernel layer in float, with float weights (its trained
        integers lost, the file float-sized)."""
        readers = [reader for reader in self.consumed_by.get(layer.name, []) if reader.name not in self.float_names]
        if not readers:
            return outputs
        return self.activation_quantizer(self.settings(layer.name).activation_bits, f"{layer.name}_quant")(outputs)

    def _quantized_output(self, layer, outputs):
        """The output quantizer of a quantized layer (after a ReLU TFLite fuses into it); none
        where the only reader puts its inputs on its own output's grid (Concatenate: the
        converter writes the layer straight onto the concatenation's grid)."""
        original = self.source.get_layer(layer.name)
        bits = self.settings(layer.name).activation_bits
        after = self.consumed_by.get(layer.name, [])
        fused_next = len(after) == 1 and _fuses_into_producer(after[0]) and after[0].name not in self.float_names
        on_reader_grid = (len(after) == 1 and isinstance(after[0], INPUTS_ON_OUTPUT_GRID)
                          and after[0].name not in self.float_names)
        fixed_range = (original.get_config().get("activation") if isinstance(original, tuple(QUANT_LAYERS))
                       else _activation_name(original)) in FIXED_RANGE_ACTIVATIONS
        if on_reader_grid and not fixed_range and not isinstance(original, PASS_THROUGH):
            return outputs
        if isinstance(original, tuple(QUANT_LAYERS)):
            activation = original.get_config().get("activation", "linear")
            if activation in FIXED_RANGE_ACTIVATIONS:
                outputs = self.activation_quantizer(bits, f"{layer.name}_quant")(outputs)
                outputs = L.Activation(activation, name=f"{layer.name}_{activation}")(outputs)
                return self.finish(layer.name, self.activation_quantizer(
                    bits, f"{layer.name}_{activation}_quant", FIXED_RANGE_ACTIVATIONS[activation]), outputs)
            if activation == "linear" and fused_next:
                return outputs
            return self.finish(layer.name, self.activation_quantizer(bits, f"{layer.name}_quant"), outputs)
        if isinstance(original, (*RESCALING, L.BatchNormalization)):
            if fused_next:
                return outputs
            return self.finish(layer.name, self.activation_quantizer(bits, f"{layer.name}_quant"), outputs)
        name = _activation_name(original)
        if name in FIXED_RANGE_ACTIVATIONS:
            return self.finish(layer.name, self.activation_quantizer(bits, f"{layer.name}_quant",
                                                                     FIXED_RANGE_ACTIVATIONS[name]), outputs)
        if name is not None:  # relu, relu6, linear
            return self.finish(layer.name, self.activation_quantizer(bits, f"{layer.name}_quant"), outputs)
        return outputs  # pass-through layers keep their input's grid

    def copy_weights(self, quantized: keras.Model) -> None:
        """The source's (folded) float weights into the QAT layers; learned steps re-initialized."""
        for layer in quantized.layers:
            if isinstance(layer, (L.InputLayer, QuantizeActivation)) or not layer.weights:
                continue
            original = self.source.get_layer(layer.name)
            if isinstance(layer, QuantChannelAffine):
                layer.set_from_batch_norm(original)
            elif hasattr(layer, "weight_quantizer"):
                weights = original.get_weights()
                layer.float_kernel.assign(weights[0])
                if layer.use_bias:
                    layer.bias.assign(weights[1])
                layer.weight_quantizer.reset_step(layer.float_kernel)
            else:
                layer.set_weights(original.get_weights())


def _average_pooled_outputs(model: keras.Model, float_names: set[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({layer name -> the AveragePooling1D/2D that is the only reader of its output},
    {pooling name -> the layers between them}).

    The layer is a quantized one that gives its output a quantizer (not the model input, not a
    float layer); between it and the pooling there may be a chain of layers that are the
    identity at inference (Dropout, as in the MLPerf Tiny DS-CNN), each read only by the next.
    """
    produced_by, consumed_by = producers(model), consumers(model)
    pooled, between = {}, {}
    for pool in model.layers:
        if not isinstance(pool, AVERAGE_POOLING) or pool.name in float_names:
            continue
        chain, reader = [], pool
        sources = produced_by.get(pool.name, [])
        while len(sources) == 1 and isinstance(sources[0], IDENTITY_AT_INFERENCE) and sources[0].name not in float_names \
                and [layer.name for layer in consumed_by.get(sources[0].name, [])] == [reader.name]:
            reader = sources[0]
            chain.insert(0, reader.name)
            sources = produced_by.get(reader.name, [])
        if len(sources) != 1:
            continue
        source = sources[0]
        if isinstance(source, PASS_THROUGH) or source.name in float_names:
            continue
        if [layer.name for layer in consumed_by.get(source.name, [])] == [reader.name]:
            pooled[source.name] = pool.name
            between[pool.name] = chain
    return pooled, between


def _check_supported(model: keras.Model, scheme: QuantScheme, part_of: dict[str, str]) -> set[str]:
    """Names of the layers left in float; raises for an unsupported layer the scheme does not allow."""
    float_names = set()
    for layer in model.layers:
        if scheme.for_layer(layer.name, part_of.get(layer.name)).float:
            float_names.add(layer.name)
            continue
        reason = _unsupported_reason(layer)
        if reason is None:
            continue
        if scheme.unsupported == "float":
            float_names.add(layer.name)
        else:
            raise UnsupportedLayerError(
                f"Cannot quantize layer {layer.name!r} ({type(layer).__name__}): {reason}. "
                f"Leave it in float with QuantScheme(overrides={{{layer.name!r}: {{'float': True}}}}) "
                "or QuantScheme(unsupported='float')."
            )
    return float_names


def _unsupported_reason(layer) -> str | None:
    if type(layer) in QUANT_LAYERS:
        activation = layer.get_config().get("activation", "linear")
        if activation in FUSED_ACTIVATIONS or activation in FIXED_RANGE_ACTIVATIONS:
            return None
        return f"its activation {activation!r} has no int8 TFLite kernel that softedge models"
    if isinstance(layer, PASS_THROUGH + RESCALING):
        return None
    name = _activation_name(layer)
    if name is not None:
        if name in FUSED_ACTIVATIONS or name in FIXED_RANGE_ACTIVATIONS:
            return None
        return f"activation {name!r} is not supported"
    if isinstance(layer, L.BatchNormalization):  # folding left only those with nothing to fold into
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(layer.input.shape)
        if axis is None or axis % rank != rank - 1:
            return f"a BatchNormalization over axis {layer.axis} (TFLite's MUL/ADD form needs the last axis)"
        return None
    if isinstance(layer, (L.RNN, L.Bidirectional)):
        return ("a recurrent layer has no int8 form in softedge (build it with unroll=True and a fixed sequence "
                "length, or the TFLite converter cannot convert it)")
    return "softedge has no quantized form of this layer type"


def calibrate(model: keras.Model, data, steps: int | None = None) -> None:
    """Sets activation ranges by running batches through `model` in training mode.

    No weight is updated (no optimizer step); dropout is active but only ranges are recorded.
    `data`: an array (split into batches of 64), or an iterable of batches / (x, y) pairs.
    """
    if isinstance(data, np.ndarray):
        data = [data[i:i + 64] for i in range(0, len(data), 64)]
    for step, batch in enumerate(data):
        if steps is not None and step >= steps:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        model(x, training=True)
