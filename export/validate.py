"""Drift report for the chain smooth Keras -> hard Keras -> integer reference -> runtime.

Over an evaluation set:
- the task, from the labels (1-D integers: classification; floats: regression) or given;
- classification: accuracy of each model and pairwise top-1 agreement; regression: MSE and MAE
  against the targets; anomaly detection (an autoencoder): the ROC AUC of the reconstruction
  errors against the labels (1 = anomalous); all: output error between hard Keras and TFLite in
  output steps;
- `reference`: for each kernel family this machine computes (reference, builtin, xnnpack on
  x86-64; builtin-arm64 and xnnpack-arm64 in their place on aarch64), whether LiteRT computes
  exactly the integers of the integer reference (`export.device.reference`): every tensor for
  reference/builtin, the outputs for xnnpack. This link must be exact;
- `exact`: the chain's last links. The exact simulation (`export.exact.ExactModel`: the graph in
  TensorFlow, computing what the family of `kernels` computes on this machine) runs every
  input; its outputs must equal the runtime's (a gate), and its top-1 agreement with the smooth
  model is the one lossy link the user trained for: smooth -> device (measured) -> runtime (0);
- whether every weight tensor was stored exactly as trained;
- per-layer drift: at every `FakeQuant` of the hard model, |device - Keras| / step over the
  inputs, max and mean, with the device's integers taken from the integer reference for the
  kernels the outputs were measured on (XNNPACK included: the reference keeps every
  intermediate). A Keras layer is paired with the TFLite tensor its producing layer became (the
  converter names each tensor after the ops fused into it), never by scale; a layer with no such
  tensor is reported as unmatched. (tfmot bridge models keep their fake quants inside tfmot's
  wrappers: `layers` is empty for them.) That error is accumulated from the input; the local
  error (`local_max_error_steps`, `worst_local_layer`) is the layer's own: its hard-Keras output
  computed from the device's values of every paired tensor before it, against the device's. A
  float simulation rounds where the integer kernel does up to one step apart, so the local
  error is at most one step wherever the layer trains as TFLite runs it. Hard Keras is measured
  inside `hard_pooling.device_rounding`: its average pools round exact ties as the device does.
"""

from __future__ import annotations

import math
import platform

import keras
import numpy as np

from export.artifacts import load_keras_model, read_tflite
from export.atomic import strict_json, write_bytes, write_text
from export.device.check import dequantize, load_interpreter, predict, quantize_input, runtime_name
from export.device.families import KernelFamily
from export.device.reference import Graph, UnsupportedOpError
from export.drift_report import DriftReport
from export.exact import ExactModel
from export.exactness import compare_families, runtime_tensors
from export.float_layers import float_ops, layer_scopes
from export.hard_layers import FakeQuant
from export.hard_pooling import device_rounding
from export.preflight import check_model_finite, check_tflite
from export.tflite import weight_mismatches
from models import datasets
from models.data_checks import check_dataset_for_model
from models.datasets import TASKS, infer_task
from models.training import task_metrics
from toolkit.errors import ConfigError
from toolkit.graph import producers

__all__ = ["TASKS", "DriftReport", "agreement", "check", "check_pair", "exact_link", "hard_outputs", "infer_task", "local_values", "non_finite_failures",
           "pair_layers", "per_layer_drift", "validate", "validate_files", "write_report"]


# An error "exceeds one step" above this: Keras and TFLite hold the same step in slightly
# different floats, so an off-by-one element measures 1.0000001 steps, not 1.
ONE_STEP = 1.0 + 1e-3


def _top1(outputs) -> np.ndarray:
    return np.argmax(np.asarray(outputs), axis=-1)


def agreement(a, b) -> float:
    """Top-1 agreement of two output arrays."""
    return float(np.mean(_top1(a) == _top1(b)))


# Up to this many inputs a model is called eagerly, batch by batch: `predict` traces and
# compiles a function first, which costs more than it saves on a test split of a few hundred
# inputs (ResNet-8, 250 inputs: about 1 s per model).
EAGER_INPUTS = 1024


