"""Read-only views of a Keras 3 model's layer graph (who feeds whom), and Sequential -> functional."""

from __future__ import annotations

from collections import defaultdict

import keras

from toolkit.errors import ConfigError

__all__ = ["all_layers", "consumers", "producers", "to_functional"]


def all_layers(model: keras.Model):
    """Every layer of `model`, nested models' layers included (each nested model, then its layers)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def to_functional(model: keras.Model) -> keras.Model:
    """A functional model sharing `model`'s layers (Sequential is rebuilt on an Input).

    Raises ConfigError for a subclassed model, whose graph cannot be read.
    """
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ConfigError(
                f"Model {model.name!r} is a Sequential without a known input shape. "
                "Add a keras.Input(shape=...) first, or build it."
            )
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name=f"{model.name}_input")
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if not hasattr(model, "_nodes_by_depth") or not model.inputs:
        raise ConfigError(
            f"Expected a Keras 3 Sequential or functional model. Received: {type(model).__name__} "
            f"{model.name!r} (subclassed models have no readable layer graph)."
        )
    return model


def _edges(model: keras.Model):
    """(producer layer, consumer layer) for every connection inside `model`."""
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for parent in node.parent_nodes:
                yield parent.operation, node.operation


def producers(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """layer name -> the layers whose outputs it consumes (inside `model`)."""
    result = defaultdict(list)
    for producer, consumer in _edges(model):
        result[consumer.name].append(producer)
    return dict(result)


def consumers(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """layer name -> the layers that consume its output (inside `model`); outputs have none."""
    result = defaultdict(list)
    for producer, consumer in _edges(model):
        result[producer.name].append(consumer)
    return dict(result)
