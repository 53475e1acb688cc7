"""Preflight: nothing that crashes the converter or the runtime is handed to them.

LiteRT's `allocate_tensors` dies with a segmentation fault (no message, exit 139) on a model
whose quantization scales are NaN, and the converter writes such a model without complaint from
a Keras model with NaN weights or activation ranges (training on NaN data "succeeds" with a NaN
loss). So:

- `check_model_finite(model)`: every weight of a Keras model (kernels, biases, steps, the
  activation ranges of the fake quants) is finite; ConfigError naming the layer and the weight;
- `check_tflite(tflite_bytes, where)`: the bytes parse as a TFLite flatbuffer (ArtifactError
  otherwise: a truncated file) and every quantized tensor has finite, positive scales and
  zero points within its type's range (ConfigError naming the tensor).
"""

from __future__ import annotations

import keras
import numpy as np

from export.device.reference import Graph
from toolkit.errors import ArtifactError, ConfigError

__all__ = ["check_model_finite", "check_tflite", "parse_tflite"]

_ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int4": (-8, 7)}


def check_model_finite(model: keras.Model, where: str | None = None) -> None:
    """ConfigError naming the first layer and weight of `model` holding NaN or inf."""
    where = where or f"model {model.name!r}"
    for layer in model.layers:
        for weight in layer.weights:
            values = np.asarray(keras.ops.convert_to_numpy(weight.value))
            if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
                count = int(np.count_nonzero(~np.isfinite(values)))
                raise ConfigError(f"{where}: layer {layer.name!r} weight {weight.path or weight.name!r} holds {count} "
                                  f"non-finite value(s) (NaN or inf; did training diverge?); refusing to use it.")


def parse_tflite(tflite_bytes: bytes, where: str) -> Graph:
    """The flatbuffer's graph, or ArtifactError when it does not parse (truncated, not TFLite)."""
    if len(tflite_bytes) < 8 or bytes(tflite_bytes[4:8]) != b"TFL3":
        raise ArtifactError(f"{where} is not a TFLite flatbuffer (no TFL3 identifier).")
    try:
        return Graph(tflite_bytes)
    except Exception as error:  # the generated flatbuffer reader raises anything on bad offsets
        raise ArtifactError(f"{where} is not a valid TFLite model (truncated or corrupt): "
                            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'unreadable'}") from None


def check_tflite(tflite_bytes: bytes, where: str) -> Graph:
    """Raises for a model the runtime must not be handed (see the module docstring); returns its graph."""
    graph = parse_tflite(tflite_bytes, where)
    for tensor in graph.tensors:
        if not tensor.quantized:
            continue
        scale = np.asarray(tensor.scale, np.float64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            bad = scale[~(np.isfinite(scale) & (scale > 0))][0]
            raise ConfigError(f"{where}: tensor {tensor.index} {tensor.name[:80]!r} has quantization scale {bad}; "
                              f"scales must be finite and positive (the runtime crashes on this model).")
        bounds = _ZERO_POINT_RANGE.get(tensor.type)
        if bounds and tensor.zero_point.size and (tensor.zero_point.min() < bounds[0] or tensor.zero_point.max() > bounds[1]):
            raise ConfigError(f"{where}: tensor {tensor.index} {tensor.name[:80]!r} has zero point outside "
                              f"{tensor.type}'s range {bounds}.")
    return graph
