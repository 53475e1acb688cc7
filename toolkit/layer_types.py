"""One description per quantizable layer type, read by every stage that needs to know what a
layer's kernel is: `quantize` (its QAT form, per-channel or not), BatchNormalization folding,
`harden` (its hard form and stored layout), the TFLite weight layout that `weight_mismatches`
compares, and the tfmot bridge.

For a kernel layer y = act(x (*) W + b) a `KernelLayerType` states:

    name            "dense", "conv1d", "conv2d", "depthwise"
    keras_class     the float Keras 3 layer
    kernel_axes     the Keras kernel's axes, e.g. ("kh", "kw", "in", "out")
    channel_axes    the kernel axes that index output channels: one step per output channel, and
                    the axes a BatchNormalization's factor f_c scales (W'[..., c] = W[..., c] f_c)
    per_channel     whether per-channel steps convert (Dense: no, the converter fails with
                    "mismatched quantized axes" on a per-channel (in, out) kernel)
    tflite_ops      the TFLite ops it becomes
    hard_layout     the kernel as the hard layer stores it, 4-D for convolutions: Conv1D as
                    (1, k, in, out) (a per-channel fake-quant on a 3-D kernel does not convert),
                    depthwise as (kh, kw, 1, in m), TFLite's own channel order c m + j
    tflite_layout   the hard layout as TFLite stores its weights: dense (out, in), conv
                    (out, kh, kw, in), depthwise (1, kh, kw, in m)

and, registered by the stages that own them (adding a layer type is one description here and a
registration in each form's module, `register_qat` in toolkit.qat_layers and `register_hard`
in export.hard_layers): its QAT class and its hard class.

The layers without a kernel that `quantize` takes are described here too, one `GridLayerType`
each: which int8 grid their output is on in the converted graph. "input" layers keep their
input's grid (TFLite's RESHAPE, MAX_POOL_2D, PAD, ... take one grid in and out), "own" layers
get a quantizer of their own (ADD, CONCATENATION and MEAN requantize; AVERAGE_POOL_2D keeps its
input's grid too, which `quantize` models with `QuantAveragePooling`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from toolkit.errors import ConfigError

__all__ = ["GRID_LAYER_TYPES", "LAYER_TYPES", "GridLayerType", "KernelLayerType", "grid_layer_classes",
           "layer_type_named", "layer_type_of", "register_hard", "register_qat"]


@dataclass
class KernelLayerType:
    name: str
    keras_class: type
    kernel_axes: tuple[str, ...]
    channel_axes: tuple[int, ...]
    per_channel: bool
    tflite_ops: tuple[str, ...]
    hard_layout: Callable[[np.ndarray], np.ndarray]
    tflite_layout_of_hard: Callable[[np.ndarray], np.ndarray]
    qat_class: type | None = field(default=None, repr=False)
    hard_class: type | None = field(default=None, repr=False)

    @property
    def convolution(self) -> bool:
        return self.name != "dense"

    def tflite_layout(self, kernel: np.ndarray) -> np.ndarray:
        """A kernel in the Keras layout -> TFLite's weight layout."""
        return self.tflite_layout_of_hard(self.hard_layout(kernel))

    def fold(self, kernel: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """W'[..., c] = W[..., c] f_c, c indexing output channels over `channel_axes`."""
        channel_shape = tuple(kernel.shape[a] for a in self.channel_axes)
        return kernel * np.asarray(factor).reshape(channel_shape)

    def hard_options(self, layer) -> dict:
        """The configuration of the hard layer beyond its kernel (strides, padding, ...)."""
        if not self.convolution:
            return {}
        options = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)
        if self.name == "depthwise":
            options["depth_multiplier"] = int(layer.depth_multiplier)
        return options

    def check_exportable(self, layer) -> None:
        """Raises ConfigError for a configuration the TFLite export does not take."""
        if not self.convolution:
            return
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ConfigError(f"Layer {layer.name!r} ({type(layer).__name__}) uses {layer.data_format}; "
                              "TFLite export needs channels_last.")
        if getattr(layer, "padding", "valid") not in ("valid", "same"):
            raise ConfigError(f"Layer {layer.name!r} ({type(layer).__name__}) uses padding={layer.padding!r}; "
                              "export supports 'valid' and 'same'.")
        if getattr(layer, "groups", 1) != 1:
            raise ConfigError(f"Layer {layer.name!r} ({type(layer).__name__}) uses groups={layer.groups}; "
                              "export supports groups=1.")


def _conv_to_tflite(kernel):  # (kh, kw, in, out) -> (out, kh, kw, in)
    return np.transpose(kernel, (3, 0, 1, 2))


