"""Integer reference vs LiteRT: bit-exactness per kernel family and speed (python -m bench.reference).

Second table: the exact simulation (`export.exact.ExactModel`) against the numpy reference, every
zoo model (one float epoch on its synthetic data, calibrated: `bench.families.build`) at W8, W4,
W3, W2 (int8) and W4 int4-weights, in every family: mismatching elements over every tensor on
1000 inputs (must be 0); and at W4 the speed of the builtin family on those 1000 inputs as a
ratio of LiteRT's builtin kernels: the numpy reference, the exact simulation warm (XLA-fused
requantization, compiled on its first call) returning the outputs as LiteRT does
(`ExactModel.outputs`) and every tensor (`run`), and its first call (tracing and compiling),
each the fastest of the repeats.

For each zoo model (briefly fitted, calibrated, not fully trained: exactness does not depend on
accuracy) at weight bits 2, 3, 4, 8 (int8 storage) and int4-weights for <= 4 bits: the number of
mismatching elements between LiteRT and the reference (every tensor for reference/builtin,
outputs for xnnpack) on 1000 inputs, and the reference's time on those inputs (builtin family, one batch) as a ratio of LiteRT's builtin
kernels on the same batch in the same run, each the fastest of 7 warm runs. Writes bench/results/reference.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from bench.tables import replace_section
from export.atomic import write_json
from export.device.check import load_interpreter, quantize_input, run
from export.device.reference import Graph
from export.exact import ExactModel
from export.exactness import compare_families, compare_values
from export.harden import harden
from export.targets import Target
from export.tflite import convert
from models import datasets, registry
from toolkit import QuantScheme, quantize

MODELS = (("digits_cnn", "digits"), ("mnist1d_cnn", "mnist1d"))
SAMPLES = 1000
REPEATS = 7


def _inputs(x: np.ndarray) -> np.ndarray:
    repeats = int(np.ceil(SAMPLES / len(x)))
    return np.concatenate([x] * repeats)[:SAMPLES]


def measure(model_name: str, data_name: str, bits: int, target: str, seed: int = 0) -> dict:
    data = datasets.load(data_name)
    keras.utils.set_random_seed(seed)
    model = registry.build(model_name, data.input_shape, data.num_classes)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=2, verbose=0)
    quantized = quantize(model, QuantScheme(weight_bits=bits), calibration_data=data.x_train[:512])
    tflite_bytes = convert(harden(quantized), target)
    graph = Graph(tflite_bytes)
    inputs = quantize_input(_inputs(data.x_test), {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    comparisons, _ = compare_families(tflite_bytes, inputs, graph=graph)
    reference_seconds = best_seconds(lambda: graph.run(inputs, "builtin"))
    interpreter = load_interpreter(tflite_bytes, "builtin")
    run(interpreter, inputs)  # resized to the batch and warm before timing
    litert_seconds = best_seconds(lambda: run(interpreter, inputs))
    return {"model": model_name, "bits": bits, "target": target, "families": comparisons,
            "reference_seconds": reference_seconds, "litert_builtin_seconds": litert_seconds,
            "time_ratio": reference_seconds / litert_seconds}


EXACT_CONFIGS = ((8, "int8"), (4, "int8"), (3, "int8"), (2, "int8"), (4, "int4-weights"))


def measure_exact(model_name: str) -> dict:
    """The exact simulation against the numpy reference (every config, every family) and, at W4,
    its speed against the reference and LiteRT's builtin kernels (see the module docstring)."""
    from bench.families import build
    from export.device.reference import FAMILIES

    mismatches, speed = {}, {}
    for bits, target in EXACT_CONFIGS:
        tflite_bytes, inputs = build(model_name, bits, target)
        inputs = _inputs(inputs)
        graph = Graph(tflite_bytes)
        expected = graph.run_families(inputs, FAMILIES)
        for family in FAMILIES:
            values = expected[family]
            comparison = compare_values(graph, values, ExactModel(graph, family).run(inputs), list(values))
            mismatches[f"W{bits} {target} {family}"] = comparison["mismatched_elements"]
        if (bits, target) == (4, "int8"):
            speed = _speeds(tflite_bytes, graph, inputs)
    return {"model": model_name, "mismatches": mismatches, **speed}


