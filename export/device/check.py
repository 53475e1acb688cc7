#!/usr/bin/env python3
"""On-device accuracy check of a softedge deploy bundle. Needs only numpy and LiteRT.

    python check.py BUNDLE_DIR [--json] [--latency-runs N]

Reads BUNDLE_DIR/manifest.json, verifies the sha256 of every file it lists (model.tflite,
eval.npz, check.py, micro/...) and the types of its entries, runs every input of
eval.npz (exactly as the device receives them) through the interpreter with the kernels the
manifest names, and prints, for each kernel family the bundle carries integer-reference
outputs for (reference, builtin, xnnpack and their ARM64 builds, micro), how many output
elements differ from them (0 for the family the device runs), which family the device matches
(or none, with the first differing output) and which one its kernels compute on its ISA,
accuracy (classification) or the ROC AUC of the reconstruction errors (anomaly detection),
top-1 agreement with that family's outputs and accuracy (or AUC) against that family's (the
exporter's where the bundle has none for it), and batch-1 latency p50/p95.

Exit codes: 0 the device matches a family's integers exactly and accuracy is within the
manifest's tolerance; 1 otherwise; 2 bad bundle (missing or corrupt file, a file whose sha256
differs from the manifest's, a manifest entry missing or of the wrong type, no runtime).

The runtime is `ai_edge_litert` (falling back to `tflite_runtime`). Kernels: "xnnpack" (the
default CPU delegate), "builtin" (TFLite's optimized kernels, no delegate) or "reference".
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
import warnings

import numpy as np


def _beside(name: str):
    """The module `name`.py that lies beside this file in a device bundle (loaded by path, so
    nothing is added to sys.path of a process that checks several bundles)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"softedge_bundle_{name}", path)
    if spec is None or not os.path.isfile(path):
        raise ImportError(f"{path} is missing: check.py needs the {name}.py of its bundle")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __package__:  # export.device.check, inside softedge
    from export.device.families import KernelFamily
    from models.tasks import Task
else:  # a device bundle's copy: softedge's vocabularies were copied beside it
    KernelFamily, Task = _beside("families").KernelFamily, _beside("tasks").Task

KERNELS = tuple(KernelFamily.kernel_names())   # what LiteRT can be told to run
LITERT_FAMILIES = tuple(family.value for family in KernelFamily.litert())   # what it computes, on some ISA
FAMILY_PREFIX = "expected_"
EXIT_OK, EXIT_OUT_OF_TOLERANCE, EXIT_BAD_BUNDLE = 0, 1, 2


class BundleError(Exception):
    """A bundle that cannot be checked: the message names the file and the problem."""


def _runtime():
    try:
        from ai_edge_litert import interpreter as runtime
    except ImportError:
        try:
            from tflite_runtime import interpreter as runtime
        except ImportError as error:
            raise BundleError("Neither ai_edge_litert nor tflite_runtime is installed.") from error
    return runtime


def runtime_name() -> str:
    return _runtime().__name__.split(".")[0]


def load_interpreter(model, kernels: str = "xnnpack", preserve_all_tensors: bool = False):
    """An interpreter for a .tflite path or bytes, with the named kernels."""
    if kernels not in KERNELS:
        raise BundleError(f"Unknown kernels {kernels!r}; expected one of {', '.join(KERNELS)}.")
    runtime = _runtime()
    resolver = {
        "xnnpack": runtime.OpResolverType.AUTO,
        "builtin": runtime.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "reference": runtime.OpResolverType.BUILTIN_REF,
    }[kernels]
    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": os.fspath(model)}
    try:
        with warnings.catch_warnings():  # preserve-all-tensors is asked for on purpose (per-layer drift)
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
            interpreter = runtime.Interpreter(**source, experimental_op_resolver_type=resolver,
                                              experimental_preserve_all_tensors=preserve_all_tensors)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise BundleError(f"LiteRT cannot load the model: {error}") from error
    return interpreter


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float inputs as the device receives them: q = clip(floor(x / s + 1/2) + z) for an int8
    input (the rounding of the fake-quant op the model was exported from), else float32."""
    if detail["dtype"] != np.int8:
        return np.asarray(x, detail["dtype"])
    scale, zero_point = detail["quantization"]
    q = np.floor(np.asarray(x, np.float64) / scale + 0.5) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] != np.int8:
        return np.asarray(y, np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float64) - zero_point) * scale).astype(np.float32)


def run(interpreter, device_inputs: np.ndarray) -> np.ndarray:
    """Runs a whole batch of device inputs (the interpreter is resized to it); raw outputs."""
    invoke(interpreter, device_inputs)
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def invoke(interpreter, device_inputs: np.ndarray) -> None:
    """One invoke on a whole batch of device inputs, the interpreter resized to it; BundleError
    for inputs of another dtype or per-sample shape than the model's, or a runtime failure."""
    input_detail = interpreter.get_input_details()[0]
    if device_inputs.dtype != input_detail["dtype"]:
        raise BundleError(f"Inputs have dtype {device_inputs.dtype}; the model expects {input_detail['dtype'].__name__}.")
    expected = tuple(int(d) for d in input_detail["shape"][1:])
    if device_inputs.ndim != len(expected) + 1 or tuple(device_inputs.shape[1:]) != expected:
        raise BundleError(f"Inputs have shape {tuple(device_inputs.shape[1:])} per sample; the model expects {expected}.")
    try:
        if tuple(input_detail["shape"]) != tuple(device_inputs.shape):
            interpreter.resize_tensor_input(input_detail["index"], list(device_inputs.shape))
            interpreter.allocate_tensors()
            input_detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(input_detail["index"], device_inputs)
        interpreter.invoke()
    except (ValueError, RuntimeError) as error:
        raise BundleError(f"LiteRT failed to run the model: {' '.join(str(error).split())}") from error


