"""`DriftReport`: what validation measured along smooth Keras -> hard Keras -> integer reference
-> runtime, as one typed record; rendered once each as text (the terminal summary), markdown
(report.md), JSON (report.json) and a PNG plot (drift.png).

Built by `export.validate.validate`; `app.runs.export_run` adds the export stage's sections
(target, scheme, float model, TFLite Micro, device check, failures). Its JSON form is the
contract: every field by name, the optional sections only when present. The record also reads
like that JSON (`report["accuracy"]["tflite"]`, `report.get("micro")`): a `Mapping` over it.
Imports numpy only (matplotlib when plotted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DriftReport", "float_ops_warning", "format_metric"]


def _section():
    """An optional section: left out of the JSON form while None."""
    return field(default=None, metadata={"optional": True})


@dataclass(eq=False)
class DriftReport(Mapping):
    """Every measurement of one validation (see `export.validate` for how each is taken).

    task: "classification", "regression" or "anomaly". samples: evaluation inputs.
    output_error_steps: {max, mean, step}: |TFLite - hard Keras| of the outputs in output steps.
    reference: {family: {outputs_equal, mismatched_elements, tensors_compared, first_mismatch}}:
    LiteRT against the integer reference, per kernel family. weights_exact / weight_mismatches:
    every kernel stored with the integers it trained with. layers: per-layer drift rows;
    worst_layer, first_layer_over_one_step, worst_local_layer, unmatched_layers summarize them.
    runtime: {name, kernels, family (what those kernels compute on this machine), layer_kernels,
    layer_source, machine}. by_kernels: each LiteRT
    family's metrics and output error. accuracy / agreement (classification) or error (others).
    exact: the chain's last links (`export.validate.exact_link`): the exact simulation of the
    runtime's family against the runtime (must be equal) and against the trained model.
    """

    task: str
    samples: int
    output_error_steps: dict
    reference: dict
    weights_exact: bool | None
    weight_mismatches: list
    worst_layer: dict | None
    first_layer_over_one_step: str | None
    worst_local_layer: dict | None
    layers: list
    unmatched_layers: list
    runtime: dict
    tflite_bytes: int
    float_ops: list
    layer_samples: int
    by_kernels: dict = field(default_factory=dict)
    reference_error: str | None = _section()      # why the integer reference could not run the model
    accuracy: dict | None = _section()            # classification: {smooth, hard, tflite}
    agreement: dict | None = _section()           # classification: top-1 agreement of each pair
    error: dict | None = _section()               # regression / anomaly: metrics per model
    exact: dict | None = _section()               # the exact simulation: vs the runtime, vs smooth and hard Keras
    # The export stage's sections (app.runs.export_run).
    float_tflite_bytes: int | None = _section()
    target: str | None = _section()
    scheme: dict | None = _section()
    float: dict | None = _section()               # the float model's metrics
    float_accuracy: float | None = _section()
    harden_agreement_with_alpha_inf: float | None = _section()
    micro: dict | None = _section()               # TFLite Micro: ops, arena, flash, its check
    device: dict | None = _section()              # the bundle's check.py result
    failures: list | None = _section()
    written_to: str | None = _section()

    # ------------------------------------------------------------------ the JSON form

    def _present(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)
                if not (f.metadata.get("optional") and getattr(self, f.name) is None)]

    def to_dict(self) -> dict:
        """The JSON form: every field, the optional sections only when present."""
        return {name: getattr(self, name) for name in self._present()}

    def __getitem__(self, key: str):
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())

    # ------------------------------------------------------------------ the renderings

    def to_json(self) -> str:
        """Strict JSON (a NaN or inf is written as null; `non_finite_failures` names it)."""
        from export.atomic import json_text

        return json_text(self.to_dict())

    def to_markdown(self) -> str:
        """report.md: the tables of every section."""
        return _markdown(self)

    def to_text(self) -> str:
        """The terminal summary after `softedge export` / `validate`."""
        return _text(self)

    def to_png(self) -> bytes:
        """drift.png: max and mean error per layer, in steps."""
        return _png(self)


def format_metric(value) -> str:
    """A metric for a table: 4 decimals, or a dash where it was not measured (no smooth model)."""
    return "-" if value is None else f"{value:.4f}"


def _markdown(report: DriftReport) -> str:
    runtime = report["runtime"]
    lines = ["# softedge drift report", "",
             f"{report['samples']} samples, {report['task']}; TFLite on {runtime['name']} ({runtime['kernels']} kernels; "
             f"per-layer drift on the integer reference of the same kernels).", ""]
    if report["task"] == "classification":
        acc, agr = report["accuracy"], report["agreement"]
        lines += ["| | smooth Keras | hard Keras | TFLite |", "|---|---|---|---|",
                  f"| accuracy | {format_metric(acc.get('smooth'))} | {acc['hard']:.4f} | {acc['tflite']:.4f} |", "",
                  "| agreement | value |", "|---|---|"]
        lines += [f"| {name.replace('_', ' / ')} | {value:.4f} |" for name, value in agr.items()]
        lines += ["", "| TFLite kernels | accuracy | agreement with hard Keras | max / mean output error (steps) |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {row['accuracy']:.4f} | {row['agreement_hard']:.4f} | "
                  f"{row['max_error_steps']:.2f} / {row['mean_error_steps']:.4f} |" for name, row in report["by_kernels"].items()]
    elif report["task"] == "anomaly":
        lines += ["| | ROC AUC | mean score of normal samples |", "|---|---|---|"]
        lines += [f"| {name} | {row['auc']:.4f} | {row['normal_mse']:.6g} |" for name, row in report["error"].items()]
        lines += ["", "| TFLite kernels | ROC AUC | max / mean output error vs hard Keras (steps) |", "|---|---|---|"]
        lines += [f"| {name} | {row['auc']:.4f} | {row['max_error_steps']:.2f} / {row['mean_error_steps']:.4f} |"
                  for name, row in report["by_kernels"].items()]
    else:
        lines += ["| | MSE | MAE |", "|---|---|---|"]
        lines += [f"| {name} | {row['mse']:.6g} | {row['mae']:.6g} |" for name, row in report["error"].items()]
        lines += ["", "| TFLite kernels | MSE | max / mean output error vs hard Keras (steps) |", "|---|---|---|"]
        lines += [f"| {name} | {row['mse']:.6g} | {row['max_error_steps']:.2f} / {row['mean_error_steps']:.4f} |"
                  for name, row in report["by_kernels"].items()]
    if report.exact is not None:
        lines += ["", *_chain_markdown(report)]
    lines += ["", "| kernels | runtime == integer reference | mismatched elements | tensors compared |", "|---|---|---|---|"]
    for name, row in report.get("reference", {}).items():
        equal = row.get("runtime_error") or ("yes" if row["outputs_equal"] and not row["mismatched_elements"] else "NO")
        lines.append(f"| {name} | {equal} | {row['mismatched_elements']} | {row['tensors_compared']} |")
    if report.get("reference_error"):
        lines.append(f"\n{report['reference_error']}")
    if report.get("float_ops"):
        lines += ["", "| op of a layer left in float | layer | computes in | tensor | float weight bytes |", "|---|---|---|---|---|"]
        lines += [f"| {row['op']} | {row.get('layer') or '?'} | {row.get('type', 'float32')} | {row['tensor'].split(';')[0]} | "
                  f"{row['weight_bytes']} |" for row in report["float_ops"]]
    if report.micro is not None:
        lines += ["", *_micro_markdown(report["micro"])]
    out = report["output_error_steps"]
    lines += ["", f"Output error (hard Keras vs TFLite): max {out['max']:.2f}, mean {out['mean']:.4f} steps "
              f"of {out['step']:.4g}. Weights stored exactly: {report['weights_exact']}.", "",
              "| layer | TFLite tensor | step | max error (steps) | mean error (steps) | share > 1 step | local max (steps) |",
              "|---|---|---|---|---|---|---|"]
    for row in report["layers"]:
        tensor = (row["tflite_tensor"] or "").split(";")[0]
        if row["max_error_steps"] is None:
            lines.append(f"| {row['name']} | unmatched | {row['scale']:.4g} | | | | |")
        else:
            local = row.get("local_max_error_steps")
            lines.append(f"| {row['name']} | {tensor} | {row['scale']:.4g} | {row['max_error_steps']:.2f} | "
                         f"{row['mean_error_steps']:.4f} | {row['over_one_step']:.4f} | "
                         f"{'' if local is None else f'{local:.2f}'} |")
    worst = report.get("worst_layer")
    if worst:
        lines += ["", f"Worst layer: {worst['name']} ({worst['error_steps']:.2f} steps). "
                  f"First layer over one step: {report['first_layer_over_one_step']}."]
    local = report.get("worst_local_layer")
    if local:
        lines += [f"Worst local error (the layer's own, from the device's inputs): {local['name']} "
                  f"({local['error_steps']:.2f} steps)."]
    return "\n".join(lines) + "\n"


def _chain_markdown(report: DriftReport) -> list[str]:
    """The chain smooth -> device (the exact simulation) -> runtime, one row per link."""
    exact = report["exact"]
    if exact.get("skipped"):
        return [f"Exact simulation not run: {exact['skipped']}"]
    family = exact["family"]
    metric = next(iter(exact["metrics"]))
    agreement = report.get("agreement") or {}
    rows = [("smooth Keras -> hard Keras (float simulation)", _agreement_cell(agreement.get("smooth_hard")), ""),
            (f"smooth Keras -> device ({family}, the exact simulation)", _agreement_cell(exact.get("agreement_smooth")),
             f"{metric} {exact['metrics'][metric]:.4f}"),
            (f"hard Keras -> device ({family})", _agreement_cell(exact.get("agreement_hard")), ""),
            (f"exact simulation -> LiteRT ({family})",
             "equal" if exact["outputs_equal_runtime"] else f"{exact['mismatched_output_elements']} output elements DIFFER", "")]
    return ["| link | top-1 agreement / integers | device metric |", "|---|---|---|",
            *[f"| {link} | {cell} | {metric_cell} |" for link, cell, metric_cell in rows]]


def _agreement_cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _png(report: DriftReport) -> bytes:
    from export.plots import new_figure, png_bytes

    rows = [row for row in report["layers"] if row["max_error_steps"] is not None]
    figure, axis = new_figure(figsize=(max(6, 0.6 * len(rows)), 4))
    positions = np.arange(len(rows))
    axis.bar(positions - 0.2, [r["max_error_steps"] for r in rows], 0.4, label="max")
    axis.bar(positions + 0.2, [r["mean_error_steps"] for r in rows], 0.4, label="mean")
    axis.axhline(1.0, color="red", linestyle="--", linewidth=1, label="one step")
    axis.set_xticks(positions, [r["name"] for r in rows], rotation=45, ha="right")
    axis.set_ylabel("|TFLite - hard Keras| (quantization steps)")
    axis.set_title(f"Per-layer drift, hard Keras vs TFLite ({report['runtime']['layer_kernels']} kernels, "
                   f"{min(report['samples'], report.get('layer_samples', report['samples']))} inputs)")
    axis.legend()
    return png_bytes(figure)


def _micro_markdown(micro: dict) -> list[str]:
    lines = ["## TFLite Micro", ""]
    if micro.get("skipped"):
        return lines + [f"Not checked: {micro['skipped']}"]
    lines.append(f"Ops: {', '.join(micro['ops'])}.")
    if not micro.get("runs"):
        return lines + ["", f"Does not run: {micro.get('error')}"]
    peak = micro.get("peak") or {}
    rows = [("tensor arena (bytes, bisection)", micro["arena_bytes"]),
            ("tensor arena (bytes, recording allocator)", micro.get("arena_recorded_bytes")),
            ("flash: model data (bytes)", micro["flash_bytes"]),
            ("activations peak at", f"{peak.get('layer')} ({peak.get('op')}, {peak.get('live_bytes')} bytes live)"),
            ("outputs == integer reference (micro)", micro.get("outputs_equal")),
            ("mismatched output elements", micro.get("mismatched_elements")),
            ("accuracy", micro.get("accuracy")), ("ROC AUC", micro.get("auc")), ("MSE", micro.get("mse")),
            ("time per inference on this host (us)", (micro.get("us_per_inference") or {}).get("mean"))]
    lines += ["", "| | TFLite Micro |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
              for name, value in rows if value is not None]
    return lines


def float_ops_warning(rows: list[dict]) -> str:
    """One warning line naming the ops of layers left in float, and their float bytes (an op the
    converter ran in int8 inside such a layer is marked "int8")."""
    ops = ", ".join(f"{row['op']}{' int8' if row.get('type', 'float32') != 'float32' else ''} "
                    f"({row['tensor'].split(';')[0]})" for row in rows)
    return (f"warning: {len(rows)} op(s) of layers left in float on the device ({sum(row['weight_bytes'] for row in rows)} "
            f"float weight bytes): {ops}")


def _text(report: DriftReport) -> str:
    """The short drift summary printed after export/validate."""
    lines = []
    if report["task"] == "classification":
        acc, agr = report["accuracy"], report["agreement"]
        lines += ["| | smooth Keras | hard Keras | TFLite |", "|---|---|---|---|",
                  f"| accuracy | {format_metric(acc.get('smooth'))} | {acc['hard']:.4f} | {acc['tflite']:.4f} |", "",
                  "agreement: " + ", ".join(f"{k.replace('_', ' vs ')} {v:.4f}" for k, v in agr.items())]
    elif report["task"] == "anomaly":
        lines.append("anomaly detection, ROC AUC: " + ", ".join(f"{name} {row['auc']:.4f}"
                                                                for name, row in report["error"].items()))
    else:
        lines.append("regression: " + ", ".join(f"{name} MSE {row['mse']:.6g} MAE {row['mae']:.6g}"
                                                for name, row in report["error"].items()))
    exact = report.get("exact")
    if exact and not exact.get("skipped"):
        lines.append(f"exact simulation ({exact['family']}) == LiteRT outputs: "
                     + ("yes" if exact["outputs_equal_runtime"] else f"NO, {exact['mismatched_output_elements']} elements differ")
                     + (f"; smooth Keras vs device agreement {exact['agreement_smooth']:.4f}" if exact.get("agreement_smooth") is not None else ""))
    out = report["output_error_steps"]
    lines.append(f"output error hard Keras vs TFLite ({report['runtime']['kernels']} kernels): max {out['max']:.2f}, "
                 f"mean {out['mean']:.4f} steps; weights stored exactly: {report['weights_exact']}")
    reference = report.get("reference") or {}
    if reference:
        lines.append("runtime == integer reference: " + ", ".join(
            f"{name} {row.get('runtime_error') and 'not loadable' or ('exact' if row['mismatched_elements'] == 0 else str(row['mismatched_elements']) + ' elements differ')}"
            f" ({row['tensors_compared']} tensors)" for name, row in reference.items()))
    elif report.get("reference_error"):
        lines.append(report["reference_error"])
    worst = report.get("worst_layer")
    if worst:
        local = report.get("worst_local_layer") or {}
        lines.append(f"worst layer ({report['runtime']['layer_kernels']} kernels): {worst['name']} "
                     f"{worst['error_steps']:.2f} steps accumulated; first over one step: {report['first_layer_over_one_step']}"
                     + (f"; worst local (its own error): {local['name']} {local['error_steps']:.2f} steps" if local else ""))
    if report.float_tflite_bytes is not None:
        lines.append(f".tflite {report['tflite_bytes']} bytes vs float {report['float_tflite_bytes']} bytes")
    if report.get("float_ops"):
        lines.append(float_ops_warning(report["float_ops"]))
    device = report.get("device")
    if device and "matches" in device:
        lines.append(f"device check ({device['runtime']}, {device['kernels']}): matches {', '.join(device['matches']) or 'no family'}"
                     + (f", accuracy {device['accuracy']:.4f}" if device.get("accuracy") is not None else "")
                     + (f", ROC AUC {device['auc']:.4f}" if device.get("auc") is not None else "")
                     + f", p50 {device['latency_us']['p50']:.1f} us -> {'OK' if device['ok'] else 'FAILED'}")
    if report.micro is not None:
        lines.append(_micro_line(report["micro"]))
    return "\n".join(lines)


def _micro_line(micro: dict) -> str:
    """One line: TFLite Micro runs or not, arena, flash, integers, accuracy."""
    if micro.get("skipped"):
        return f"TFLite Micro: not checked ({micro['skipped']})"
    if not micro.get("runs"):
        return f"TFLite Micro: does not run ({micro.get('error')})"
    parts = [f"arena {micro['arena_bytes']} bytes", f"flash {micro['flash_bytes']} bytes (model data)"]
    if micro.get("mismatched_elements") is not None:
        parts.append("outputs == integer reference" if micro["outputs_equal"]
                     else f"{micro['mismatched_elements']} output elements differ from the integer reference")
    for metric, label in (("accuracy", "accuracy"), ("auc", "ROC AUC")):
        if micro.get(metric) is not None:
            parts.append(f"{label} {micro[metric]:.4f}")
    if micro.get("us_per_inference"):
        parts.append(f"{micro['us_per_inference']['mean']:.0f} us per inference here")
    status = "" if "ok" not in micro else (" -> OK" if micro["ok"] else " -> FAILED")
    return f"TFLite Micro ({len(micro['ops'])} ops): " + ", ".join(parts) + status


