"""Reading and writing softedge artifacts with clear errors: Keras models, .tflite files, versions."""

from __future__ import annotations

import importlib.metadata
import platform
import zipfile
from pathlib import Path

import keras

from export.atomic import atomic_path
from toolkit.errors import ArtifactError

__all__ = ["load_keras_model", "read_tflite", "save_keras_model", "versions"]


def _register_custom_objects():
    # Importing these modules registers every softedge layer with Keras (safe_mode loading).
    import export.hard_layers  # noqa: F401
    import toolkit.distribute  # noqa: F401  (GlobalBatchMean, the loss of a model trained on several replicas)
    import toolkit.qat_layers  # noqa: F401


def load_keras_model(path) -> keras.Model:
    """Loads a .keras file with safe_mode on. Missing, corrupt and unsafe files raise ArtifactError."""
    _register_custom_objects()
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"Model file {path} does not exist.")
    if path.suffix != ".keras":
        raise ArtifactError(f"Model file {path} is not a .keras file (Keras 3 native format expected).")
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ArtifactError(f"Model file {path} is corrupt or not a Keras model: a .keras file is a zip archive, "
                            f"this one is not.")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error) or "unsafe" in str(error).lower() or "lambda" in str(error).lower():
            raise ArtifactError(
                f"Refused to load {path}: it needs unsafe deserialization (e.g. a Lambda layer holding Python "
                f"bytecode), which could run arbitrary code. Reason given by Keras: {str(error).splitlines()[0]}"
            ) from error
        raise ArtifactError(f"Model file {path} cannot be loaded: {str(error).splitlines()[0]}") from error
    except (OSError, zipfile.BadZipFile, KeyError, EOFError, TypeError) as error:
        raise ArtifactError(f"Model file {path} is corrupt or not a Keras model: {error}") from error


def save_keras_model(model: keras.Model, path) -> Path:
    """Saves atomically (temp file + rename)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def read_tflite(path) -> bytes:
    """The bytes of a .tflite flatbuffer, checked before any runtime sees them
    (`export.preflight.check_tflite`: it parses, and its scales are finite and positive)."""
    from export.preflight import check_tflite

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"TFLite file {path} does not exist.")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"Cannot read {path}: {error.strerror or error}") from error
    check_tflite(data, str(path))
    return data


def versions() -> dict[str, str]:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {name: version(name) for name in ("softedge", "tensorflow", "keras", "numpy", "ai-edge-litert")} | {
        "python": platform.python_version()}
