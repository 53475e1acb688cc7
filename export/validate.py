"""Drift report for the chain smooth Keras -> hard Keras -> TFLite, and the checks on it.

Over an evaluation set:
- accuracy of each model; pairwise top-1 agreement;
- output error between hard Keras and TFLite in units of the output quantization step
  (max and mean), and whether every weight tensor was stored exactly as trained;
- per-layer drift: at every `FakeQuant` of the hard model (each int8 tensor of the TFLite
  model), |TFLite - Keras| / step over the inputs, max and mean, read from the interpreter with
  preserve-all-tensors; the first layer whose error exceeds one step is named. (Not available
  for tfmot bridge models, whose fake quants sit inside tfmot's wrappers: `layers` is empty.)

The TFLite side runs on `ai_edge_litert` with named kernels (the report records them): outputs
with `kernels` (default "xnnpack", LiteRT's default CPU path), per-layer tensors with
"builtin" kernels (a delegate does not keep intermediate tensors).
"""

from __future__ import annotations

import platform

import keras
import numpy as np

from export.atomic import write_bytes, write_json, write_text
from export.device.check import (
    dequantize,
    load_interpreter,
    predict,
    quantize_input,
    run,
    runtime_name,
)
from export.hard_layers import FakeQuant
from export.plots import new_figure, png_bytes
from export.tflite import weight_mismatches

__all__ = ["agreement", "check", "per_layer_drift", "validate", "write_report"]

# An error "exceeds one step" above this: Keras and TFLite hold the same step in slightly
# different floats, so an off-by-one element measures 1.0000001 steps, not 1.
ONE_STEP = 1.0 + 1e-3


def _top1(outputs) -> np.ndarray:
    return np.argmax(np.asarray(outputs), axis=-1)


def agreement(a, b) -> float:
    """Top-1 agreement of two output arrays."""
    return float(np.mean(_top1(a) == _top1(b)))


def _activation_tensors(interpreter) -> list[dict]:
    """int8 tensors that ops produce, or the graph input: the activations."""
    produced = {int(i) for op in interpreter._get_ops_details() for i in op["outputs"]}
    produced |= {d["index"] for d in interpreter.get_input_details()}
    return [d for d in interpreter.get_tensor_details()
            if d["index"] in produced and d["dtype"] == np.int8 and d["quantization"][0] > 0]


def _match(layer: FakeQuant, shape, tensors: list[dict]):
    scale, zero_point = layer.grid()
    size = int(np.prod(shape[1:]))
    candidates = [t for t in tensors
                  if abs(t["quantization"][0] - scale) <= 1e-4 * scale and t["quantization"][1] == zero_point
                  and int(np.prod(t["shape"][1:])) == size]
    named = [t for t in candidates if f"/{layer.name}" in t["name"]]
    return (named or candidates or [None])[-1]


def per_layer_drift(hard_model: keras.Model, tflite_bytes: bytes, x: np.ndarray, kernels: str = "builtin") -> list[dict]:
    """Error at each FakeQuant of `hard_model`, in steps of that tensor, hard Keras vs TFLite."""
    quant_layers = [layer for layer in hard_model.layers if isinstance(layer, FakeQuant)]
    if not quant_layers:  # a tfmot (tf_keras) model: its fake quants live inside wrappers
        return []
    probe = keras.Model(hard_model.inputs, [layer.output for layer in quant_layers])
    keras_values = probe.predict(x, verbose=0, batch_size=256)
    keras_values = keras_values if isinstance(keras_values, list) else [keras_values]
    interpreter = load_interpreter(tflite_bytes, kernels, preserve_all_tensors=True)
    input_detail = interpreter.get_input_details()[0]
    run(interpreter, quantize_input(x, input_detail))
    tensors = _activation_tensors(interpreter)
    rows = []
    for layer, expected in zip(quant_layers, keras_values, strict=True):
        scale, zero_point = layer.grid()
        tensor = _match(layer, expected.shape, tensors)
        row = {"name": layer.name, "scale": scale, "zero_point": zero_point, "tflite_tensor": None,
               "max_error_steps": None, "mean_error_steps": None, "over_one_step": None}
        if tensor is not None:
            actual = dequantize(np.array(interpreter.get_tensor(tensor["index"])), tensor).reshape(expected.shape)
            error = np.abs(actual.astype(np.float64) - expected.astype(np.float64)) / scale
            row.update(tflite_tensor=tensor["name"][:200], max_error_steps=float(error.max()),
                       mean_error_steps=float(error.mean()), over_one_step=float(np.mean(error > ONE_STEP)))
        rows.append(row)
    return rows