def predict(interpreter, x: np.ndarray) -> np.ndarray:
    """Float inputs in, float outputs out: quantize_input, run, dequantize."""
    device_inputs = quantize_input(x, interpreter.get_input_details()[0])
    return dequantize(run(interpreter, device_inputs), interpreter.get_output_details()[0])


def latency_us(model, device_inputs: np.ndarray, kernels: str, runs: int = 200) -> dict:
    """Batch-1 latency percentiles in microseconds over `runs` invocations (after 10 warm-ups)."""
    interpreter = load_interpreter(model, kernels)
    detail = interpreter.get_input_details()[0]
    if detail["shape"][0] != 1:
        interpreter.resize_tensor_input(detail["index"], [1, *device_inputs.shape[1:]])
        interpreter.allocate_tensors()
    times = []
    for i in range(runs + 10):
        sample = device_inputs[i % len(device_inputs)][None]
        start = time.perf_counter()
        interpreter.set_tensor(detail["index"], sample)
        interpreter.invoke()
        if i >= 10:
            times.append((time.perf_counter() - start) * 1e6)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)), "runs": runs}


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What check.py reads from the manifest, and its JSON types (None: null allowed).
_MANIFEST_SCHEMA = {"files": (dict,), "model_sha256": (str,), "kernels": (str,), "task": (str,),
                    "tolerance": (dict,), "input_quantization": (dict,), "output_quantization": (dict,),
                    "expected_accuracy": (float, int, type(None)), "expected_auc": (float, int, type(None))}
_TOLERANCE_KEYS = ("accuracy", "min_agreement")
TASKS = tuple(Task.names())


