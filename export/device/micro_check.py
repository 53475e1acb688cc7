#!/usr/bin/env python3
"""TFLite Micro check of a softedge deploy bundle. Needs only numpy and `tflite-micro`.

    python BUNDLE/micro/check.py BUNDLE [--json] [--samples N]

Reads BUNDLE/manifest.json, BUNDLE/eval.npz and BUNDLE/micro/ (model.tflite, the batch-1 model
a microcontroller runs, and model_data.cc, the C array holding the same bytes), and measures
with TFLite Micro's interpreter (its reference kernels, as on a Cortex-M without CMSIS-NN):

- runs: the model allocates and runs (every op in TFLite Micro's resolver);
- outputs: each evaluation input, one inference at a time, against `expected_micro`, the
  integer reference's outputs for TFLite Micro's kernels: the number of differing elements
  (0 when TFLite Micro computes exactly the integers that were validated);
- accuracy (classification), ROC AUC (anomaly detection) or MSE (regression), and top-1
  agreement with the exporter's LiteRT outputs;
- arena: the smallest tensor arena with which the model allocates and runs, by bisection,
  cross-checked with the recording allocator's total: what stays allocated after
  AllocateTensors, which cannot exceed it (beyond the arena start's 16-byte alignment); the
  bisection also covers the memory planner's temporary allocations during AllocateTensors, so
  it can be larger;
- flash: the model data's bytes (the runtime's own code is not counted: see the README);
- time per inference on this host (TFLite Micro's portable kernels, not a device's).

Exit codes: 0 runs and matches `expected_micro` exactly, accuracy within the manifest's
tolerance; 1 otherwise; 2 bad bundle (missing or corrupt file, sha256 mismatch, model_data.cc
not the checked bytes); 3 no TFLite Micro runtime here (`pip install tflite-micro`: manylinux
x86_64 wheels for CPython 3.10-3.12), so nothing was checked.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_BAD_BUNDLE, EXIT_NO_RUNTIME = 0, 1, 2, 3
MICRO_FAMILY = "expected_micro"
ARENA_ALIGNMENT = 16                # TFLite Micro aligns the arena's start to 16 bytes
MAX_ARENA = 1 << 28                 # bisection gives up above 256 MiB
_RECORDED_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


class MicroUnavailable(Exception):
    """No TFLite Micro runtime on this machine."""


class MicroBundleError(Exception):
    """A bundle that cannot be checked: the message names the file and the problem."""


def micro_runtime():
    """The `tflite_micro.runtime` module, or MicroUnavailable saying how to get it."""
    try:
        from tflite_micro import runtime
    except ImportError as error:
        raise MicroUnavailable(
            f"TFLite Micro's Python interpreter is not installed here ({error}). `pip install tflite-micro` "
            "(wheels: manylinux x86_64, CPython 3.10-3.12); on other platforms build TFLite Micro from source."
        ) from error
    return runtime


@contextlib.contextmanager
def captured_native_output():
    """Captures what native code writes to file descriptors 1 and 2 (TFLite Micro prints its
    errors and the recording allocator's report there); yields a list that receives the text."""
    captured: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def load(model: bytes, arena_bytes: int):
    """A TFLite Micro interpreter with an arena of `arena_bytes`; RuntimeError (with TFLite
    Micro's own message) when the model does not allocate."""
    runtime = micro_runtime()
    with captured_native_output() as log:
        try:
            return runtime.Interpreter.from_bytes(bytes(model), arena_size=int(arena_bytes))
        except RuntimeError as error:
            failure = error
    message = " ".join(line.strip() for line in log[0].splitlines() if line.strip())
    raise RuntimeError(f"{failure}: {message}" if message else str(failure))


def invoke(interpreter, sample: np.ndarray) -> np.ndarray:
    """One inference: `sample` has the model's input shape without the batch (batch 1)."""
    interpreter.set_input(np.ascontiguousarray(sample[None]), 0)
    interpreter.invoke()
    return np.array(interpreter.get_output(0))[0]


def runs_with(model: bytes, arena_bytes: int, sample: np.ndarray) -> bool:
    """Whether the model allocates and runs one inference in an arena of `arena_bytes`."""
    try:
        interpreter = load(model, arena_bytes)
        with captured_native_output():
            invoke(interpreter, sample)
        return True
    except RuntimeError:
        return False


def smallest_arena(model: bytes, sample: np.ndarray) -> int:
    """The smallest arena (bytes) with which the model allocates and runs: bisection between a
    failing and a working size (the working one found by doubling from 4x the model)."""
    high = max(4 * len(model), 4096)
    while not runs_with(model, high, sample):
        if high >= MAX_ARENA:
            raise RuntimeError(f"the model does not run with a {MAX_ARENA}-byte arena")
        high *= 2
    low = 0
    while high - low > 1:
        middle = (low + high) // 2
        if runs_with(model, middle, sample):
            high = middle
        else:
            low = middle
    return high


def recorded_arena(model: bytes, sample: np.ndarray, arena_bytes: int) -> int:
    """The recording allocator's total after one inference (`print_allocations`)."""
    interpreter = load(model, arena_bytes)
    with captured_native_output() as log:
        invoke(interpreter, sample)
        interpreter.print_allocations()
    match = _RECORDED_TOTAL.search(log[0])
    if match is None:
        raise RuntimeError(f"TFLite Micro's allocation report has no total: {log[0][:200]!r}")
    return int(match.group(1))


def run_all(model: bytes, inputs: np.ndarray, arena_bytes: int) -> tuple[np.ndarray, list[float]]:
    """Every input, one inference at a time: (outputs, seconds per inference)."""
    interpreter = load(model, arena_bytes)
    outputs, seconds = [], []
    with captured_native_output():
        for sample in inputs:
            start = time.perf_counter()
            outputs.append(invoke(interpreter, sample))
            seconds.append(time.perf_counter() - start)
    return np.stack(outputs), seconds


def c_array_bytes(source: str) -> bytes:
    """The bytes of the first brace-enclosed array of hex literals in a C source."""
    start, end = source.find("{"), source.find("}")
    if start < 0 or end < start:
        raise ValueError("no array initializer")
    return bytes(int(token, 16) for token in re.findall(r"0x[0-9a-fA-F]{1,2}", source[start:end]))


def _bundle_check(bundle: str):
    """The bundle's LiteRT check.py as a module (accuracy and AUC are computed one way)."""
    path = os.path.join(bundle, "check.py")
    spec = importlib.util.spec_from_file_location("softedge_bundle_check", path)
    if spec is None or not os.path.isfile(path):
        raise MicroBundleError(f"Bundle file {path} is missing.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(bundle: str):
    micro = os.path.join(bundle, "micro")
    paths = {name: os.path.join(bundle, name) for name in ("manifest.json", "eval.npz")}
    paths.update({name: os.path.join(micro, name) for name in ("model.tflite", "model_data.cc")})
    for path in paths.values():
        if not os.path.isfile(path):
            raise MicroBundleError(f"Bundle file {path} is missing.")
    try:
        with open(paths["manifest.json"]) as handle:
            manifest = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise MicroBundleError(f"Bundle file {paths['manifest.json']} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("micro"), dict):
        raise MicroBundleError(f"{paths['manifest.json']} has no 'micro' section: the bundle was made without one.")
    _verify_seal(bundle, manifest, paths["manifest.json"])
    with open(paths["model.tflite"], "rb") as handle:
        model = handle.read()
    digest = hashlib.sha256(model).hexdigest()
    if digest != manifest["micro"]["model_sha256"]:
        raise MicroBundleError(f"{paths['model.tflite']} has sha256 {digest}, but the manifest says "
                               f"{manifest['micro']['model_sha256']}.")
    with open(paths["model_data.cc"]) as handle:
        try:
            source_bytes = c_array_bytes(handle.read())
        except ValueError as error:
            raise MicroBundleError(f"{paths['model_data.cc']}: {error}") from error
    if source_bytes != model:
        raise MicroBundleError(f"{paths['model_data.cc']} does not hold the bytes of {paths['model.tflite']} "
                               f"({len(source_bytes)} vs {len(model)} bytes).")
    try:
        with np.load(paths["eval.npz"], allow_pickle=False) as archive:
            data = {key: archive[key] for key in ("inputs", "labels", "expected_outputs")}
            data["expected_micro"] = archive[MICRO_FAMILY] if MICRO_FAMILY in archive.files else None
    except Exception as error:  # zipfile, numpy and OS errors alike: one line naming the file
        raise MicroBundleError(f"Bundle file {paths['eval.npz']} is not a valid eval archive: "
                               f"{type(error).__name__}: {error}") from None
    return manifest, model, data


def _verify_seal(bundle: str, manifest: dict, manifest_path: str) -> None:
    """Every file the manifest lists has its sha256 (check.py's `verify_files`, once check.py
    itself is proved to be the sealed one)."""
    files = manifest.get("files")
    checker = os.path.join(bundle, "check.py")
    if not isinstance(files, dict) or "check.py" not in files:
        raise MicroBundleError(f"{manifest_path} lists no files with their sha256: the bundle is not sealed.")
    if not os.path.isfile(checker):
        raise MicroBundleError(f"Bundle file {checker} is missing.")
    with open(checker, "rb") as handle:
        if hashlib.sha256(handle.read()).hexdigest() != files["check.py"]:
            raise MicroBundleError(f"{checker} has another sha256 than the manifest's: the bundle was changed.")
    module = _bundle_check(bundle)
    try:
        module.verify_files(bundle, manifest, manifest_path)
    except module.BundleError as error:
        raise MicroBundleError(str(error)) from None


def check_bundle(bundle: str, samples: int | None = None) -> dict:
    """Runs the bundle's micro model on TFLite Micro; returns the measurements."""
    manifest, model, data = _read(bundle)
    micro_runtime()
    bundle_check = _bundle_check(bundle)
    inputs, labels = data["inputs"][:samples], data["labels"][:samples]
    task = manifest.get("task", "classification")
    result = {"runtime": "tflite_micro", "samples": int(len(inputs)), "task": task, "ops": manifest["micro"]["ops"],
              "flash_bytes": len(model), "failures": []}
    try:
        arena = smallest_arena(model, inputs[0])
        recorded = recorded_arena(model, inputs[0], arena + ARENA_ALIGNMENT)
        outputs, seconds = run_all(model, inputs, arena + ARENA_ALIGNMENT)
    except RuntimeError as error:
        result.update(runs=False, error=str(error), ok=False)
        result["failures"].append(f"the model does not run on TFLite Micro: {error}")
        return result
    result.update(runs=True, arena_bytes=arena, arena_recorded_bytes=recorded,
                  us_per_inference={"mean": 1e6 * float(np.mean(seconds)), "p50": 1e6 * float(np.median(seconds))})
    if recorded > arena + ARENA_ALIGNMENT:
        result["failures"].append(f"the recording allocator counts {recorded} bytes, more than the smallest arena "
                                  f"that worked ({arena} bytes) plus its {ARENA_ALIGNMENT}-byte alignment")
    expected = data["expected_micro"]
    if expected is None:
        # A model the integer reference cannot run (a float layer): nothing to compare the integers with.
        result.update(outputs_equal=None, mismatched_elements=None,
                      note="eval.npz has no expected_micro outputs: the integer reference could not run this model")
    else:
        expected = expected[:samples].reshape(outputs.shape)
        unequal = np.argwhere(expected != outputs)
        result.update(outputs_equal=not len(unequal), mismatched_elements=int(len(unequal)))
        if len(unequal):
            where = tuple(int(i) for i in unequal[0])
            result["first_difference"] = {"index": list(where), "micro": outputs[where].item(),
                                          "expected": expected[where].item()}
            result["failures"].append(f"{len(unequal)} output element(s) differ from the integer reference's "
                                      f"(first at {list(where)})")
    reference_outputs = data["expected_outputs"][:samples].reshape(outputs.shape)
    tolerance = manifest["tolerance"]
    result["accuracy"] = result["auc"] = result["mse"] = result["agreement"] = None
    if task == "classification":
        result["agreement"] = float(np.mean(np.argmax(outputs, -1) == np.argmax(reference_outputs, -1)))
        result["accuracy"] = float(np.mean(np.argmax(outputs, -1) == labels))
        # The expected accuracy is that of TFLite Micro's own integers where the bundle has them;
        # LiteRT's kernels round differently, so its accuracy is only the fallback.
        basis = expected if expected is not None else reference_outputs
        result["expected_accuracy"] = float(np.mean(np.argmax(basis, -1) == labels))
        if not result["accuracy"] >= result["expected_accuracy"] - tolerance["accuracy"]:
            result["failures"].append(f"accuracy {result['accuracy']:.4f} < expected {result['expected_accuracy']:.4f} "
                                      f"- {tolerance['accuracy']}")
    elif task == "anomaly":
        scores = bundle_check.anomaly_scores(outputs, inputs, manifest["input_quantization"], manifest["output_quantization"])
        result["auc"] = bundle_check.roc_auc(scores, labels)
    else:
        quantization = manifest["output_quantization"]
        real = outputs.astype(np.float64)
        if np.dtype(quantization["dtype"]).kind in "iu":
            real = quantization["scale"] * (real - quantization["zero_point"])
        result["mse"] = float(np.mean((real.reshape(len(labels), -1) - labels.reshape(len(labels), -1)) ** 2))
    result["ok"] = not result["failures"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="TFLite Micro check of a softedge bundle.")
    parser.add_argument("bundle", help="bundle directory (manifest.json, eval.npz, check.py, micro/)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--samples", type=int, default=None, help="check only the first N inputs")
    args = parser.parse_args(argv)
    try:
        result = check_bundle(args.bundle, args.samples)
    except MicroBundleError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_BAD_BUNDLE
    except MicroUnavailable as error:
        print(f"Skipped: {error}", file=sys.stderr)
        return EXIT_NO_RUNTIME
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK if result["ok"] else EXIT_FAILED
    print(f"TFLite Micro, {result['samples']} samples, ops: {', '.join(result['ops'])}")
    if result["runs"]:
        print(f"arena     {result['arena_bytes']} bytes (recording allocator: {result['arena_recorded_bytes']})")
        print(f"flash     {result['flash_bytes']} bytes of model data")
        if result["mismatched_elements"] is not None:
            print(f"integers  {result['mismatched_elements']} output element(s) differ from the integer reference")
        for metric in ("accuracy", "auc", "mse"):
            if result[metric] is not None:
                print(f"{metric:9s} {result[metric]:.4f}")
        if result["agreement"] is not None:
            print(f"agreement {result['agreement']:.4f} with LiteRT's outputs")
        print(f"time      {result['us_per_inference']['mean']:.0f} us per inference on this host")
    print("OK" if result["ok"] else "FAILED: " + "; ".join(result["failures"]))
    return EXIT_OK if result["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