def model_outputs(model: keras.Model, x: np.ndarray, batch_size: int = 256):
    """The model's outputs on `x` in inference mode (a list for several outputs), as `predict`
    gives them: eagerly in batches up to EAGER_INPUTS inputs, else through `predict`."""
    if len(x) > EAGER_INPUTS:
        return model.predict(x, verbose=0, batch_size=batch_size)
    batches = [model(x[start:start + batch_size], training=False) for start in range(0, len(x), batch_size)]
    if isinstance(batches[0], (list, tuple)):
        return [np.concatenate([np.asarray(batch[i]) for batch in batches]) for i in range(len(batches[0]))]
    return np.concatenate([np.asarray(batch) for batch in batches])


def pair_layers(hard_model: keras.Model, graph: Graph) -> dict[str, int | None]:
    """FakeQuant layer name -> index of the TFLite tensor holding its values (None: unmatched).

    The tensor is the one the FakeQuant's producing layer became (its graph identity): the graph
    input for the input quantizer, else the last int8 tensor, in op order, whose name's first op
    belongs to the producing layer and whose per-sample size equals the layer's; for a producer
    left in float, the int8 tensor (a QUANTIZE) named by the FakeQuant itself.
    """
    produced_by = producers(hard_model)
    layer_names = {layer.name for layer in hard_model.layers}
    by_layer: dict[str, list[int]] = {}
    for op in graph.ops:
        for index in op.outputs:
            tensor = graph.tensors[index]
            if tensor.type != "int8" or not tensor.quantized:
                continue
            for owner in layer_scopes(tensor.name, layer_names):
                by_layer.setdefault(owner, []).append(index)
    pairs = {}
    for layer in hard_model.layers:
        if not isinstance(layer, FakeQuant):
            continue
        sources = produced_by.get(layer.name, [])
        source = sources[0] if len(sources) == 1 else None
        size = int(np.prod(layer.output.shape[1:]))
        if not sources or isinstance(source, keras.layers.InputLayer):
            pairs[layer.name] = _input_tensor(graph)
            continue
        candidates = [i for i in by_layer.get(source.name, []) if source is not None
                      and int(np.prod(graph.tensors[i].shape[1:])) == size]
        # A float producer (left in float): its int8 tensor is the QUANTIZE named by the FakeQuant.
        own = [i for i in by_layer.get(layer.name, []) if int(np.prod(graph.tensors[i].shape[1:])) == size]
        pairs[layer.name] = candidates[-1] if candidates else (own[-1] if own else None)
    return pairs


def _input_tensor(graph: Graph) -> int | None:
    """The int8 tensor the model's input becomes: the graph input, or its QUANTIZE (float I/O)."""
    index = graph.inputs[0]
    if graph.tensors[index].type == "int8":
        return index
    for op in graph.ops:
        if op.name == "QUANTIZE" and op.inputs[0] == index:
            return op.outputs[0]
    return None


def hard_outputs(hard_model: keras.Model, x: np.ndarray, with_layers: bool):
    """(the hard model's outputs on `x`, every FakeQuant's outputs or None), from one pass of the
    model in the device's rounding (`with_layers`: also the FakeQuants', as `per_layer_drift`
    takes them)."""
    quant_layers = [layer for layer in hard_model.layers if isinstance(layer, FakeQuant)] if with_layers else []
    probe = keras.Model(hard_model.inputs, [*hard_model.outputs, *(layer.output for layer in quant_layers)])
    with device_rounding(probe):
        computed = model_outputs(probe, x)
    computed = computed if isinstance(computed, list) else [computed]
    outputs = len(hard_model.outputs)
    model = computed[0] if outputs == 1 else computed[:outputs]
    return model, (computed[outputs:] if quant_layers else None)


