"""Convert whatever a user has saved: a softedge quantized model, a hard model, a plain Keras
model (post-training quantization for int8) or a SavedModel directory."""

from __future__ import annotations

from pathlib import Path

from export.artifacts import load_keras_model
from export.harden import harden
from export.targets import Target
from export.tflite import TARGETS, convert, convert_saved_model, is_hard_model
from models import datasets
from models.data_checks import check_dataset
from toolkit.errors import ArtifactError, ConfigError
from toolkit.rewrite import is_quantized_model

__all__ = ["convert_path", "model_kind"]


def model_kind(model) -> str:
    """"quantized" (softedge QAT), "hard" (harden output) or "float"."""
    if is_quantized_model(model):
        return "quantized"
    return "hard" if is_hard_model(model) else "float"


def _representative(data: str | None, target: str, model=None):
    """Training inputs of `data` for post-training int8 quantization (None for other targets),
    checked (`models.data_checks`; against `model`'s input shape where given)."""
    if not Target(target).integer:
        return None
    if data is None:
        raise ConfigError("A float model needs --data (representative inputs) for int8 post-training quantization.")
    dataset = datasets.load(data)
    check_dataset(dataset, datasets.infer_task(dataset.y_train), splits=("train",),
                  input_shape=None if model is None else model.inputs[0].shape[1:])
    return dataset.x_train


def convert_path(path, target: str = "int8", io: str = "int8", data: str | None = None) -> tuple[bytes, str]:
    """(.tflite bytes, model kind) for a .keras file or a SavedModel directory."""
    if target not in TARGETS:
        raise ConfigError(f"Unknown target {target!r}. Expected one of: {', '.join(TARGETS)}.")
    path = Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ArtifactError(f"{path} is a directory without saved_model.pb: not a SavedModel.")
        return convert_saved_model(path, target, io, _representative(data, target)), "savedmodel"
    model = load_keras_model(path)
    kind = model_kind(model)
    if kind == "quantized":
        model = harden(model)
    representative = _representative(data, target, model) if kind == "float" else None
    return convert(model, target, io, representative_data=representative), kind