def _speeds(tflite_bytes: bytes, graph: Graph, inputs: np.ndarray) -> dict:
    """Seconds of LiteRT's builtin kernels, the exact simulation (first call, then warm) and the
    numpy reference, the builtin family on `inputs`."""
    interpreter = load_interpreter(tflite_bytes, "builtin")
    run(interpreter, inputs)  # resized to the batch and warm before timing
    start = time.perf_counter()
    exact = ExactModel(graph, "builtin", compiled=True)
    exact.outputs(inputs)
    first_call = time.perf_counter() - start
    exact.run(inputs)
    return {"litert_builtin_seconds": best_seconds(lambda: run(interpreter, inputs)),
            "exact_first_call_seconds": first_call,
            "exact_seconds": best_seconds(lambda: exact.outputs(inputs), 3),
            "exact_tensors_seconds": best_seconds(lambda: exact.run(inputs), 3),
            "reference_seconds": best_seconds(lambda: graph.run(inputs, "builtin"), 3)}


def best_seconds(function, repeats: int = REPEATS) -> float:
    """The fastest of `repeats` calls: this machine is shared, and the minimum is the least noisy."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _cell(row: dict, family: str) -> str:
    comparison = row["families"][family]
    if comparison.get("runtime_error"):
        return "runtime cannot load"
    first = comparison["first_mismatch"]
    return str(comparison["mismatched_elements"]) + (f" (first: op {first['op']})" if first else "")


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Integer reference and exact simulation against LiteRT.")
    parser.add_argument("--part", choices=("all", "reference", "exact"), default="all",
                        help="reference: the first table only; exact: the exact simulation's table only")
    part = parser.parse_args(argv).part
    path = Path(__file__).parent / "results" / "reference.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results = results if isinstance(results, dict) else {"rows": results}
    if part in ("all", "reference"):
        results["rows"] = reference_table()
    if part in ("all", "exact"):
        results["exact"] = exact_table()
    write_json(path, results)


def reference_table() -> list[dict]:
    rows = []
    for model_name, data_name in MODELS:
        for bits in (2, 3, 4, 8):
            for target in (Target.INT8, Target.INT4_WEIGHTS) if bits <= 4 else (Target.INT8,):
                rows.append(measure(model_name, data_name, bits, target))
                print(f"{model_name} W{bits} {target}: done", flush=True)
    lines = ["| model | weights | target | reference | builtin | xnnpack | reference time / LiteRT builtin |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | W{row['bits']} | {row['target']} | {_cell(row, 'reference')} | "
                     f"{_cell(row, 'builtin')} | {_cell(row, 'xnnpack')} | {row['time_ratio']:.2f} |")
    print("\n".join(lines))
    replace_section("reference", "\n".join(["Generated by `make bench-reference` (bench/reference.py; 2 epochs of float "
                                            "fitting, calibrated; mismatching elements over every tensor for reference/"
                                            "builtin and the outputs for xnnpack, 1000 inputs; the reference's time "
                                            "as a ratio of LiteRT's builtin kernels, fastest of 7 warm runs):",
                                            "", *lines]))
    return rows


def exact_table() -> list[dict]:
    exact_rows = [measure_exact(name) for name in registry.names()]
    exact_lines = ["| model | exact simulation vs reference: mismatching elements (5 configs x 6 families) | "
                   "LiteRT builtin (s) | numpy reference / LiteRT | exact simulation / LiteRT (warm, outputs) | "
                   "every tensor / LiteRT | exact simulation first call (s) |",
                   "|---|---|---|---|---|---|---|"]
    for row in exact_rows:
        litert = row["litert_builtin_seconds"]
        exact_lines.append(f"| {row['model']} | {sum(row['mismatches'].values())} | {litert:.4f} | "
                           f"{row['reference_seconds'] / litert:.2f} | {row['exact_seconds'] / litert:.2f} | "
                           f"{row['exact_tensors_seconds'] / litert:.2f} | "
                           f"{row['exact_first_call_seconds']:.2f} |")
    print("\n".join(exact_lines))
    replace_section("reference-exact", "\n".join([
        "Generated by `make bench-reference` (bench/reference.py; every zoo model after one float epoch on its synthetic "
        "data, calibrated; W8/W4/W3/W2 int8 and W4 int4-weights in the 6 families, every tensor on 1000 inputs; speed of "
        "the builtin family at W4 on the same 1000 inputs, fastest of 3 warm runs, as a ratio of LiteRT's builtin kernels; "
        "`ExactModel.outputs` returns the outputs as LiteRT does, `run` every tensor):",
        "", *exact_lines]))
    return exact_rows


if __name__ == "__main__":
    main()
