"""Integer reference vs LiteRT: bit-exactness per kernel family and speed (python -m bench.reference).

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

from export.device.check import load_interpreter, quantize_input, run
from export.device.reference import Graph
from export.exactness import compare_families
from export.harden import harden
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
    reference_seconds = _best_seconds(lambda: graph.run(inputs, "builtin"))
    interpreter = load_interpreter(tflite_bytes, "builtin")
    run(interpreter, inputs)  # resized to the batch and warm before timing
    litert_seconds = _best_seconds(lambda: run(interpreter, inputs))
    return {"model": model_name, "bits": bits, "target": target, "families": comparisons,
            "reference_seconds": reference_seconds, "litert_builtin_seconds": litert_seconds,
            "time_ratio": reference_seconds / litert_seconds}


def _best_seconds(function, repeats: int = REPEATS) -> float:
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


def main() -> None:
    rows = []
    for model_name, data_name in MODELS:
        for bits in (2, 3, 4, 8):
            for target in ("int8", "int4-weights") if bits <= 4 else ("int8",):
                rows.append(measure(model_name, data_name, bits, target))
                print(f"{model_name} W{bits} {target}: done", flush=True)
    lines = ["| model | weights | target | reference | builtin | xnnpack | reference time / LiteRT builtin |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | W{row['bits']} | {row['target']} | {_cell(row, 'reference')} | "
                     f"{_cell(row, 'builtin')} | {_cell(row, 'xnnpack')} | {row['time_ratio']:.2f} |")
    print("\n".join(lines))
    path = Path(__file__).parent / "results" / "reference.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
