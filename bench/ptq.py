"""Post-training quantization vs QAT vs ai-edge-quantizer (python -m bench.ptq).

For mnist1d_cnn (MNIST-1D) and digits_cnn (digits), per seed: the float model (the recipe's
30 epochs); from it, in the same run,
- softedge QAT (the recipe's fine-tuning, soft rounding annealed to hard) at W4A8 and W3A8;
- softedge PTQ at W4A8 and W3A8, round-to-nearest and AdaRound (512 unlabeled training samples,
  MSE steps, 10,000 iterations per layer: `softedge ptq`'s defaults);
- ai-edge-quantizer 0.10 on the float model's .tflite: its static int8 recipe (W8A8, min-max)
  and W4A8 (static, 4-bit channelwise weights, int8 activations) with each of its algorithms
  (min-max, MSE, GPTQ), calibrated on the same 512 samples.
Every row's accuracy is the .tflite's on the test split under LiteRT; softedge's W4/W3 files
store int4-packed weights (`int4-weights`), the peer's its own. Writes bench/results/ptq.json
and the table in docs/benchmarks.md (mean and spread over the seeds).

    python -m bench.ptq                   # 3 seeds (~20 minutes on 2 cores)
    python -m bench.ptq --seeds 0         # a quick look
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.qat import tflite_metrics  # noqa: E402
from export.harden import harden  # noqa: E402
from export.tflite import convert  # noqa: E402
from models import datasets, registry  # noqa: E402
from models.training import Recipe, accuracy, train_float, train_quantized  # noqa: E402
from toolkit import QuantScheme, quantize  # noqa: E402
from toolkit.ptq import AdaRoundSettings, post_training_rounding, ptq_scheme  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODELS = {"mnist1d_cnn": "mnist1d", "digits_cnn": "digits"}
SAMPLES = 512
PEER_ALGORITHMS = ("min_max_uniform_quantize", "MSE", "GPTQ")


def _tflite_row(method: str, bits: int, hard_model, data, seconds: float) -> dict:
    target = "int4-weights" if bits <= 4 else "int8"
    tflite = convert(hard_model, target)
    metrics = tflite_metrics(tflite, data)
    return {"method": method, "weight_bits": bits, "accuracy": metrics["tflite_acc"], "bytes": len(tflite),
            "seconds": seconds}


def peer_rows(float_model, data, x_calibration, seed: int) -> list[dict]:
    """ai-edge-quantizer's static W8A8 and W4A8 recipes on the float .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        from ai_edge_quantizer import qtyping
        from ai_edge_quantizer import quantizer as aeq
    except ImportError:
        return [{"method": "ai-edge-quantizer", "weight_bits": 4, "seconds": 0.0,
                 "error": "not installed: pip install -e '.[bench]' (make bench-ptq does)"}]

    float_tflite = convert(float_model, "float32")
    signature = Interpreter(model_content=float_tflite).get_signature_list()
    key = next(iter(signature))
    input_name = signature[key]["inputs"][0]
    calibration = {key: [{input_name: x_calibration[i:i + 1]} for i in range(len(x_calibration))]}
    rows = []
    for bits, algorithms in ((8, ("min_max_uniform_quantize",)), (4, PEER_ALGORITHMS)):
        for algorithm in algorithms:
            start = time.perf_counter()
            row = {"method": f"ai-edge-quantizer {algorithm}", "weight_bits": bits}
            try:
                quantizer = aeq.Quantizer(float_tflite)
                quantizer.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 8, bits,
                                            algorithm_key=algorithm)
                result = quantizer.quantize(quantizer.calibrate(calibration), enable_progress_report=False)
                tflite = bytes(result.quantized_model)
                row.update({"accuracy": tflite_metrics(tflite, data)["tflite_acc"], "bytes": len(tflite)})
            except Exception as error:   # a recipe its ops do not allow: recorded, not fatal
                row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
    return rows


