"""Fold a BatchNormalization into the Dense/Conv/DepthwiseConv that feeds it (inference mode).

With the BN's moving statistics, per output channel c:

    f_c = gamma_c / sqrt(var_c + eps)
    W'[..., c] = W[..., c] * f_c
    b'_c       = (b_c - mean_c) * f_c + beta_c

so that conv'(x) = BN(conv(x)) exactly in inference. This is what TFLite's converter does
itself; folding before QAT makes the trained kernel the one that is quantized and exported.
A BN is folded when its only producer is such a layer with a linear activation, that layer
feeds nothing else, and the BN normalizes the last (channel) axis.
"""

from __future__ import annotations

import keras
import numpy as np

from toolkit.graph import consumers, producers, to_functional
from toolkit.layer_types import LAYER_TYPES, layer_type_of

__all__ = ["FOLDABLE", "fold_batch_norm", "foldable_pairs", "folded_kernel_and_bias"]

FOLDABLE = tuple(description.keras_class for description in LAYER_TYPES.values())


def _is_linear(layer) -> bool:
    return layer.get_config().get("activation", "linear") == "linear"


def foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """producer layer name -> the BatchNormalization folded into it."""
    produced_by, consumed_by = producers(model), consumers(model)
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        sources = produced_by.get(layer.name, [])
        if len(sources) != 1 or type(sources[0]) not in FOLDABLE:
            continue
        source = sources[0]
        rank = len(layer.output.shape)
        if _is_linear(source) and len(consumed_by.get(source.name, [])) == 1 and layer.axis in (-1, rank - 1):
            pairs[source.name] = layer
    return pairs


def folded_kernel_and_bias(layer, bn) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') of `layer` with `bn` folded in (see the module docstring)."""
    kernel = np.asarray(layer.get_weights()[0], np.float64)
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else 0.0
    mean = np.asarray(bn.moving_mean, np.float64)
    var = np.asarray(bn.moving_variance, np.float64)
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
    beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
    factor = gamma / np.sqrt(var + bn.epsilon)
    kernel = layer_type_of(layer).fold(kernel, factor)
    new_bias = (bias - mean) * factor + beta
    dtype = layer.get_weights()[0].dtype
    return kernel.astype(dtype), np.broadcast_to(new_bias, factor.shape).astype(dtype)


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A new functional model with every foldable BatchNormalization folded away."""
    model = to_functional(model)
    pairs = foldable_pairs(model)
    folded_bn_names = {bn.name for bn in pairs.values()}

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call_layer(layer, *args, **kwargs):
        if layer.name in folded_bn_names:
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer)
    for layer in folded.layers:
        if layer.name in pairs:
            layer.set_weights(list(folded_kernel_and_bias(model.get_layer(layer.name), pairs[layer.name])))
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return folded