def validate(hard_model: keras.Model, tflite_bytes: bytes, x: np.ndarray, y: np.ndarray, smooth_model=None,
             kernels: str = "xnnpack", layer_kernels: str = "builtin", layer_samples: int = 256) -> dict:
    """The drift report (a JSON-serializable dict); see the module docstring."""
    hard = hard_model.predict(x, verbose=0, batch_size=256)
    # The same outputs on every kernel path: they round the requantization differently
    # (XNNPACK in float, the builtin kernels in fixed point with two roundings).
    outputs = {name: predict(load_interpreter(tflite_bytes, name), x) for name in dict.fromkeys(("xnnpack", "builtin", kernels))}
    tflite = outputs[kernels]
    output_detail = load_interpreter(tflite_bytes, kernels).get_output_details()[0]
    output_step = output_detail["quantization"][0] or _last_step(hard_model) or 1.0
    error_steps = np.abs(tflite.astype(np.float64) - hard.astype(np.float64)) / output_step
    layers = per_layer_drift(hard_model, tflite_bytes, x[:layer_samples], layer_kernels)
    measured = [row for row in layers if row["max_error_steps"] is not None]
    worst = max(measured, key=lambda row: row["max_error_steps"], default=None)
    first_over = next((row["name"] for row in measured if row["max_error_steps"] > ONE_STEP), None)
    report = {
        "samples": int(len(y)),
        "accuracy": {"hard": float(np.mean(_top1(hard) == y)), "tflite": float(np.mean(_top1(tflite) == y))},
        "agreement": {"hard_tflite": agreement(hard, tflite)},
        "output_error_steps": {"max": float(error_steps.max()), "mean": float(error_steps.mean()), "step": float(output_step)},
        "weights_exact": None,
        "weight_mismatches": [],
        "worst_layer": {"name": worst["name"], "error_steps": worst["max_error_steps"]} if worst else None,
        "first_layer_over_one_step": first_over,
        "layers": layers,
        "unmatched_layers": [row["name"] for row in layers if row["max_error_steps"] is None],
        "runtime": {"name": runtime_name(), "kernels": kernels, "layer_kernels": layer_kernels,
                    "machine": platform.machine()},
        "tflite_bytes": len(tflite_bytes),
        "layer_samples": int(min(layer_samples, len(y))),
    }
    if smooth_model is not None:
        smooth = smooth_model.predict(x, verbose=0, batch_size=256)
        report["accuracy"]["smooth"] = float(np.mean(_top1(smooth) == y))
        report["agreement"]["smooth_hard"] = agreement(smooth, hard)
        report["agreement"]["smooth_tflite"] = agreement(smooth, tflite)
    report["by_kernels"] = {}
    for name, other in outputs.items():
        steps = np.abs(other.astype(np.float64) - hard.astype(np.float64)) / output_step
        report["by_kernels"][name] = {"accuracy": float(np.mean(_top1(other) == y)),
                                      "agreement_hard": agreement(hard, other),
                                      "max_error_steps": float(steps.max()), "mean_error_steps": float(steps.mean())}
    mismatches = weight_mismatches(hard_model, tflite_bytes)
    report["weights_exact"] = not mismatches
    report["weight_mismatches"] = mismatches
    return report


def _last_step(hard_model):
    quant_layers = [layer for layer in hard_model.layers if isinstance(layer, FakeQuant)]
    return quant_layers[-1].grid()[0] if quant_layers else None


def check(report: dict, max_drift: float | None = None, min_agreement: float | None = None) -> list[str]:
    """Messages for every threshold the report breaks (empty: it passes)."""
    failures = []
    worst = report.get("worst_layer") or {}
    worst_text = f"worst layer {worst.get('name')!r} ({worst.get('error_steps', 0):.2f} steps)" if worst else "no layer measured"
    if max_drift is not None and worst and worst["error_steps"] > max_drift:
        failures.append(f"per-layer drift {worst['error_steps']:.2f} steps > --max-drift {max_drift}: {worst_text}")
    agreement = report["agreement"]["hard_tflite"]
    if min_agreement is not None and agreement < min_agreement:
        failures.append(f"hard Keras / TFLite agreement {agreement:.4f} < --min-agreement {min_agreement}; {worst_text}")
    if report.get("weights_exact") is False:
        failures.append("weights not stored exactly: " + "; ".join(report["weight_mismatches"]))
    return failures


def _markdown(report: dict) -> str:
    acc, agr = report["accuracy"], report["agreement"]
    lines = [
        "# softedge drift report", "",
        f"{report['samples']} samples; TFLite on {report['runtime']['name']} ({report['runtime']['kernels']} kernels; "
        f"per-layer with {report['runtime']['layer_kernels']}).", "",
        "| | smooth Keras | hard Keras | TFLite |", "|---|---|---|---|",
        f"| accuracy | {acc.get('smooth', float('nan')):.4f} | {acc['hard']:.4f} | {acc['tflite']:.4f} |", "",
        "| agreement | value |", "|---|---|",
    ]
    lines += [f"| {name.replace('_', ' / ')} | {value:.4f} |" for name, value in agr.items()]
    lines += ["", "| TFLite kernels | accuracy | agreement with hard Keras | max / mean output error (steps) |",
              "|---|---|---|---|"]
    lines += [f"| {name} | {row['accuracy']:.4f} | {row['agreement_hard']:.4f} | "
              f"{row['max_error_steps']:.2f} / {row['mean_error_steps']:.4f} |" for name, row in report["by_kernels"].items()]
    out = report["output_error_steps"]
    lines += ["", f"Output error (hard Keras vs TFLite): max {out['max']:.2f}, mean {out['mean']:.4f} steps "
              f"of {out['step']:.4g}. Weights stored exactly: {report['weights_exact']}.", "",
              "| layer | step | max error (steps) | mean error (steps) | share > 1 step |", "|---|---|---|---|---|"]
    for row in report["layers"]:
        if row["max_error_steps"] is None:
            lines.append(f"| {row['name']} | {row['scale']:.4g} | unmatched | | |")
        else:
            lines.append(f"| {row['name']} | {row['scale']:.4g} | {row['max_error_steps']:.2f} | "
                         f"{row['mean_error_steps']:.4f} | {row['over_one_step']:.4f} |")
    worst = report.get("worst_layer")
    if worst:
        lines += ["", f"Worst layer: {worst['name']} ({worst['error_steps']:.2f} steps). "
                  f"First layer over one step: {report['first_layer_over_one_step']}."]
    return "\n".join(lines) + "\n"


def _plot(report: dict) -> bytes:
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


def write_report(report: dict, directory) -> None:
    """report.json, report.md and drift.png in `directory`, each written atomically."""
    from pathlib import Path

    directory = Path(directory)
    write_json(directory / "report.json", report)
    write_text(directory / "report.md", _markdown(report))
    write_bytes(directory / "drift.png", _plot(report))

