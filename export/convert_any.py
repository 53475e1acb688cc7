"""Convert whatever a user has saved: a softedge quantized model, a hard model, a plain Keras
model (post-training quantization for int8) or a SavedModel directory."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from export.artifacts import load_keras_model
from export.harden import QUANT_KERNELS, harden
from export.tflite import TARGETS, convert, is_hard_model, run_converter
from models import datasets
from toolkit.errors import ArtifactError, ConfigError
from toolkit.qat_layers import QuantizeActivation

__all__ = ["convert_path", "model_kind"]


def model_kind(model) -> str:
    """"quantized" (softedge QAT), "hard" (harden output) or "float"."""
    if any(isinstance(layer, (QuantizeActivation, *QUANT_KERNELS)) for layer in model.layers):
        return "quantized"
    return "hard" if is_hard_model(model) else "float"


def _representative(data: str | None, target: str, input_shape) -> object:
    if target not in ("int8", "int4-weights"):
        return None
    if data is None:
        raise ConfigError("A float model needs --data (representative inputs) for int8 post-training quantization.")
    x = datasets.load(data).x_train
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ConfigError(f"Dataset {data!r} has inputs of shape {tuple(x.shape[1:])}; the model expects {tuple(input_shape)}.")
    return x


def convert_path(path, target: str = "int8", io: str = "int8", data: str | None = None) -> tuple[bytes, str]:
    """(.tflite bytes, model kind) for a .keras file or a SavedModel directory."""
    if target not in TARGETS:
        raise ConfigError(f"Unknown target {target!r}. Expected one of: {', '.join(TARGETS)}.")
    path = Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ArtifactError(f"{path} is a directory without saved_model.pb: not a SavedModel.")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if target != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        x = _representative(data, target, None)
        if x is not None:
            converter.representative_dataset = lambda: ([row[None]] for row in x[:200])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io == "int8":
                converter.inference_input_type = converter.inference_output_type = tf.int8
        return run_converter(converter, f"SavedModel {path}"), "savedmodel"
    model = load_keras_model(path)
    kind = model_kind(model)
    if kind == "quantized":
        model = harden(model, weight_storage_bits=4 if target == "int4-weights" else 8)
    representative = _representative(data, target, model.inputs[0].shape[1:]) if kind == "float" else None
    return convert(model, target, io, representative_data=representative), kind
