"""Mixed precision: planned per-layer widths vs uniform widths, PTQ and QAT (python -m bench.mixed).

For mnist1d_cnn on MNIST-1D, per seed: the float model (the recipe's 30 epochs), its layer
sensitivities on 512 unlabeled training samples (`toolkit.plan`, widths 2, 3, 4, 8), and these
weight schemes:
- uniform W2, W3, W4, W8;
- planned (`choose_widths`) under budgets of b bits per weight on average, sum_l ceil(n_l b / 8)
  bytes: b = 2 (uniform W2's bytes), 2.25, 2.5, 3 (uniform W3's), 3.5 counting b bits per weight
  (`--storage bits`, a runtime that packs 2 and 3 bits); b = 4 (what uniform W2, W3 and W4 all
  take in the .tflite, int4-packed) and 6 counting what the .tflite stores (`--storage tflite`).
Every scheme is trained both ways from the same float model: QAT (the recipe's 15 epochs, soft
rounding; learned steps at 2 bits, as `softedge train` and `softedge plan` do) and PTQ
(AdaRound, `softedge ptq`'s defaults). A row's accuracy is its .tflite's (int8 activations,
<= 4-bit layers int4-packed) under LiteRT on the test split; `exact` says the .tflite holds the
trained integers. A plan equal to an earlier scheme is not trained again (its rows repeat
that scheme's numbers). Writes bench/results/mixed.json, bench/results/mixed_accuracy.png and
the table in docs/benchmarks.md (mean and min-max over the seeds).

    python -m bench.mixed                  # 3 seeds (~25 minutes on 2 cores)
    python -m bench.mixed --seeds 0 --iterations 1000     # a quick look
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.ptq import summarize  # noqa: E402
from bench.qat import tflite_metrics  # noqa: E402
from export.harden import harden  # noqa: E402
from export.tflite import convert, weight_mismatches  # noqa: E402
from models import datasets, registry  # noqa: E402
from models.training import Recipe, accuracy, learned_step_for, train_float, train_quantized  # noqa: E402
from toolkit import quantize  # noqa: E402
from toolkit.plan import (  # noqa: E402
    LayerChoice,
    choose_widths,
    layer_bytes,
    layer_sensitivities,
    planned_scheme,
)
from toolkit.ptq import AdaRoundSettings, post_training_rounding, ptq_scheme  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODEL, DATA = "mnist1d_cnn", "mnist1d"
SAMPLES = 512
WIDTHS = (2, 3, 4, 8)
UNIFORM = (2, 3, 4, 8)
BUDGETS = (("bits", 2.0), ("bits", 2.25), ("bits", 2.5), ("bits", 3.0), ("bits", 3.5), ("tflite", 4.0), ("tflite", 6.0))
METHODS = ("QAT", "PTQ adaround")


def budget_bytes(weights: list[int], average_bits: float) -> int:
    """b bits per weight on average: sum_l ceil(n_l b / 8) (uniform Wb's bytes, counted in bits,
    for a whole b)."""
    return sum(math.ceil(n * average_bits / 8) for n in weights)


def schemes_for(sensitivities: dict[str, dict]) -> list[dict]:
    """The uniform schemes, then one plan per budget: label, kind, per-layer widths, budget."""
    layers = list(sensitivities)
    weights = [sensitivities[name]["weights"] for name in layers]
    schemes = [{"scheme": f"uniform W{bits}", "kind": "uniform", "widths": [bits] * len(layers)} for bits in UNIFORM]
    for storage, average in BUDGETS:
        budget = budget_bytes(weights, average)
        plan = choose_widths(sensitivities, budget, storage)
        schemes.append({"scheme": f"plan {average:g} bits/weight ({storage})", "kind": "planned", "storage": storage,
                        "budget": budget, "widths": [choice.bits for choice in plan]})
    for entry in schemes:
        entry["weight_bytes_bits"] = sum(layer_bytes(n, b, "bits") for n, b in zip(weights, entry["widths"], strict=True))
        entry["weight_bytes_tflite"] = sum(layer_bytes(n, b, "tflite") for n, b in zip(weights, entry["widths"], strict=True))
    return schemes


def _quantize_and_train(method: str, float_model, data, scheme, x, recipe: Recipe, settings, seed: int):
    if method == "QAT":
        smooth, _ = train_quantized(float_model, data, scheme, recipe, seed=seed)
        return smooth
    keras.utils.set_random_seed(seed)
    quantized = quantize(float_model, ptq_scheme(scheme), calibration_data=x)
    post_training_rounding(float_model, quantized, x, "adaround", settings, seed=seed)
    return quantized


def measure(seed: int, iterations: int) -> list[dict]:
    data = datasets.load(DATA)
    recipe = Recipe()
    keras.utils.set_random_seed(seed)
    float_model = registry.build(MODEL, data.input_shape, data.num_classes)
    start = time.perf_counter()
    train_float(float_model, data, recipe, seed=seed)
    rows = [{"scheme": "float", "kind": "float", "method": "float (Keras)", "seed": seed,
             "accuracy": accuracy(float_model, data.x_test, data.y_test), "bytes": len(convert(float_model, "float32")),
             "seconds": time.perf_counter() - start}]
    _print_row(rows[0])
    x = datasets.calibration_samples(data, SAMPLES, seed)
    sensitivities = layer_sensitivities(float_model, x, WIDTHS)
    layers = list(sensitivities)
    settings = AdaRoundSettings(iterations=iterations)
    done: dict = {}
    for entry in schemes_for(sensitivities):
        choices = [LayerChoice(name, sensitivities[name]["weights"], bits, sensitivities[name]["sensitivity"][bits],
                               layer_bytes(sensitivities[name]["weights"], bits, "bits"))
                   for name, bits in zip(layers, entry["widths"], strict=True)]
        scheme = planned_scheme(choices, learned_step=learned_step_for)
        for method in METHODS:
            key = (method, tuple(entry["widths"]))
            if key not in done:
                start = time.perf_counter()
                hard = harden(_quantize_and_train(method, float_model, data, scheme, x, recipe, settings, seed))
                tflite = convert(hard, "int4-weights")
                done[key] = {"accuracy": tflite_metrics(tflite, data)["tflite_acc"], "bytes": len(tflite),
                             "exact": not weight_mismatches(hard, tflite), "seconds": time.perf_counter() - start}
            rows.append({**entry, "method": method, "seed": seed, **done[key]})
            _print_row(rows[-1])
    return rows


def _print_row(row: dict) -> None:
    print(f"seed {row['seed']}: {row['scheme']} {row.get('widths', '')} {row['method']}: {100 * row['accuracy']:.1f}% "
          f"({row['bytes']:,} .tflite bytes, exact {row.get('exact', '-')}, {row['seconds']:.0f} s)", flush=True)


def choices(group: list[dict]) -> list[dict]:
    """The distinct per-layer widths the seeds' plans chose, in order of first appearance, each
    with its weight bytes at b bits, its .tflite bytes and the seeds that chose it."""
    found: dict = {}
    for row in group:
        entry = found.setdefault(tuple(row["widths"]), {"widths": row["widths"], "weight_bytes_bits": row["weight_bytes_bits"],
                                                        "bytes": row["bytes"], "seeds": []})
        entry["seeds"].append(row["seed"])
    return list(found.values())


def table(rows: list[dict], summary: list[dict]) -> str:
    """One line per scheme; where the seeds' plans differ, each choice is listed with its seeds."""
    lines = ["| scheme | widths (conv0-conv1-conv2-logits) | weight bytes at b bits | .tflite bytes | QAT | PTQ AdaRound |",
             "|---|---|---|---|---|---|"]
    for entry in summary:
        if entry["method"] != "QAT":
            continue
        chosen = choices([row for row in rows if row["scheme"] == entry["scheme"] and row["method"] == "QAT"])
        seeds = ["" if len(chosen) == 1 else f" (seed{'s' if len(c['seeds']) > 1 else ''} "
                 f"{', '.join(map(str, c['seeds']))})" for c in chosen]
        ptq = next(e for e in summary if e["scheme"] == entry["scheme"] and e["method"] == "PTQ adaround")
        cells = [f"{100 * e['accuracy']:.1f}% ({100 * e['min']:.1f}-{100 * e['max']:.1f})" for e in (entry, ptq)]
        widths = " / ".join("-".join(map(str, c["widths"])) + text for c, text in zip(chosen, seeds, strict=True))
        weight_bytes = " / ".join(f"{c['weight_bytes_bits']:,}" for c in chosen)
        tflite_bytes = " / ".join(f"{c['bytes']:,}" for c in chosen)
        lines.append(f"| {entry['scheme']} | {widths} | {weight_bytes} | {tflite_bytes} | {cells[0]} | {cells[1]} |")
    float_entry = next(e for e in summary if e["method"] == "float (Keras)")
    lines.append(f"| float (Keras) | 32-32-32-32 | | {float_entry['bytes']:,} | "
                 f"{100 * float_entry['accuracy']:.1f}% ({100 * float_entry['min']:.1f}-{100 * float_entry['max']:.1f}) | |")
    return "\n".join(lines)