def verify_files(bundle: str, manifest: dict, manifest_path: str) -> None:
    """BundleError unless every file the manifest lists exists with its sha256 (the seal)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{manifest_path} lists no files with their sha256: the bundle is not sealed.")
    for name, digest in sorted(files.items()):
        path = os.path.join(bundle, *str(name).split("/"))
        if ".." in str(name).split("/") or not os.path.isfile(path):
            raise BundleError(f"Bundle file {path} (listed in the manifest) is missing.")
        actual = sha256_file(path)
        if actual != digest:
            raise BundleError(f"{path} has sha256 {actual}, but the manifest says {digest}: the bundle was changed "
                              f"after export.")


def _check_manifest(manifest, manifest_path: str) -> None:
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} is not a JSON object.")
    for key, types in _MANIFEST_SCHEMA.items():
        if key not in manifest:
            raise BundleError(f"{manifest_path} lacks the entry {key!r}.")
        value = manifest[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise BundleError(f"{manifest_path}: {key!r} is {type(value).__name__} {value!r:.60}; expected "
                              f"{' or '.join(t.__name__ for t in types)}.")
    if manifest["kernels"] not in KERNELS or manifest["task"] not in TASKS:
        raise BundleError(f"{manifest_path}: kernels {manifest['kernels']!r} / task {manifest['task']!r} unknown.")
    for key in _TOLERANCE_KEYS:
        value = manifest["tolerance"].get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise BundleError(f"{manifest_path}: tolerance {key!r} is {value!r}; expected a finite number.")
    if manifest["task"] == "classification" and manifest["expected_accuracy"] is None:
        raise BundleError(f"{manifest_path}: a classification bundle needs expected_accuracy.")
    if manifest["task"] == "anomaly" and manifest["expected_auc"] is None:
        raise BundleError(f"{manifest_path}: an anomaly bundle needs expected_auc.")


def read_bundle(bundle: str):
    """(manifest, model path, evaluation data) of a sealed bundle; BundleError naming the file
    when one is missing, corrupt or differs from the manifest's sha256."""
    manifest_path = os.path.join(bundle, "manifest.json")
    model_path = os.path.join(bundle, "model.tflite")
    eval_path = os.path.join(bundle, "eval.npz")
    for path in (manifest_path, model_path, eval_path):
        if not os.path.isfile(path):
            raise BundleError(f"Bundle file {path} is missing.")
    try:
        with open(manifest_path) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        raise BundleError(f"Bundle file {manifest_path} is not valid JSON: {error}") from error
    _check_manifest(manifest, manifest_path)
    actual = sha256_file(model_path)
    if actual != manifest.get("model_sha256"):
        raise BundleError(f"{model_path} has sha256 {actual}, but the manifest says {manifest.get('model_sha256')}.")
    verify_files(bundle, manifest, manifest_path)
    try:
        with np.load(eval_path, allow_pickle=False) as archive:
            data = {k: archive[k] for k in ("inputs", "labels", "expected_outputs")}
            data["families"] = {k[len(FAMILY_PREFIX):]: archive[k] for k in archive.files  # LiteRT's, not micro
                                if k.startswith(FAMILY_PREFIX) and k[len(FAMILY_PREFIX):] in LITERT_FAMILIES}
    except Exception as error:  # zipfile, numpy and OS errors alike: one line naming the file
        raise BundleError(f"Bundle file {eval_path} is not a valid eval archive: {type(error).__name__}: {error}") from None
    rows = {name: len(values) if np.ndim(values) else -1 for name, values in data.items() if name != "families"}
    if len(set(rows.values())) != 1 or rows["inputs"] < 1:
        raise BundleError(f"Bundle file {eval_path}: inputs, labels and expected_outputs must have the same rows "
                          f"(at least one); got {rows}.")
    return manifest, model_path, data


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (1 positive): the Mann-Whitney
    statistic, P(score of a positive > score of a negative) + P(equal) / 2, from average ranks."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):  # tied scores share their average rank (1-based)
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def anomaly_scores(outputs: np.ndarray, inputs: np.ndarray, input_quantization: dict,
                   output_quantization: dict) -> np.ndarray:
    """An autoencoder's anomaly score per sample on the device: the mean squared difference of
    its dequantized output and its (quantized) input."""
    def real(values, quantization):
        values = np.asarray(values, np.float64)
        if np.dtype(quantization["dtype"]).kind in "iu" and quantization.get("scale"):
            values = quantization["scale"] * (values - quantization["zero_point"])
        return values.reshape(len(values), -1)

    error = real(outputs, output_quantization) - real(inputs, input_quantization)
    return np.mean(error ** 2, axis=1)


def compare_families(outputs: np.ndarray, families: dict) -> tuple[dict, list, dict | None]:
    """({family: differing output elements}, [families matched exactly], first difference or None).

    The first difference is taken against the family the device is closest to (fewest differing
    elements; ties in the bundle's order), so it points at the device's own deviation rather than
    at whichever family happens to come first."""
    differing = {}
    for family, expected in families.items():
        shaped = expected.shape == outputs.shape
        differing[family] = int(np.count_nonzero(expected != outputs)) if shaped else int(max(expected.size, outputs.size))
    matches = [family for family, count in differing.items() if count == 0]
    if matches or not differing:
        return differing, matches, None
    closest = min(differing, key=differing.get)
    expected = families[closest]
    if expected.shape != outputs.shape:
        return differing, matches, {"family": closest, "index": None, "device_shape": list(outputs.shape),
                                    "expected_shape": list(expected.shape)}
    where = tuple(int(i) for i in np.argwhere(expected != outputs)[0])
    return differing, matches, {"family": closest, "index": list(where), "device": outputs[where].item(),
                                "expected": expected[where].item()}


