"""Edge architecture shapes through softedge's QAT path (python -m bench.architectures).

For a DS-CNN shape (strided 10x4 conv, depthwise-separable blocks, AveragePooling2D), a ResNet
block (ADD, AveragePooling2D, softmax), keras.applications MobileNet(0.25) with its own head
(ReLU6, depthwise, MEAN with keep_dims, softmax), concatenated branches with GlobalMaxPooling2D
(CONCATENATION, REDUCE_MAX) and a LayerNormalization left in float, untrained with non-trivial
BatchNorm statistics, calibrated on 256 random inputs, at W8 and W4 (int8 storage) and W4
int4-weights, validated on 300 inputs (`export.validate`): whether the trained integers are
stored exactly, the mismatching elements between LiteRT and the integer reference per kernel
family (every tensor for reference/builtin, outputs for xnnpack), the worst layer's own
(local) error, the ops of the graph, and the share of hard-Keras outputs more than half a step
from XNNPACK's. Exactness does not depend on training. Writes bench/results/architectures.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from bench.tables import replace_section
from export.device.check import load_interpreter, quantize_input, run
from export.device.reference import Graph
from export.hard_pooling import device_rounding
from export.harden import harden
from export.tflite import convert
from export.validate import validate
from toolkit import QuantScheme, quantize

L = keras.layers
SAMPLES = 300


def ds_cnn() -> keras.Model:
    inputs = keras.Input((49, 10, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, (10, 4), strides=2, padding="same")(inputs)))
    for _ in range(2):
        x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 1)(x)))
    x = L.AveragePooling2D(pool_size=x.shape[1:3])(x)
    return keras.Model(inputs, L.Dense(12)(L.Flatten()(x)), name="ds_cnn_shape")


def resnet_block() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(inputs)))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
    y = L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(y))
    x = L.AveragePooling2D(pool_size=8)(L.ReLU()(L.Add()([x, y])))
    return keras.Model(inputs, L.Dense(10, activation="softmax")(L.Flatten()(x)), name="resnet_block")


def mobilenet() -> keras.Model:
    """keras.applications MobileNet(0.25) at 64x64 with its own head: GlobalAveragePooling2D(keepdims=True)
    (a MEAN with keep_dims over height and width), a 1x1 conv classifier, softmax."""
    model = keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.25, include_top=True, weights=None, classes=3)
    model.name = "mobilenet_025"
    return model


def concatenated_branches() -> keras.Model:
    """Inception-style: a 1x1 and a 3x3 branch concatenated (CONCATENATION takes one grid for its
    inputs and output), then a conv, GlobalMaxPooling2D (REDUCE_MAX) and softmax."""
    inputs = keras.Input((16, 16, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(inputs)))
    branches = [L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 1)(x))),
                L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(x)))]
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(L.Concatenate()(branches))))
    return keras.Model(inputs, L.Dense(5, activation="softmax")(L.GlobalMaxPooling2D()(x)), name="concat_maxpool")


def layer_norm_in_float() -> keras.Model:
    """A Conv1D stack with a LayerNormalization between, left in float (`unsupported="float"`)."""
    inputs = keras.Input((32, 4))
    x = L.Conv1D(16, 5, padding="same", activation="relu")(inputs)
    x = L.LayerNormalization()(x)
    x = L.Conv1D(16, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, L.Dense(4, activation="softmax")(L.GlobalAveragePooling1D()(x)), name="layer_norm_float")


def with_trained_looking_batch_norms(model: keras.Model, seed: int = 0) -> keras.Model:
    """Default BN statistics make an untrained MobileNet's activations vanish (logits ~1e-17)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.2, 3, n)])
    return model


def measure(build, bits: int, target: str, seed: int = 0) -> dict:
    keras.utils.set_random_seed(seed)
    model = with_trained_looking_batch_norms(build(), seed)
    data = np.random.default_rng(seed).normal(size=(SAMPLES, *model.inputs[0].shape[1:])).astype(np.float32)
    hard = harden(quantize(model, QuantScheme(weight_bits=bits, unsupported="float"), calibration_data=data[:256]))
    tflite_bytes = convert(hard, target)
    graph = Graph(tflite_bytes)
    report = validate(hard, tflite_bytes, data, np.zeros(len(data), np.int64))
    inputs = quantize_input(data, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()})
    scale, zero_point = graph.tensors[graph.outputs[0]].grid()
    device = scale * (run(load_interpreter(tflite_bytes, "xnnpack"), inputs).astype(np.float64) - zero_point)
    with device_rounding(hard):
        steps = np.abs(device - hard.predict(data, verbose=0)) / scale
    local = report.get("worst_local_layer") or {}
    return {"model": model.name, "bits": bits, "target": target, "weights_exact": report["weights_exact"],
            "families": {family: row.get("runtime_error") or row["mismatched_elements"] for family, row in (report.get("reference") or {}).items()},
            "reference_error": report.get("reference_error"), "float_ops": [row["op"] for row in report.get("float_ops") or []],
            "worst_local_layer": local.get("name"), "worst_local_steps": local.get("error_steps"),
            "ops": sorted({op.name for op in graph.ops}), "xnnpack_outputs_over_half_step": float(np.mean(steps > 0.5)),
            "xnnpack_max_output_steps": float(steps.max())}


def _family_cell(row: dict, family: str) -> str:
    if row["reference_error"]:
        return "float layer" if row["float_ops"] else "not run"
    value = row["families"].get(family)
    return str(value) if isinstance(value, int) else "runtime cannot load"


def main() -> None:
    rows = []
    for build in (ds_cnn, resnet_block, mobilenet, concatenated_branches, layer_norm_in_float):
        for bits, target in ((8, "int8"), (4, "int8"), (4, "int4-weights")):
            rows.append(measure(build, bits, target))
            print(f"{rows[-1]['model']} W{bits} {target}: done", flush=True)
    lines = ["| model | weights | target | exact | reference | builtin | xnnpack | worst local error (steps) "
             "| hard vs XNNPACK > 1/2 step (max) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | W{row['bits']} | {row['target']} | {row['weights_exact']} | "
                     f"{' | '.join(_family_cell(row, f) for f in ('reference', 'builtin', 'xnnpack'))} | "
                     f"{row['worst_local_steps']:.2f} ({row['worst_local_layer']}) | "
                     f"{row['xnnpack_outputs_over_half_step']:.2%} ({row['xnnpack_max_output_steps']:.0f}) |")
    print("\n".join(lines))
    replace_section("architectures", "\n".join(["Generated by `make bench-architectures` (bench/architectures.py; "
                                                "untrained, non-trivial BatchNorm statistics, calibrated, 300 inputs; "
                                                "mismatching elements of LiteRT against the integer reference; \"float "
                                                "layer\": the integer reference does not run a model with a layer left "
                                                "in float, whose ops compute in float; the worst layer's own error, "
                                                "hard Keras vs the device, as `validate` measures it):", "", *lines]))
    path = Path(__file__).parent / "results" / "architectures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
