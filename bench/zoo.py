"""The model zoo trained and exported on its synthetic data (python -m bench.zoo).

For each MLPerf Tiny reference (ds_cnn, resnet8, mobilenet_v1_025, fc_autoencoder) and
mobilenet_v2_035, on `--data synthetic`: float training once, then per weight width (W8, W4,
W3) quantize + annealed QAT from the same float weights, harden, convert to int8 and validate
on LiteRT (XNNPACK) and the integer reference. Columns: the task metric (accuracy, or ROC AUC
for the autoencoder) of float / smooth / hard Keras / TFLite; the trained (smooth) model against
the device: top-1 agreement with the exact simulation of the XNNPACK family, whose outputs equal
LiteRT's (`report.exact`); hard-vs-TFLite and smooth-vs-hard top-1 agreement; the worst per-layer drift, local (a layer's own, from the device's inputs)
and accumulated from the input (hard Keras vs the device's integers); whether every weight is stored exactly and LiteRT equals the integer
reference; .tflite bytes against post-training int8 of the float model, and the int4-weights
file against int8 (W4/W3); the QAT epoch time against the float epoch (median of the epochs
that compile nothing, same process); and the time of each stage. Writes bench/results/zoo.json.

    python -m bench.zoo                     # float 10 epochs, QAT 4, W8 W4 W3, every model
    python -m bench.zoo --models ds_cnn --bits 4 --float-epochs 4 --qat-epochs 2
    QUICK=1 python -m bench.zoo             # W4 only, 3 + 1 epochs
    python -m bench.zoo --models resnet8    # re-measure one model, keep the other rows
    python -m bench.zoo --device-arithmetic none \
        --output bench/results/zoo_float_simulation.json    # QAT on the float simulation throughout
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from bench.qat import EpochTimer, qat_timer  # noqa: E402
from bench.tables import replace_section  # noqa: E402
from export.atomic import write_json  # noqa: E402
from export.harden import harden  # noqa: E402
from export.tflite import convert  # noqa: E402
from export.validate import validate  # noqa: E402
from models import datasets, registry  # noqa: E402
from models.training import Recipe, evaluate, learned_step_for, train_float, train_quantized  # noqa: E402
from toolkit import QuantScheme  # noqa: E402
from toolkit.device_families import DEVICE_ARITHMETIC_NAMES, device_arithmetic_named  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODELS = ("ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder", "mobilenet_v2_035")


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _metric(task: str) -> str:
    return "auc" if task == "anomaly" else "accuracy"


def measure_model(name: str, bits_list, recipe: Recipe, seed: int = 0) -> list[dict]:
    data = datasets.load("synthetic", model=name)
    task = data.task
    keras.utils.set_random_seed(seed)
    model = registry.build(name, data.input_shape, data.num_classes)
    float_timer = EpochTimer()
    train_float(model, data, recipe, seed=seed, callbacks=[float_timer], task=task)
    float_metric = evaluate(model, data.x_test, data.y_test, task)[_metric(task)]
    ptq_bytes = len(convert(model, "int8", representative_data=data.x_train[:200]))
    rows = []
    for bits in bits_list:
        scheme = QuantScheme(weight_bits=bits, learned_step=learned_step_for(bits))
        timer = qat_timer(recipe)
        start = time.perf_counter()
        smooth, history = train_quantized(model, data, scheme, recipe, seed=seed, callbacks=[timer], task=task)
        qat_seconds = time.perf_counter() - start
        hard, harden_s = _timed(harden, smooth)
        tflite_bytes, convert_s = _timed(convert, hard, "int8")
        report, validate_s = _timed(validate, hard, tflite_bytes, data.x_test, data.y_test, smooth_model=smooth,
                                    kernels="xnnpack", task=task)
        int4_bytes = len(convert(hard, "int4-weights")) if bits <= 4 else None
        metrics = report["accuracy"] if task == "classification" else {k: v["auc"] for k, v in report["error"].items()}
        reference = report.get("reference", {})
        row = {
            "model": name, "weight_bits": bits, "task": task, "metric": _metric(task),
            "float": float_metric, "smooth": metrics["smooth"], "hard": metrics["hard"], "tflite": metrics["tflite"],
            "agreement_hard_tflite": report.get("agreement", {}).get("hard_tflite"),
            "agreement_smooth_hard": report.get("agreement", {}).get("smooth_hard"),
            "agreement_smooth_device": (report.get("exact") or {}).get("agreement_smooth"),
            "exact_equals_runtime": (report.get("exact") or {}).get("outputs_equal_runtime"),
            "worst_layer_steps": (report.get("worst_layer") or {}).get("error_steps"),
            "worst_local_steps": (report.get("worst_local_layer") or {}).get("error_steps"),
            "output_error_steps_max": report["output_error_steps"]["max"],
            "weights_exact": report["weights_exact"],
            "reference_mismatches": {family: row.get("runtime_error") or row["mismatched_elements"]
                                     for family, row in reference.items()},
            "tflite_bytes": len(tflite_bytes), "ptq_int8_bytes": ptq_bytes, "int4_weights_bytes": int4_bytes,
            "float_epoch_s": float_timer.seconds, "qat_epoch_s": timer.seconds,
            "stage_s": {"quantize_and_qat": qat_seconds, "harden": harden_s, "convert": convert_s, "validate": validate_s},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _yes(value) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def table(rows) -> str:
    lines = ["| model | W | metric: float / smooth / hard / TFLite | trained=device top-1 | hard=TFLite top-1 | smooth=hard top-1 | worst layer: local / accumulated (steps) "
             "| exact, ref == LiteRT, simulation == LiteRT | bytes / PTQ int8 | int4 / int8 | QAT / float epoch | quantize+QAT, harden, convert, validate (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def agree(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    for r in rows:
        def pct(value, accuracy=r["metric"] == "accuracy"):
            return f"{100 * value:.1f}" if accuracy else f"{value:.3f}"

        mismatches = r["reference_mismatches"]
        reference = "yes" if mismatches and all(v == 0 for v in mismatches.values()) else str(mismatches or "not run")
        int4 = "-" if r["int4_weights_bytes"] is None else f"{r['int4_weights_bytes'] / r['tflite_bytes']:.2f}"
        stages = r["stage_s"]
        lines.append(
            f"| {r['model']} | {r['weight_bits']} | {r['metric']} {pct(r['float'])} / {pct(r['smooth'])} / {pct(r['hard'])} / "
            f"{pct(r['tflite'])} | {agree(r.get('agreement_smooth_device'))} | {agree(r['agreement_hard_tflite'])} | "
            f"{agree(r['agreement_smooth_hard'])} | {r['worst_local_steps']:.0f} / {r['worst_layer_steps']:.0f} | "
            f"{r['weights_exact']}, {reference}, {_yes(r.get('exact_equals_runtime'))} | {r['tflite_bytes'] / r['ptq_int8_bytes']:.3f} | "
            f"{int4} | {r['qat_epoch_s'] / r['float_epoch_s']:.2f} | {stages['quantize_and_qat']:.0f}, {stages['harden']:.1f}, "
            f"{stages['convert']:.1f}, {stages['validate']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--bits", nargs="+", type=int, default=[8, 4, 3])
    parser.add_argument("--float-epochs", type=int, default=10)
    parser.add_argument("--qat-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device-arithmetic", choices=DEVICE_ARITHMETIC_NAMES, default=Recipe.device_arithmetic,
                        help="train the last --device-epochs QAT epochs on this family's arithmetic (none: the float "
                             "simulation throughout)")
    parser.add_argument("--device-epochs", type=int, default=Recipe.device_epochs)
    parser.add_argument("--output", type=Path, default=None,
                        help="write the rows here only (not bench/results/zoo.json nor docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if os.environ.get("QUICK", "") not in ("", "0"):  # make bench QUICK=1: a smoke run
        args.bits, args.float_epochs, args.qat_epochs = [4], 3, 1
    recipe = dataclasses.replace(Recipe(), float_epochs=args.float_epochs, qat_epochs=args.qat_epochs,
                                 **device_arithmetic_named(args.device_arithmetic, args.device_epochs))
    kept = [] if args.output else _kept_rows(args.models, recipe, args.seed)
    rows = []
    for name in args.models:  # written after each model, so a long run keeps what it measured
        rows += measure_model(name, args.bits, recipe, args.seed)
        write_json(args.output or RESULTS / "zoo.json", {"recipe": recipe.to_dict(), "seed": args.seed, "rows": kept + rows})
    print(table(kept + rows))
    if args.output is None:
        write_readme_section(kept + rows, recipe)


def write_readme_section(rows, recipe: Recipe) -> None:
    """Rewrites docs/benchmarks.md between the zoo markers with the table."""
    device = (f", the last {recipe.device_epochs or recipe.qat_epochs} on {recipe.device_arithmetic}'s arithmetic"
              if recipe.device_arithmetic else ", the float simulation throughout")
    replace_section("zoo", "\n".join([f"Generated by `make bench-zoo` (bench/zoo.py; float {recipe.float_epochs} epochs, "
                                      f"QAT {recipe.qat_epochs}{device}, seed 0, synthetic data, LiteRT XNNPACK):", "", table(rows)]))


def _kept_rows(models, recipe: Recipe, seed: int) -> list[dict]:
    """The rows of other models in bench/results/zoo.json when it was made with the same recipe
    and seed: `--models M` re-measures M and keeps the rest of the table."""
    path = RESULTS / "zoo.json"
    if not path.is_file():
        return []
    previous = json.loads(path.read_text())
    if previous.get("recipe") != json.loads(json.dumps(recipe.to_dict())) or previous.get("seed") != seed:
        return []
    return [row for row in previous["rows"] if row["model"] not in models]


if __name__ == "__main__":
    main()
