"""The deploy bundle: everything a device needs to check itself against the exporter.

    bundle/
      model.tflite    the model
      eval.npz        inputs exactly as the device receives them (int8 for an int8 input),
                      labels (or regression targets), the outputs the exporter's LiteRT produced
                      (raw), and `expected_<family>`: the integer reference's outputs for each
                      kernel family (reference, builtin, xnnpack, builtin-arm64, xnnpack-arm64,
                      micro), which a device must match exactly for the family it runs
      manifest.json   `files`: the sha256 of every other file of the bundle (check.py refuses a
                      bundle whose files differ: a relabelled eval.npz would otherwise pass at
                      accuracy 1.0), input/output quantization, expected accuracy and
                      tolerance, kernels, versions
      check.py        the standalone on-device check (numpy + LiteRT only), with
      families.py     the kernel families (`KernelFamily`) and
      tasks.py        the tasks (`Task`) it reads: softedge's own vocabularies, copied
      micro/          for TFLite Micro (when the model is int8): model.tflite (the same model
                      with a batch of 1), model_data.h / model_data.cc (its bytes as a C array,
                      and the measured arena size), micro_ops.h (a resolver with exactly its
                      ops) and check.py (numpy + tflite-micro only; compares with
                      eval.npz's `expected_micro`)

The directory is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from export.artifacts import versions
from export.atomic import atomic_directory, write_json
from export.device import check as device_check
from export.device import families, micro_check
from export.device.reference import FAMILIES, Graph, UnsupportedOpError
from models import tasks

__all__ = ["DEFAULT_TOLERANCE", "reference_outputs", "write_bundle"]

DEFAULT_TOLERANCE = {"accuracy": 0.005, "auc": 0.005, "min_agreement": 0.99}


def _quantization(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point),
            "shape": [int(d) for d in detail["shape_signature"]]}


def write_bundle(directory, tflite_bytes: bytes, x: np.ndarray, y: np.ndarray, kernels: str = "xnnpack",
                 tolerance: dict | None = None, extra: dict | None = None, task: str | None = None,
                 micro: dict | None = None) -> dict:
    """Writes the bundle; returns its manifest. `task`: classification, regression or anomaly
    (default: classification for integer labels, else regression). `micro`: {"model": the
    batch-1 .tflite bytes, "files": export.micro.micro_sources(...), "manifest": what to record}
    writes micro/."""
    interpreter = device_check.load_interpreter(tflite_bytes, kernels)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    device_inputs = device_check.quantize_input(x, input_detail)
    outputs = device_check.run(interpreter, device_inputs)
    expected, reference_error = reference_outputs(tflite_bytes, device_inputs)
    task = task or ("classification" if np.issubdtype(np.asarray(y).dtype, np.integer) else "regression")
    classification = task == "classification"
    input_quantization, output_quantization = _quantization(input_detail), _quantization(output_detail)
    manifest = {
        "model_sha256": hashlib.sha256(tflite_bytes).hexdigest(),
        "model_bytes": len(tflite_bytes),
        "input_quantization": input_quantization,
        "output_quantization": output_quantization,
        "samples": int(len(y)),
        "task": task,
        "expected_accuracy": float(np.mean(np.argmax(outputs, -1) == y)) if classification else None,
        "expected_auc": device_check.roc_auc(device_check.anomaly_scores(outputs, device_inputs, input_quantization,
                                                                         output_quantization), y)
        if task == "anomaly" else None,
        "reference_families": sorted(expected),
        "reference_error": reference_error,
        "tolerance": dict(tolerance or DEFAULT_TOLERANCE),
        "kernels": kernels,
        "versions": versions(),
        **(extra or {}),
    }
    if micro:
        manifest["micro"] = {"model_sha256": hashlib.sha256(micro["model"]).hexdigest(),
                             "model_bytes": len(micro["model"]), **micro["manifest"]}
    with atomic_directory(directory) as tmp:
        tmp = Path(tmp)
        Path(tmp, "model.tflite").write_bytes(tflite_bytes)
        with open(Path(tmp, "eval.npz"), "wb") as handle:
            labels = np.asarray(y, np.float32 if task == "regression" else np.int64)
            np.savez(handle, inputs=device_inputs, labels=labels, expected_outputs=outputs,
                     **{f"expected_{family}": values for family, values in expected.items()})
        shutil.copyfile(device_check.__file__, Path(tmp, "check.py"))
        for vocabulary in (families, tasks):  # check.py's KernelFamily and Task
            shutil.copyfile(vocabulary.__file__, Path(tmp, Path(vocabulary.__file__).name))
        if micro:
            Path(tmp, "micro").mkdir()
            Path(tmp, "micro", "model.tflite").write_bytes(micro["model"])
            for name, text in micro["files"].items():
                Path(tmp, "micro", name).write_text(text)
            shutil.copyfile(micro_check.__file__, Path(tmp, "micro", "check.py"))
        manifest["files"] = {path.relative_to(tmp).as_posix(): device_check.sha256_file(str(path))
                             for path in sorted(tmp.rglob("*")) if path.is_file()}
        write_json(Path(tmp, "manifest.json"), manifest)
    return manifest


def reference_outputs(tflite_bytes: bytes, device_inputs: np.ndarray) -> tuple[dict, str | None]:
    """({family: the integer reference's first output}, None), or ({}, why it cannot run)."""
    try:
        graph = Graph(tflite_bytes)
        return {family: values[graph.outputs[0]] for family, values in graph.run_families(device_inputs, FAMILIES).items()}, None
    except UnsupportedOpError as error:
        return {}, str(error)