def per_layer_drift(hard_model: keras.Model, tflite_bytes: bytes, x: np.ndarray, kernels: str = "xnnpack",
                    values: dict | None = None, graph: Graph | None = None, keras_values=None) -> list[dict]:
    """Error at each FakeQuant of `hard_model`, in steps of that tensor, hard Keras vs the device's
    integers (the integer reference for `kernels`, or `values` already computed for `x`);
    `keras_values`: the FakeQuants' outputs on `x` where computed already (`hard_outputs`)."""
    quant_layers = [layer for layer in hard_model.layers if isinstance(layer, FakeQuant)]
    if not quant_layers:  # a tfmot (tf_keras) model: its fake quants live inside wrappers
        return []
    graph = graph or Graph(tflite_bytes)
    if values is None:  # the integer reference of `kernels` on x
        input_detail = load_interpreter(tflite_bytes, "builtin").get_input_details()[0]
        values = graph.run(quantize_input(x, input_detail), kernels)
    if keras_values is None:
        probe = keras.Model(hard_model.inputs, [layer.output for layer in quant_layers])
        with device_rounding(probe):
            keras_values = model_outputs(probe, x)
        keras_values = keras_values if isinstance(keras_values, list) else [keras_values]
    pairs = pair_layers(hard_model, graph)

    def device_value(layer, start, shape):
        tensor = graph.tensors[pairs[layer.name]]
        raw = values[pairs[layer.name]][start:start + shape[0]].astype(np.float64)
        return ((raw - tensor.zero_point[0]) * float(tensor.scale[0])).reshape(shape)

    scales = {layer.name: layer.grid()[0] for layer in quant_layers}
    local = {}   # name -> [max error (steps), elements over one step, elements]: each layer's own error

    def tally(name, own, device):
        steps = np.abs(device - own) / scales[name]
        counts = local.setdefault(name, [0.0, 0, 0])
        counts[0] = max(counts[0], float(steps.max()))
        counts[1] += int(np.sum(steps > ONE_STEP))
        counts[2] += steps.size

    with device_rounding(hard_model):
        local_values(hard_model, x, {layer.name for layer in quant_layers if pairs[layer.name] is not None},
                     device_value, each=tally)
    rows = []
    for layer, expected in zip(quant_layers, keras_values, strict=True):
        scale, zero_point = layer.grid()
        index = pairs[layer.name]
        row = {"name": layer.name, "scale": scale, "zero_point": zero_point, "tflite_tensor": None,
               "max_error_steps": None, "mean_error_steps": None, "over_one_step": None, "local_max_error_steps": None,
               "local_over_one_step": None}
        if index is not None:
            actual = device_value(layer, 0, expected.shape)
            error = np.abs(actual - expected.astype(np.float64)) / scale
            row.update(tflite_tensor=graph.tensors[index].name[:200], max_error_steps=float(error.max()),
                       mean_error_steps=float(error.mean()), over_one_step=float(np.mean(error > ONE_STEP)))
            if layer.name in local:
                largest, over, elements = local[layer.name]
                row.update(local_max_error_steps=largest, local_over_one_step=over / elements)
        rows.append(row)
    return rows