LAYER_TYPES: dict[str, KernelLayerType] = {
    description.name: description
    for description in (
        KernelLayerType("dense", keras.layers.Dense, ("in", "out"), (-1,), per_channel=False,
                        tflite_ops=("FULLY_CONNECTED",), hard_layout=lambda w: w,
                        tflite_layout_of_hard=lambda w: np.transpose(w)),
        KernelLayerType("conv1d", keras.layers.Conv1D, ("k", "in", "out"), (-1,), per_channel=True,
                        tflite_ops=("EXPAND_DIMS", "CONV_2D", "RESHAPE"), hard_layout=lambda w: w[None],
                        tflite_layout_of_hard=_conv_to_tflite),
        KernelLayerType("conv2d", keras.layers.Conv2D, ("kh", "kw", "in", "out"), (-1,), per_channel=True,
                        tflite_ops=("CONV_2D",), hard_layout=lambda w: w, tflite_layout_of_hard=_conv_to_tflite),
        KernelLayerType("depthwise", keras.layers.DepthwiseConv2D, ("kh", "kw", "in", "multiplier"), (-2, -1),
                        per_channel=True, tflite_ops=("DEPTHWISE_CONV_2D",),
                        hard_layout=lambda w: w.reshape(w.shape[0], w.shape[1], 1, -1),
                        tflite_layout_of_hard=lambda w: np.transpose(w, (2, 0, 1, 3))),
    )
}


def layer_type_of(layer) -> KernelLayerType | None:
    """The description of a float, QAT or hard kernel layer (exact class match), or None."""
    for description in LAYER_TYPES.values():
        if type(layer) in (description.keras_class, description.qat_class, description.hard_class):
            return description
    return None


def layer_type_named(name: str) -> KernelLayerType:
    """The description called `name`, or of the Keras class called `name` (the tfmot bridge's
    tf_keras layers are matched by class name)."""
    for description in LAYER_TYPES.values():
        if name in (description.name, description.keras_class.__name__):
            return description
    raise ConfigError(f"Unknown kernel layer type {name!r}. Expected one of {', '.join(LAYER_TYPES)}.")


def _register(slot: str, name: str):
    def decorate(cls):
        description = LAYER_TYPES[name]
        setattr(description, slot, cls)
        cls.layer_type = description
        return cls

    return decorate


def register_qat(name: str):
    """Class decorator: `cls` is the QAT form of the layer type `name`."""
    return _register("qat_class", name)


def register_hard(name: str):
    """Class decorator: `cls` is the hard (exported) form of the layer type `name`."""
    return _register("hard_class", name)


@dataclass(frozen=True)
class GridLayerType:
    """A layer without a kernel: the int8 grid of its output in the converted graph.

    output_grid: "input" (its input's grid: a pass-through) or "own" (a quantizer of its own).
    identity_at_inference: it computes nothing at inference (Dropout): an average pooling after
    it still pools its producer's grid. average_pooling: TFLite's AVERAGE_POOL_2D, which keeps
    the input's grid although `quantize` gives the layer feeding it the quantizer.
    inputs_on_output_grid: the int8 kernel takes its inputs on its output's grid, and the
    converter writes a producer whose only reader it is straight onto that grid (CONCATENATION):
    such a producer trains with no quantizer of its own."""

    name: str
    keras_classes: tuple[type, ...]
    output_grid: str
    tflite_ops: tuple[str, ...]
    identity_at_inference: bool = False
    average_pooling: bool = False
    inputs_on_output_grid: bool = False


_L = keras.layers
GRID_LAYER_TYPES: dict[str, GridLayerType] = {
    description.name: description
    for description in (
        GridLayerType("input", (_L.InputLayer,), "input", ()),
        GridLayerType("flatten", (_L.Flatten,), "input", ("RESHAPE",)),
        GridLayerType("reshape", (_L.Reshape,), "input", ("RESHAPE",)),
        GridLayerType("dropout", (_L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D), "input", (),
                      identity_at_inference=True),
        GridLayerType("identity", (_L.Identity,), "input", (), identity_at_inference=True),
        GridLayerType("max_pooling", (_L.MaxPooling1D, _L.MaxPooling2D), "input", ("MAX_POOL_2D",)),
        GridLayerType("global_max_pooling", (_L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D), "input", ("REDUCE_MAX",)),
        GridLayerType("zero_padding", (_L.ZeroPadding1D, _L.ZeroPadding2D), "input", ("PAD",)),
        GridLayerType("cropping", (_L.Cropping1D, _L.Cropping2D), "input", ("STRIDED_SLICE",)),
        GridLayerType("add", (_L.Add,), "own", ("ADD",)),
        GridLayerType("concatenate", (_L.Concatenate,), "own", ("CONCATENATION",), inputs_on_output_grid=True),
        GridLayerType("average_pooling", (_L.AveragePooling1D, _L.AveragePooling2D), "own", ("AVERAGE_POOL_2D",),
                      average_pooling=True),
        GridLayerType("global_average_pooling", (_L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D), "own",
                      ("MEAN",)),
    )
}


def grid_layer_classes(output_grid: str | None = None, **flags: bool) -> tuple[type, ...]:
    """The Keras classes of the grid layer types with `output_grid` ("input" / "own", None: any)
    and the given flags (e.g. `identity_at_inference=True`)."""
    return tuple(cls for description in GRID_LAYER_TYPES.values()
                 if output_grid in (None, description.output_grid)
                 and all(getattr(description, flag) == value for flag, value in flags.items())
                 for cls in description.keras_classes)
