"""Writes the "Results" section of docs/benchmarks.md from bench/results/qat_summary.json (never by hand).

    python -m bench.report          # rewrites docs/benchmarks.md between the results markers

Also draws bench/results/qat_accuracy.png (TFLite accuracy vs weight bits per method) and
qat_alpha_drift.png (smooth-vs-hard agreement vs final alpha). The section holds the MNIST-1D
and digits tables (TFLite int8 accuracy per method and weight
bit width, mean ± half the range over seeds), Keras->TFLite agreement, training time per epoch
against tfmot, and the benchmark targets evaluated from the same numbers (met or missed, by how
much).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.tables import replace_section
from export.atomic import write_bytes
from export.plots import new_figure, png_bytes

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "bench" / "results" / "qat_summary.json"
METHODS = ("tfmot-qat", "softedge-ste", "softedge-soft", "softedge-sigmoid", "softedge-tfmot-soft")


def _pct(entry, key):
    if entry is None or entry.get(key) is None:
        return "failed" if entry and entry.get("errors") else "-"
    spread = entry.get(f"{key}_spread") or 0.0
    return f"{100 * entry[key]:.1f}" + (f" ±{50 * spread:.1f}" if entry["seeds"] > 1 and spread else "")


def _find(summary, model, method, bits):
    return next((e for e in summary if e["model"] == model and e["method"] == method and e["weight_bits"] == bits), None)


def accuracy_table(summary, model) -> list[str]:
    bits_list = sorted({e["weight_bits"] for e in summary if e["model"] == model and e["weight_bits"] <= 8}, reverse=True)
    lines = [f"**{model}** — TFLite int8 accuracy (%), float TFLite {_pct(_find(summary, model, 'float', 32), 'tflite_acc')}, "
             f"post-training int8 {_pct(_find(summary, model, 'ptq-int8', 8), 'tflite_acc')}", "",
             "| method | " + " | ".join(f"W{b}A8" for b in bits_list) + " |", "|---|" + "---|" * len(bits_list)]
    for method in METHODS:
        cells = [_pct(_find(summary, model, method, b), "tflite_acc") for b in bits_list]
        if any(c != "-" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "| method | " + " | ".join(f"W{b} Keras->TFLite agree" for b in bits_list) + " | epoch time x tfmot (W3) |",
              "|---|" + "---|" * (len(bits_list) + 1)]
    for method in METHODS:
        cells = [_pct(_find(summary, model, method, b), "agreement") for b in bits_list]
        ratio = (_find(summary, model, method, 3) or {}).get("epoch_ratio_vs_tfmot")
        if any(c != "-" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {'-' if ratio is None else f'{ratio:.2f}'} |")
    return lines


def targets(summary, model="mnist1d_cnn") -> list[str]:
    """Issue targets for the MNIST-1D CNN, softedge soft rounding (Keras 3 path)."""
    float_acc = (_find(summary, model, "float", 32) or {}).get("tflite_acc")
    tfmot_w3 = (_find(summary, model, "tfmot-qat", 3) or {}).get("tflite_acc")
    rows = []

    def check(name, value, threshold, decimals=1):
        if value is None or threshold is None:
            rows.append(f"| {name} | - | - | not measured |")
            return
        verdict = "met" if value >= threshold - 1e-9 else f"missed by {100 * (threshold - value):.{decimals}f} points"
        rows.append(f"| {name} | {100 * value:.{decimals}f} | {100 * threshold:.{decimals}f} | {verdict} |")

    soft = {b: _find(summary, model, "softedge-soft", b) or {} for b in (8, 4, 3, 2)}
    for bits in (8, 4):
        check(f"W{bits}A8 TFLite acc >= float - 0.3", soft[bits].get("tflite_acc"), None if float_acc is None else float_acc - 0.003)
    check("W3A8 TFLite acc >= 90%", soft[3].get("tflite_acc"), 0.90)
    check("W3A8 TFLite acc >= tfmot W3A8 + 5", soft[3].get("tflite_acc"), None if tfmot_w3 is None else tfmot_w3 + 0.05)
    check("W2A8 TFLite acc >= 80%", soft[2].get("tflite_acc"), 0.80)
    agreements = [soft[b].get("agreement") for b in (8, 4, 3, 2) if soft[b].get("agreement") is not None]
    check("Keras->TFLite agreement >= 99.9% (worst bit width)", min(agreements) if agreements else None, 0.999, 2)
    ratio = soft[3].get("epoch_ratio_vs_tfmot")
    verdict = "-" if ratio is None else ("met" if ratio <= 1.1 else f"missed: {ratio:.2f}x")
    rows.append(f"| W3 training time per epoch <= 1.1x tfmot | {'-' if ratio is None else f'{ratio:.2f}x'} | 1.10x | {verdict} |")
    return ["| target (MNIST-1D CNN, softedge soft) | measured | threshold | verdict |", "|---|---|---|---|", *rows]


def plot_accuracy(summary: list[dict]) -> bytes:
    models = sorted({e["model"] for e in summary})
    figure, axes = new_figure(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        entries = [e for e in summary if e["model"] == model]
        for method in sorted({e["method"] for e in entries if e["method"] in METHODS}):
            points = sorted((e["weight_bits"], e["tflite_acc"]) for e in entries if e["method"] == method and e["tflite_acc"])
            axis.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=method)
        for baseline, style in (("float", "--"), ("ptq-int8", ":")):
            for e in entries:
                if e["method"] == baseline and e["tflite_acc"]:
                    axis.axhline(100 * e["tflite_acc"], linestyle=style, color="gray", label=f"{baseline} (TFLite)")
        axis.set_title(model)
        axis.set_xlabel("weight bits")
        axis.set_ylabel("TFLite int8 accuracy (%)")
        axis.legend(fontsize=8)
    return png_bytes(figure)


def plot_alpha_sweep(sweep: list[dict]) -> bytes:
    figure, axis = new_figure(figsize=(6, 4))
    for bits in sorted({r["weight_bits"] for r in sweep}):
        points = sorted((r["final_alpha"], r["smooth_hard_agreement"]) for r in sweep if r["weight_bits"] == bits)
        axis.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=f"W{bits}A8 soft")
    axis.set_xscale("log")
    axis.set_xlabel("final alpha")
    axis.set_ylabel("smooth vs hard top-1 agreement (%)")
    axis.set_title("MNIST-1D CNN: smooth -> hard drift vs final alpha")
    axis.legend()
    return png_bytes(figure)


def results_section(data: dict) -> str:
    summary = data["summary"]
    recipe = data["recipe"]
    lines = ["Generated by `make bench-qat` (`bench/qat.py`, then `bench/report.py`) from "
             "`bench/results/qat_summary.json`; "
             f"{data['seeds']} seed(s), {recipe['float_epochs']} float + {recipe['qat_epochs']} QAT epochs, "
             "LiteRT XNNPACK kernels, this 2-core machine.", ""]
    for model in sorted({e["model"] for e in summary}, reverse=True):
        lines += accuracy_table(summary, model) + [""]
    lines += targets(summary)
    lines += ["", "![TFLite accuracy vs weight bits](../bench/results/qat_accuracy.png)",
              "![smooth vs hard agreement vs final alpha](../bench/results/qat_alpha_drift.png)"]
    return "\n".join(lines)


def main() -> None:
    data = json.loads(SUMMARY.read_text())
    section = results_section(data)
    replace_section("results", section)
    write_bytes(SUMMARY.parent / "qat_accuracy.png", plot_accuracy(data["summary"]))
    write_bytes(SUMMARY.parent / "qat_alpha_drift.png", plot_alpha_sweep(data["alpha_sweep"]))
    print(section)


if __name__ == "__main__":
    main()