def measure(model_name: str, seed: int, iterations: int) -> list[dict]:
    data = datasets.load(MODELS[model_name])
    keras.utils.set_random_seed(seed)
    float_model = registry.build(model_name, data.input_shape, data.num_classes)
    start = time.perf_counter()
    recipe = Recipe()
    train_float(float_model, data, recipe, seed=seed)
    rows = [{"method": "float (Keras)", "weight_bits": 32, "accuracy": accuracy(float_model, data.x_test, data.y_test),
             "bytes": len(convert(float_model, "float32")), "seconds": time.perf_counter() - start}]
    x = datasets.calibration_samples(data, SAMPLES, seed)
    for bits in (4, 3):
        start = time.perf_counter()
        smooth, _ = train_quantized(float_model, data, QuantScheme(weight_bits=bits), recipe, seed=seed)
        rows.append(_tflite_row("softedge QAT", bits, harden(smooth), data, time.perf_counter() - start))
        for rounding in ("nearest", "adaround"):
            start = time.perf_counter()
            keras.utils.set_random_seed(seed)
            quantized = quantize(float_model, ptq_scheme(QuantScheme(weight_bits=bits)), calibration_data=x)
            post_training_rounding(float_model, quantized, x, rounding, AdaRoundSettings(iterations=iterations), seed=seed)
            rows.append(_tflite_row(f"softedge PTQ {rounding}", bits, harden(quantized), data, time.perf_counter() - start))
    rows += peer_rows(float_model, data, x, seed)
    for row in rows:
        row.update({"model": model_name, "seed": seed})
        print(f"{model_name} seed {seed}: {row['method']} W{row['weight_bits']}: "
              f"{row.get('accuracy', row.get('error'))} ({row.get('bytes', '-')} bytes, {row['seconds']:.0f} s)", flush=True)
    return rows


def summarize(rows: list[dict], keys=("model", "method", "weight_bits")) -> list[dict]:
    """Mean and spread (min-max) over the seeds of each group of rows alike in `keys`, in the
    order the groups first appear."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    summary = []
    for values, group in groups.items():
        ok = [row for row in group if "accuracy" in row]
        entry = {**dict(zip(keys, values, strict=True)), "seeds": len(group)}
        if ok:
            accuracies = [row["accuracy"] for row in ok]
            entry.update({"accuracy": float(np.mean(accuracies)), "min": float(np.min(accuracies)),
                          "max": float(np.max(accuracies)), "bytes": int(np.median([row["bytes"] for row in ok])),
                          "seconds": float(np.median([row["seconds"] for row in ok]))})
        if len(ok) < len(group):
            entry["error"] = next(row["error"] for row in group if "error" in row)
        summary.append(entry)
    return summary


def table(summary: list[dict]) -> str:
    lines = ["| model | method | weights | accuracy (mean, min-max) | .tflite bytes | seconds |", "|---|---|---|---|---|---|"]
    for entry in summary:
        bits = "float" if entry["weight_bits"] == 32 else f"W{entry['weight_bits']}A8"
        if "accuracy" in entry:
            accuracy = f"{100 * entry['accuracy']:.1f}% ({100 * entry['min']:.1f}-{100 * entry['max']:.1f})"
            lines.append(f"| {entry['model']} | {entry['method']} | {bits} | {accuracy} | {entry['bytes']:,} | "
                         f"{entry['seconds']:.0f} |")
        else:
            lines.append(f"| {entry['model']} | {entry['method']} | {bits} | failed: {entry['error']} | | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--iterations", type=int, default=AdaRoundSettings().iterations)
    args = parser.parse_args(argv)
    from bench.tables import replace_section
    from export.atomic import write_json

    rows = [row for model in args.models for seed in args.seeds for row in measure(model, seed, args.iterations)]
    summary = summarize(rows)
    write_json(RESULTS / "ptq.json", {"rows": rows, "summary": summary, "seeds": args.seeds, "samples": SAMPLES,
                                      "iterations": args.iterations})
    text = (f"Generated by `make bench-ptq` (bench/ptq.py; seeds {', '.join(map(str, args.seeds))}; float 30 "
            f"epochs, QAT 15 more; PTQ on {SAMPLES} unlabeled training samples; accuracy of the .tflite under "
            f"LiteRT on the test split):\n\n" + table(summary))
    print(text)
    replace_section("ptq", text)


if __name__ == "__main__":
    main()