def local_values(model: keras.Model, x: np.ndarray, paired: set[str], device_value,
                 batch_size: int = 256, each=None) -> dict[str, np.ndarray]:
    """Each paired layer's output (a FakeQuant of the hard model, or any layer of `model` named in
    `paired`) when every paired tensor before it holds the device's values: the error a layer
    adds by itself, not the error it inherits from the layers before it (which grows with depth;
    MobileNetV2-0.35 accumulates tens of steps out of one-step roundings). `device_value(layer, first_row, shape)` gives the device's values.

    `each(name, own, device)`, where given, receives each batch's pair instead (the layer's own
    output and the device's values that replace it, float64) and nothing is kept: {} returned
    (validate tallies the errors so, without holding every layer's outputs)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in paired}
    for start in range(0, len(x), batch_size):

        def operation_fn(operation, start=start):
            if operation.name not in paired:
                return operation

            def substitute(*args, **kwargs):
                output = np.asarray(operation(*args, **kwargs), np.float64)
                device = device_value(operation, start, output.shape)
                if each is None:
                    parts[operation.name].append(output)
                else:
                    each(operation.name, output, device)
                return keras.ops.convert_to_tensor(device, "float32")

            return substitute

        model._run_through_graph(keras.ops.convert_to_tensor(x[start:start + batch_size]), operation_fn=operation_fn)
    return {name: chunks[0] if len(chunks) == 1 else np.concatenate(chunks) for name, chunks in parts.items() if chunks}


def validate(hard_model: keras.Model, tflite_bytes: bytes, x: np.ndarray, y: np.ndarray, smooth_model=None,
             kernels: str = "xnnpack", task: str | None = None, layer_samples: int = 256) -> DriftReport:
    """The drift report; see the module docstring."""
    task = infer_task(y, task)
    if isinstance(layer_samples, bool) or not isinstance(layer_samples, int) or layer_samples < 1:
        raise ConfigError(f"Expected layer_samples >= 1 (inputs the per-layer drift runs on). Received: {layer_samples!r}")
    graph = check_tflite(tflite_bytes, "the .tflite")
    check_pair(hard_model, graph)
    layer_samples = min(layer_samples, len(x))
    # One pass gives the outputs and, where the per-layer drift takes every input, the FakeQuants'.
    hard, keras_values = hard_outputs(hard_model, x, with_layers=layer_samples == len(x))
    interpreter = load_interpreter(tflite_bytes, kernels)
    input_detail, output_detail = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    device_inputs = quantize_input(x, input_detail)
    outputs = {name: predict(load_interpreter(tflite_bytes, name), x) for name in dict.fromkeys((KernelFamily.XNNPACK, KernelFamily.BUILTIN, KernelFamily(kernels)))}
    tflite = outputs[kernels]
    output_step = output_detail["quantization"][0] or _last_step(hard_model) or 1.0
    error_steps = np.abs(tflite.astype(np.float64) - hard.astype(np.float64)) / output_step
    reference, reference_error, values = _reference_section(tflite_bytes, device_inputs, graph)
    family = KernelFamily.computed_by(kernels, platform.machine())   # what `kernels` compute on this machine
    layer_kernels = family if family in values else next(iter(values))
    layers = per_layer_drift(hard_model, tflite_bytes, x[:layer_samples], layer_kernels,
                             values=values[layer_kernels], graph=graph, keras_values=keras_values)
    measured = [row for row in layers if row["max_error_steps"] is not None]
    worst = max(measured, key=lambda row: row["max_error_steps"], default=None)
    first_over = next((row["name"] for row in measured if row["max_error_steps"] > ONE_STEP), None)
    local = [row for row in measured if row["local_max_error_steps"] is not None]
    worst_local = max(local, key=lambda row: row["local_max_error_steps"], default=None)
    mismatches = weight_mismatches(hard_model, tflite_bytes)
    report = DriftReport(
        task=task,
        samples=int(len(y)),
        output_error_steps={"max": float(error_steps.max()), "mean": float(error_steps.mean()), "step": float(output_step)},
        reference=reference,
        weights_exact=not mismatches,
        weight_mismatches=mismatches,
        worst_layer={"name": worst["name"], "error_steps": worst["max_error_steps"]} if worst else None,
        first_layer_over_one_step=first_over,
        worst_local_layer={"name": worst_local["name"], "error_steps": worst_local["local_max_error_steps"]}
        if worst_local else None,
        layers=layers,
        unmatched_layers=[row["name"] for row in layers if row["max_error_steps"] is None],
        runtime={"name": runtime_name(), "kernels": str(kernels), "family": str(family) if family else None,
                 "layer_kernels": str(layer_kernels),
                 "layer_source": "LiteRT (the integer reference cannot run this model)" if reference_error
                 else "integer reference", "machine": platform.machine()},
        tflite_bytes=len(tflite_bytes),
        float_ops=float_ops(tflite_bytes, {layer.name for layer in hard_model.layers}),
        layer_samples=int(min(layer_samples, len(y))),
        reference_error=reference_error or None,
    )
    models = {"hard": hard, "tflite": tflite}
    if smooth_model is not None:
        models = {"smooth": model_outputs(smooth_model, x), **models}
    report.exact = exact_link(graph, device_inputs, family, output_detail, tflite, models, x, y, task, reference_error)
    if task == "classification":
        report.accuracy = {name: task_metrics(out, x, y, task)["accuracy"] for name, out in models.items()}
        report.agreement = {"hard_tflite": agreement(hard, tflite)}
        if "smooth" in models:
            report.agreement["smooth_hard"] = agreement(models["smooth"], hard)
            report.agreement["smooth_tflite"] = agreement(models["smooth"], tflite)
    else:
        report.error = {name: task_metrics(out, x, y, task) for name, out in models.items()}
    for name, other in outputs.items():
        steps = np.abs(other.astype(np.float64) - hard.astype(np.float64)) / output_step
        row = {"max_error_steps": float(steps.max()), "mean_error_steps": float(steps.mean()), **task_metrics(other, x, y, task)}
        if task == "classification":
            row["agreement_hard"] = agreement(hard, other)
        report.by_kernels[str(name)] = row
    return report


def exact_link(graph: Graph, device_inputs: np.ndarray, family, output_detail: dict, runtime_outputs: np.ndarray,
               models: dict, x: np.ndarray, y: np.ndarray, task: str, reference_error: str | None) -> dict:
    """The chain's last links: the exact simulation of `family` (`export.exact.ExactModel`, what
    the device computes, in TensorFlow) on every input, checked against the runtime's outputs
    (`runtime_outputs`, dequantized as `predict` gives them: distinct int8 values stay distinct),
    and measured against the trained (smooth) and hard Keras models.

    {family, outputs_equal_runtime, mismatched_output_elements, metrics (of the exact outputs:
    the device's), agreement_smooth / agreement_hard (classification), numpy_ops}, or {family,
    skipped: why} where no family is probed for these kernels here or the reference cannot run
    the model."""
    if family is None or reference_error:
        return {"family": str(family) if family else None,
                "skipped": reference_error or f"no kernel family is probed on {platform.machine()} for these kernels"}
    exact = ExactModel(graph, family)
    outputs = dequantize(exact.outputs(device_inputs)[0], output_detail)
    mismatched = int(np.sum(outputs != runtime_outputs)) if outputs.shape == runtime_outputs.shape else int(outputs.size)
    link = {"family": str(family), "outputs_equal_runtime": mismatched == 0, "mismatched_output_elements": mismatched,
            "metrics": task_metrics(outputs, x, y, task), "numpy_ops": sorted(set(exact.in_numpy))}
    if task == "classification":
        link["agreement_hard"] = agreement(models["hard"], outputs)
        if "smooth" in models:
            link["agreement_smooth"] = agreement(models["smooth"], outputs)
    return link


def _reference_section(tflite_bytes: bytes, device_inputs: np.ndarray, graph: Graph):
    """(reference comparisons, error text or None, tensor values per family).

    Where the reference cannot run the model (an op it lacks), the values are LiteRT's builtin
    kernels' (preserve-all-tensors), so per-layer drift is still measured, on those kernels.
    """
    try:
        comparisons, values = compare_families(tflite_bytes, device_inputs, graph=graph)
    except UnsupportedOpError as error:
        indices = [graph.inputs[0], *(index for op in graph.ops for index in op.outputs)]
        builtin = KernelFamily.computed_by("builtin", platform.machine()) or "builtin"
        values = {builtin: runtime_tensors(tflite_bytes, device_inputs, "builtin", indices)}
        return {}, f"the integer reference cannot run this model: {error}", values
    return comparisons, None, values


def _last_step(hard_model):
    quant_layers = [layer for layer in hard_model.layers if isinstance(layer, FakeQuant)]
    return quant_layers[-1].grid()[0] if quant_layers else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check(report: dict, max_drift: float | None = None, min_agreement: float | None = None) -> list[str]:
    """Messages for every threshold the report breaks (empty: it passes). Fails closed: a gate
    whose measurement is NaN or inf fails (NaN compares false with everything, so a plain
    `value > limit` would pass it), and a threshold that is not finite is refused."""
    for name, limit in (("--max-drift", max_drift), ("--min-agreement", min_agreement)):
        if limit is not None and not _finite(limit):
            raise ConfigError(f"Expected a finite number for {name}. Received: {limit!r}")
    failures = []
    worst = report.get("worst_layer") or {}
    worst_text = f"worst layer {worst.get('name')!r} ({worst.get('error_steps', 0):.2f} steps)" if worst else "no layer measured"
    if max_drift is not None and worst and not (_finite(worst["error_steps"]) and worst["error_steps"] <= max_drift):
        failures.append(f"per-layer drift {worst['error_steps']:.2f} steps > --max-drift {max_drift}: {worst_text}")
    output_error = (report.get("output_error_steps") or {}).get("max")
    if max_drift is not None and output_error is not None and not _finite(output_error):
        failures.append(f"the output error hard Keras vs TFLite is {output_error}, not a finite number of steps")
    agreement = report.get("agreement", {}).get("hard_tflite")
    if min_agreement is not None and agreement is None:
        failures.append(f"--min-agreement {min_agreement} needs a classification task (this one is {report.get('task')})")
    elif min_agreement is not None and not (_finite(agreement) and agreement >= min_agreement):
        failures.append(f"hard Keras / TFLite agreement {agreement:.4f} < --min-agreement {min_agreement}; {worst_text}")
    kernels = report.get("runtime", {}).get("kernels")
    measured = (report.get("reference") or {}).get(report.get("runtime", {}).get("family") or kernels)
    if measured and measured.get("outputs_equal") is False:
        first = measured.get("first_mismatch") or {}
        failures.append(f"LiteRT ({kernels} kernels) differs from the integer reference in {measured['mismatched_elements']} "
                        f"element(s); first at tensor {first.get('tensor')!r} (op {first.get('op')})")
    exact = report.get("exact") or {}
    if exact.get("outputs_equal_runtime") is False:
        failures.append(f"LiteRT ({exact['family']}) differs from the exact simulation in {exact['mismatched_output_elements']} "
                        "output element(s)")
    if report.get("weights_exact") is False:
        failures.append("weights not stored exactly: " + "; ".join(report["weight_mismatches"]))
    return failures


def check_pair(hard_model: keras.Model, graph: Graph) -> None:
    """ConfigError when a hard model and a .tflite do not belong together: other per-sample
    input or output shapes (LiteRT would fail deep inside a kernel, or compare unlike things)."""
    for kind, keras_shape, index in (("input", hard_model.inputs[0].shape, graph.inputs[0]),
                                     ("output", hard_model.outputs[0].shape, graph.outputs[0])):
        tflite_shape = tuple(graph.tensors[index].shape[1:])
        if tuple(keras_shape[1:]) != tflite_shape:
            raise ConfigError(f"The hard model {hard_model.name!r} has {kind} shape {tuple(keras_shape[1:])} per "
                              f"sample, the .tflite {tflite_shape}: they are not the same model.")


def non_finite_failures(report: dict) -> list[str]:
    """A failure for every NaN or inf in the report (written as null in report.json)."""
    return [f"{path} is not a finite number" for path in strict_json(report)[1]]


def validate_files(hard_path, tflite_path, data: str, smooth_path=None, kernels: str = "xnnpack",
                   task: str | None = None, max_drift: float | None = None,
                   min_agreement: float | None = None) -> tuple[DriftReport, list[str]]:
    """`softedge validate`: the files read and checked (`export.preflight`, the test split
    against the hard model: `models.data_checks`) before anything runs, then `validate` and
    `check` on the data set's test split. Returns (report, failures)."""
    hard = load_keras_model(hard_path)
    tflite_bytes = read_tflite(tflite_path)   # parsed, its scales checked; `validate` checks the pair
    smooth = load_keras_model(smooth_path) if smooth_path else None
    for model in (hard, smooth):
        if model is not None:
            check_model_finite(model)
    dataset = datasets.load(data)
    check_dataset_for_model(dataset, infer_task(dataset.y_test, task), hard, splits=("test",))
    report = validate(hard, tflite_bytes, dataset.x_test, dataset.y_test, smooth_model=smooth, kernels=kernels,
                      task=task)
    failures = check(report, max_drift, min_agreement) + non_finite_failures(report)
    report.failures = failures
    return report, failures


def write_report(report: DriftReport, directory) -> None:
    """report.json, report.md and drift.png in `directory`, each written atomically."""
    from pathlib import Path

    directory = Path(directory)
    write_text(directory / "report.json", report.to_json())
    write_text(directory / "report.md", report.to_markdown())
    write_bytes(directory / "drift.png", report.to_png())

