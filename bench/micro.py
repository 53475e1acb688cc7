"""Every zoo model on TFLite Micro, int8 and int4 weights side by side (python -m bench.micro).

For each model: `softedge train` at 4-bit weights (short: the figures measured here do not
depend on how well the model is trained), then `softedge export --target int8` and
`--target int4-weights`, each of which runs the bundle's TFLite Micro check. Columns, int8 /
int4: whether TFLite Micro runs the model; output elements that differ from the integer
reference's `micro` family over every evaluation input (one inference at a time); the smallest
tensor arena (bisection, checked against the recording allocator); the model data's flash
bytes; TFLite Micro's time per inference on this host (its portable reference kernels) against
LiteRT's batch-1 p50 (XNNPACK); the task metric on TFLite Micro and on LiteRT. Writes
bench/results/micro.json and the table in docs/benchmarks.md.

    python -m bench.micro                       # every model, float 2 epochs + QAT 1
    python -m bench.micro --models ds_cnn       # re-measure one model, keep the other rows
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app.runs import ExportOptions, RunConfig, export_run, train_run  # noqa: E402
from bench.tables import replace_section  # noqa: E402
from export.atomic import write_json  # noqa: E402
from export.targets import Target  # noqa: E402
from models.training import Recipe  # noqa: E402
from toolkit import QuantScheme  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODELS = ("digits_cnn", "mnist1d_cnn", "ds_cnn", "resnet8", "mobilenet_v1_025", "fc_autoencoder", "mobilenet_v2_035")
DATA = {"digits_cnn": "digits", "mnist1d_cnn": "mnist1d"}   # the rest: synthetic data for the model
TARGETS = (Target.INT8, Target.INT4_WEIGHTS)


def _metric(report: dict, micro: bool) -> tuple[str, float | None]:
    """(name, value) of the task metric on TFLite Micro or on LiteRT."""
    if report["task"] == "anomaly":
        return "AUC", (report["micro"].get("auc") if micro else report["by_kernels"]["xnnpack"]["auc"])
    if report["task"] == "classification":
        return "accuracy", (report["micro"].get("accuracy") if micro else report["by_kernels"]["xnnpack"]["accuracy"])
    return "MSE", (report["micro"].get("mse") if micro else report["by_kernels"]["xnnpack"]["mse"])


def measure_model(name: str, recipe: Recipe, seed: int, workdir: Path) -> dict:
    run_dir = workdir / name
    train_run(RunConfig(name, DATA.get(name, "synthetic"), QuantScheme(weight_bits=4), recipe, seed), run_dir)
    row = {"model": name, "weight_bits": 4}
    for target in TARGETS:
        report, failures = export_run(run_dir, ExportOptions(run_dir / f"export-{target}", target=target))
        micro = report["micro"]
        metric, micro_value = _metric(report, micro=True)
        row[target] = {
            "runs": micro.get("runs"), "ops": micro["ops"], "missing_ops": micro.get("missing_ops", []),
            "skipped": micro.get("skipped"), "samples": micro.get("samples"),
            "mismatched_elements": micro.get("mismatched_elements"), "arena_bytes": micro.get("arena_bytes"),
            "arena_recorded_bytes": micro.get("arena_recorded_bytes"), "flash_bytes": micro["flash_bytes"],
            "litert_bytes": report["tflite_bytes"], "peak": micro.get("peak"),
            "micro_us": (micro.get("us_per_inference") or {}).get("mean"),
            "litert_us": report["device"]["latency_us"]["p50"], "metric": metric, "micro_metric": micro_value,
            "litert_metric": _metric(report, micro=False)[1], "failures": failures,
        }
        print(f"{name} {target}: {json.dumps(row[target], default=str)[:400]}", flush=True)
    return row


def table(rows) -> str:
    """Two rows per model, int8 then int4-weights, so arena and flash sit side by side."""
    lines = ["| model | weights stored | runs on TFLM | output elements != integer reference | arena bytes "
             "| flash bytes (model data) | TFLM us | LiteRT us | metric | TFLM | LiteRT |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for target in TARGETS:
            cell = row[target]
            runs = ("yes" if cell["runs"] else "not checked" if cell["runs"] is None
                    else "no: " + ", ".join(m["op"] for m in cell["missing_ops"]))

            def number(value, fmt="{:,}"):
                return "-" if value is None else fmt.format(value)

            mismatched = "-" if cell["mismatched_elements"] is None else \
                f"{cell['mismatched_elements']} (all {cell['samples']} inputs)"
            lines.append(f"| {row['model']} | {target.replace('-weights', '')} | {runs} | {mismatched} | "
                         f"{number(cell['arena_bytes'])} | {number(cell['flash_bytes'])} | "
                         f"{number(cell['micro_us'], '{:,.0f}')} | {number(cell['litert_us'], '{:,.0f}')} | "
                         f"{cell['metric']} | {number(cell['micro_metric'], '{:.3f}')} | "
                         f"{number(cell['litert_metric'], '{:.3f}')} |")
    return "\n".join(lines)


def write_readme(rows, setup: dict) -> None:
    recipe = setup["recipe"]
    replace_section("micro", "\n".join([
        f"Generated by `make bench-micro` (bench/micro.py; 4-bit weights stored as int8 or packed int4, float "
        f"{recipe['float_epochs']} epochs + QAT {recipe['qat_epochs']}, seed {setup['seed']}; times per inference on "
        "this host: TFLite Micro's portable reference kernels vs LiteRT XNNPACK at batch 1; the metric on every "
        "evaluation input):", "", table(rows)]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-only", action="store_true", help="rewrite the table in docs/benchmarks.md from micro.json")
    args = parser.parse_args(argv)
    recipe = Recipe(float_epochs=args.float_epochs, qat_epochs=args.qat_epochs)
    setup = {"recipe": json.loads(json.dumps(recipe.to_dict())), "seed": args.seed}
    path = RESULTS / "micro.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    if args.table_only:
        print(table(previous["rows"]))
        write_readme(previous["rows"], previous)
        return
    kept = [row for row in previous.get("rows", [])
            if row["model"] not in args.models and {k: previous.get(k) for k in setup} == setup]
    rows = []
    with tempfile.TemporaryDirectory(prefix="softedge-bench-micro-") as workdir:
        for name in args.models:  # written after each model, so a long run keeps what it measured
            rows.append(measure_model(name, recipe, args.seed, Path(workdir)))
            write_json(path, {**setup, "rows": kept + rows})
    order = {name: i for i, name in enumerate(MODELS)}
    every = sorted(kept + rows, key=lambda row: order.get(row["model"], len(order)))
    print(table(every))
    write_readme(every, setup)


if __name__ == "__main__":
    main()