def plot(rows: list[dict]) -> bytes:
    """Accuracy vs bytes, one point per scheme (mean over seeds, bars min-max): against the
    .tflite file's bytes, and against the weights' bytes at b bits each."""
    from export.plots import new_figure, png_bytes

    figure, axes = new_figure(1, 2, figsize=(12, 4.5))
    for axis, (x_key, x_label) in zip(axes, (("bytes", ".tflite file bytes"),
                                             ("weight_bytes_bits", "weight bytes at b bits per weight")), strict=True):
        for kind, method, marker in (("uniform", "QAT", "o"), ("uniform", "PTQ adaround", "s"),
                                     ("planned", "QAT", "o"), ("planned", "PTQ adaround", "s")):
            points = {}
            for row in rows:
                if row["kind"] == kind and row["method"] == method:
                    points.setdefault(row["scheme"], []).append((row[x_key], 100 * row["accuracy"]))
            series = sorted((np.mean([p[0] for p in v]), np.mean([p[1] for p in v]), min(p[1] for p in v),
                             max(p[1] for p in v), name) for name, v in points.items())
            xs, ys = [s[0] for s in series], [s[1] for s in series]
            errors = [[s[1] - s[2] for s in series], [s[3] - s[1] for s in series]]
            axis.errorbar(xs, ys, yerr=errors, fmt=marker, capsize=3, fillstyle="full" if kind == "uniform" else "none",
                          label=f"{kind} {method}")
            if kind == "uniform" and method == "QAT":
                for x_value, y_value, *_, name in series:
                    axis.annotate(name.split()[-1], (x_value, y_value), textcoords="offset points", xytext=(-22, -3),
                                  fontsize=8)
        axis.axhline(100 * np.mean([r["accuracy"] for r in rows if r["kind"] == "float"]), linestyle="--",
                     color="gray", label="float (Keras)")
        axis.set_xlabel(x_label)
        axis.set_ylabel("TFLite accuracy (%)")
        axis.set_ylim(bottom=min(100 * row["accuracy"] for row in rows) - 3)
        axis.legend(fontsize=8)
    axes[0].set_title("MNIST-1D CNN: accuracy vs .tflite size")
    axes[1].set_title("the same schemes, weights counted at their bits")
    return png_bytes(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=AdaRoundSettings().iterations)
    parser.add_argument("--report-only", action="store_true",
                        help="redraw the plot and the table in docs/benchmarks.md from bench/results/mixed.json, measuring nothing")
    args = parser.parse_args(argv)
    import json

    from bench.tables import replace_section
    from export.atomic import write_bytes, write_json

    if args.report_only:
        results = json.loads((RESULTS / "mixed.json").read_text())
        rows, seeds, iterations = results["rows"], results["seeds"], results["iterations"]
    else:
        rows = [row for seed in args.seeds for row in measure(seed, args.iterations)]
        seeds, iterations = args.seeds, args.iterations
    summary = summarize(rows, keys=("scheme", "method"))
    write_json(RESULTS / "mixed.json", {"rows": rows, "summary": summary, "seeds": seeds, "samples": SAMPLES,
                                        "iterations": iterations, "budgets": BUDGETS})
    write_bytes(RESULTS / "mixed_accuracy.png", plot(rows))
    text = (f"Generated by `make bench-mixed` (bench/mixed.py; MNIST-1D CNN, seeds {', '.join(map(str, seeds))}; "
            f"float 30 epochs, then QAT 15 epochs or PTQ AdaRound {iterations:,} iterations per layer on {SAMPLES} "
            f"samples; accuracy of the .tflite under LiteRT on the test split; mean (min-max)):\n\n"
            + table(rows, summary) + "\n\n![accuracy vs bytes](../bench/results/mixed_accuracy.png)")
    print(text)
    replace_section("mixed", text)


if __name__ == "__main__":
    main()
