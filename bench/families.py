"""Every kernel family on every device: LiteRT against the integer reference for every zoo model
at W2/W3/W4/W8 (int8 storage) and W4/W2 int4-weights, on this x86-64 machine and on each
emulated ARM64 CPU model (python -m bench.families; make bench-families, after make arm64).

Each model is fitted for one float epoch on its synthetic data (exactness does not depend on
accuracy; an untrained MobileNet's logits are too flat to convert), then calibrated. On x86-64, LiteRT's reference, builtin and xnnpack kernels against the
`reference`, `builtin` and `xnnpack` families; on each ARM64 CPU model under QEMU user mode
(`app.arm64.CPUS`), LiteRT's aarch64 wheel with the same kernels against `reference`,
`builtin-arm64` and `xnnpack-arm64`. A cell counts the mismatching elements over every tensor
(reference, builtin) or the outputs (xnnpack) on SAMPLES inputs; "refused" where LiteRT cannot
load the model with those kernels (BUILTIN_REF has no int4 DEPTHWISE_CONV_2D). The last column
counts what x86-64's builtin rules would get wrong on the ARM64 device (cortex-a53): why the
ARM64 families exist. Writes bench/results/families.json and the table in docs/benchmarks.md.

    python -m bench.families                      # every zoo model, every CPU model (~30 min)
    python -m bench.families --models digits_cnn --cpus cortex-a53
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import keras
import numpy as np

from app import arm64
from bench.tables import replace_section
from export.device.check import quantize_input
from export.device.families import KernelFamily
from export.device.reference import Graph
from export.exactness import compare_families, compare_with_family
from export.harden import harden
from export.tflite import convert
from models import datasets, registry
from models.training import Recipe, train_float
from toolkit import QuantScheme, quantize

RESULTS = Path(__file__).parent / "results"
CONFIGS = ((8, "int8"), (4, "int8"), (3, "int8"), (2, "int8"), (4, "int4-weights"), (2, "int4-weights"))
SAMPLES = 100
KERNELS = ("reference", "builtin", "xnnpack")
WITNESS_CPU = "cortex-a53"


@functools.lru_cache(maxsize=1)
def float_model(name: str, seed: int = 0):
    """(zoo model `name` after one float epoch on its synthetic data, the data): logits that
    vary (an untrained MobileNet's are near-constant: its int8 SOFTMAX cannot be converted)."""
    data = datasets.load("synthetic", model=name)
    keras.utils.set_random_seed(seed)
    model = registry.build(name, data.input_shape, data.num_classes)
    train_float(model, data, Recipe(float_epochs=1), seed=seed, task=data.task)
    return model, data


def build(name: str, bits: int, target: str) -> tuple[bytes, np.ndarray]:
    """(the .tflite of zoo model `name` calibrated at `bits`, SAMPLES device inputs)."""
    model, data = float_model(name)
    quantized = quantize(model, QuantScheme(weight_bits=bits), calibration_data=np.asarray(data.x_train[:256], np.float32))
    tflite_bytes = convert(harden(quantized), target)
    graph = Graph(tflite_bytes)
    inputs = quantize_input(np.asarray(data.x_test[:SAMPLES], np.float32),
                            {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    return tflite_bytes, inputs


def _cell(comparison) -> str | int:
    if isinstance(comparison, str) or comparison.get("runtime_error"):
        return "refused"
    return int(comparison["mismatched_elements"])


def on_arm64(models: dict, cpus) -> tuple[dict, dict]:
    """({cpu: {kernels: {model: mismatched elements or "refused"}}} against the family those
    kernels compute on aarch64, {model: the same for x86-64's builtin family on WITNESS_CPU's
    builtin kernels})."""
    found, x86_rules = {}, {}
    for cpu in cpus:
        found[cpu] = {}
        for kernels in KERNELS:
            start = time.perf_counter()
            runtime = arm64.run_tensors(models, kernels, cpu)
            print(f"{cpu} {kernels}: {time.perf_counter() - start:.0f} s under emulation", flush=True)
            found[cpu][kernels] = {name: _arm64_cell(models[name], runtime[name], KernelFamily.computed_by(kernels, "aarch64"))
                                   for name in models}
            if cpu == WITNESS_CPU and kernels == "builtin":
                x86_rules = {name: _arm64_cell(models[name], runtime[name], KernelFamily.BUILTIN) for name in models}
        print(f"{cpu}: done", flush=True)
    return found, x86_rules


def _arm64_cell(model, runtime, family):
    if isinstance(runtime, str):
        return "refused"
    tflite_bytes, inputs = model
    return int(compare_with_family(Graph(tflite_bytes), inputs, runtime, family)["mismatched_elements"])


def table(rows: list[dict], cpus) -> list[str]:
    header = ["model", "weights", "target", "x86-64 (r / b / x)", *(f"{cpu} (r / b / x)" for cpu in cpus),
              f"x86 builtin rules on {WITNESS_CPU}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], f"W{row['bits']}", row["target"], " / ".join(str(row["x86_64"][k]) for k in KERNELS)]
        cells += [" / ".join(str(row["arm64"][cpu][k]) for k in KERNELS) for cpu in cpus]
        cells.append(str(row.get("x86_rules_on_arm64", "")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(registry.names()))
    parser.add_argument("--cpus", default=",".join(arm64.CPUS))
    args = parser.parse_args(argv)
    cpus = [cpu for cpu in args.cpus.split(",") if cpu]
    if not arm64.is_built():
        raise SystemExit("The ARM64 device is not built: run make arm64 first.")
    models, rows = {}, []
    for name in args.models.split(","):
        for bits, target in CONFIGS:
            key = f"{name}_w{bits}_{target}"
            models[key] = build(name, bits, target)
            comparisons, _ = compare_families(*models[key], families=KERNELS)
            rows.append({"key": key, "model": name, "bits": bits, "target": target,
                         "x86_64": {k: _cell(comparisons[k]) for k in KERNELS}})
            print(f"{key}: x86-64 {rows[-1]['x86_64']}", flush=True)
    found, x86_rules = on_arm64(models, cpus)
    for row in rows:
        row["arm64"] = {cpu: {k: found[cpu][k][row["key"]] for k in KERNELS} for cpu in cpus}
        if row["key"] in x86_rules:
            row["x86_rules_on_arm64"] = x86_rules[row["key"]]
    lines = table(rows, cpus)
    print("\n".join(lines))
    features = "; ".join(f"{cpu}: {'dot product' if 'asimddp' in arm64.FEATURES[cpu] else 'Armv8.0'}"
                         f"{', SVE' if 'sve' in arm64.FEATURES[cpu] else ''}" for cpu in cpus)
    replace_section("families", "\n".join([
        f"Generated by `make bench-families` (bench/families.py; every zoo model after one float epoch on its "
        f"synthetic data, calibrated; {SAMPLES} inputs). Each cell: mismatching elements of LiteRT against the integer reference for "
        "its reference / builtin / xnnpack kernels (every tensor for reference and builtin, the outputs for xnnpack): "
        "on x86-64 the `reference`, `builtin`, `xnnpack` families; on each ARM64 CPU model (LiteRT's aarch64 wheel "
        "under QEMU user mode) `reference`, `builtin-arm64`, `xnnpack-arm64`. \"refused\": LiteRT cannot load the "
        f"model with those kernels. CPU models: {features}. The last column: mismatches of x86-64's `builtin` rules "
        f"against LiteRT's builtin kernels on {WITNESS_CPU}.", "", *lines]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "families.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