def check_bundle(bundle: str, latency_runs: int = 200) -> dict:
    """Runs the bundle; returns the measurements and whether they are within tolerance."""
    manifest, model_path, data = read_bundle(bundle)
    kernels = manifest.get("kernels", "xnnpack")
    interpreter = load_interpreter(model_path, kernels)
    outputs = run(interpreter, data["inputs"])
    output_detail = interpreter.get_output_details()[0]
    task = manifest.get("task") or ("classification" if np.issubdtype(data["labels"].dtype, np.integer) else "regression")
    classification = task == "classification"

    def metrics(raw_outputs):
        """(accuracy, ROC AUC), each None where the task has none."""
        auc = roc_auc(anomaly_scores(raw_outputs, data["inputs"], manifest["input_quantization"],
                                     manifest["output_quantization"]), data["labels"]) if task == "anomaly" else None
        return (float(np.mean(np.argmax(raw_outputs, -1) == data["labels"])) if classification else None), auc

    accuracy, auc = metrics(outputs)
    # Against the integers the kernels compute on this ISA (LiteRT's builtin kernels on ARM64 are
    # not x86-64's), where the bundle carries them; else the exporter's outputs and metrics.
    family = KernelFamily.computed_by(kernels, platform.machine())
    baseline_name = str(family) if family is not None and str(family) in data["families"] else "exporter"
    if baseline_name == "exporter":
        baseline, (expected_accuracy, expected_auc) = data["expected_outputs"], (manifest.get("expected_accuracy"),
                                                                                 manifest.get("expected_auc"))
    else:
        baseline = data["families"][baseline_name]
        expected_accuracy, expected_auc = metrics(baseline)
    agreement = float(np.mean(np.argmax(outputs, -1) == np.argmax(baseline, -1)))
    difference = np.abs(outputs.astype(np.float64) - baseline.astype(np.float64))
    if output_detail["dtype"] != np.int8:
        step = manifest.get("output_quantization", {}).get("scale") or 1.0
        difference = difference / step
    differing, matches, first = compare_families(outputs, data["families"])
    tolerance = manifest["tolerance"]
    failures = []
    if data["families"] and not matches:
        failures.append(f"the device matches no kernel family's integers (differing elements: {differing}); "
                        f"first difference {first}")
    if classification and not accuracy >= expected_accuracy - tolerance["accuracy"]:
        failures.append(f"accuracy {accuracy:.4f} < expected {expected_accuracy:.4f} - {tolerance['accuracy']}")
    if auc is not None and not auc >= expected_auc - tolerance.get("auc", tolerance["accuracy"]):
        failures.append(f"ROC AUC {auc:.4f} < expected {expected_auc:.4f} - {tolerance.get('auc', tolerance['accuracy'])}")
    if classification and not agreement >= tolerance["min_agreement"]:
        failures.append(f"agreement {agreement:.4f} < {tolerance['min_agreement']}")
    return {
        "runtime": runtime_name(),
        "kernels": kernels,
        "machine": platform.machine(),
        "expected_family": str(family) if family else None,
        "samples": int(len(data["labels"])),
        "accuracy": accuracy,
        "expected_accuracy": expected_accuracy,
        "auc": auc,
        "expected_auc": expected_auc,
        "agreement": agreement,
        "agreement_with": baseline_name,
        "max_output_error_steps": float(difference.max()) if difference.size else 0.0,
        "families": differing,
        "matches": matches,
        "first_difference": first,
        "latency_us": latency_us(model_path, data["inputs"], kernels, latency_runs),
        "failures": failures,
        "ok": not failures,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="On-device accuracy check of a softedge bundle.")
    parser.add_argument("bundle", help="bundle directory (manifest.json, model.tflite, eval.npz)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--latency-runs", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        result = check_bundle(args.bundle, args.latency_runs)
    except BundleError as error:
        print(f"Error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_BAD_BUNDLE
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"runtime {result['runtime']} ({result['kernels']} kernels), {result['samples']} samples")
        for family, count in result["families"].items():
            print(f"integers  {family:13s} {count} output element(s) differ")
        expected = f"; {result['kernels']} kernels on {result['machine']} compute {result['expected_family']}" \
            if result["expected_family"] else f"; no family probed for {result['kernels']} kernels on {result['machine']}"
        print(f"matches   {', '.join(result['matches']) or 'no kernel family'}" + expected
              + (f" (first difference {result['first_difference']})" if result["first_difference"] else ""))
        if result["accuracy"] is not None:
            print(f"accuracy  {result['accuracy']:.4f} (expected {result['expected_accuracy']:.4f})")
        if result["auc"] is not None:
            print(f"ROC AUC   {result['auc']:.4f} (expected {result['expected_auc']:.4f}; anomaly score = reconstruction error)")
        print(f"agreement {result['agreement']:.4f} with the {result['agreement_with']} outputs; max output error "
              f"{result['max_output_error_steps']:.0f} step(s)")
        print(f"latency   p50 {result['latency_us']['p50']:.1f} us, p95 {result['latency_us']['p95']:.1f} us (batch 1)")
        print("OK" if result["ok"] else "FAILED: " + "; ".join(result["failures"]))
    return EXIT_OK if result["ok"] else EXIT_OUT_OF_TOLERANCE


if __name__ == "__main__":
    sys.exit(main())
