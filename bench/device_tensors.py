"""Which tensors of a trained model differ from the device's (python -m bench.device_tensors).

Trains a zoo model as `bench.zoo` does (float 10 + QAT 4 epochs, seed 0, synthetic data) twice:
with the float simulation, and with the last QAT epoch on XNNPACK's arithmetic
(`toolkit.device_arithmetic`). For each, every `QuantizeActivation` tensor of the trained model
on the test inputs is compared with the same tensor of the exact simulation of XNNPACK
(`export.exact.ExactModel`, == LiteRT), in integers on that tensor's grid:

    accumulated   the trained model run on its own inputs: elements off, the largest difference
    local         the trained model with every tensor before this one set to the device's: the
                  elements this layer's own arithmetic puts off

Prints the layers with a local difference and the totals; writes bench/results/device_tensors.json.

    python -m bench.device_tensors                         # mobilenet_v2_035, W4
    python -m bench.device_tensors --model resnet8 --bits 3
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from export.atomic import write_json  # noqa: E402
from export.device.check import quantize_input  # noqa: E402
from export.exact import ExactModel  # noqa: E402
from export.harden import harden  # noqa: E402
from export.tflite import convert  # noqa: E402
from export.validate import local_values, pair_layers  # noqa: E402
from models import datasets, registry  # noqa: E402
from models.training import Recipe, learned_step_for, train_float, train_quantized  # noqa: E402
from toolkit import QuantScheme  # noqa: E402
from toolkit.qat_layers import QuantizeActivation  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def compare(smooth: keras.Model, x: np.ndarray) -> list[dict]:
    """Per paired `QuantizeActivation` of `smooth`: accumulated and local elements off the device."""
    hard = harden(smooth)
    exact = ExactModel(convert(hard, "int8"), "xnnpack")
    graph = exact.graph
    values = exact.run(quantize_input(x, {"dtype": np.int8, "quantization": graph.tensors[graph.inputs[0]].grid()}))
    pairs = pair_layers(hard, graph)
    layers = [layer for layer in smooth.layers if isinstance(layer, QuantizeActivation) and pairs.get(layer.name) is not None]

    def integers(layer, real):
        scale, zero_point = graph.tensors[pairs[layer.name]].grid()
        return np.round(np.asarray(real, np.float64) / scale) + zero_point

    def device(layer, start, shape):
        scale, zero_point = graph.tensors[pairs[layer.name]].grid()
        return ((values[pairs[layer.name]][start:start + shape[0]].astype(np.float64) - zero_point) * scale).reshape(shape)

    accumulated = keras.Model(smooth.inputs, [layer.output for layer in layers]).predict(x, verbose=0, batch_size=50)
    own = local_values(smooth, x, {layer.name for layer in layers}, device, batch_size=50)
    rows = []
    for layer, ours in zip(layers, accumulated, strict=True):
        expected = values[pairs[layer.name]].astype(np.float64).reshape(ours.shape)
        off = np.abs(integers(layer, ours) - expected)
        local = integers(layer, own[layer.name]) != expected
        rows.append({"layer": layer.name, "elements": int(off.size), "accumulated_off": int(np.sum(off > 0)),
                     "accumulated_max_steps": float(off.max()), "local_off": int(np.sum(local))})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2_035", choices=registry.names())
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = datasets.load("synthetic", model=args.model)
    keras.utils.set_random_seed(args.seed)
    model = registry.build(args.model, data.input_shape, data.num_classes)
    recipe = dataclasses.replace(Recipe(), float_epochs=10, qat_epochs=4)
    train_float(model, data, recipe, seed=args.seed, task=data.task)
    scheme = QuantScheme(weight_bits=args.bits, learned_step=learned_step_for(args.bits))
    results = {"model": args.model, "bits": args.bits, "seed": args.seed, "inputs": len(data.x_test)}
    for name, variant in (("float_simulation", dataclasses.replace(recipe, device_arithmetic=None, device_epochs=None)),
                          ("device_last_epoch", dataclasses.replace(recipe, device_arithmetic="xnnpack", device_epochs=1))):
        smooth, _ = train_quantized(model, data, scheme, variant, seed=args.seed, task=data.task)
        rows = compare(smooth, np.asarray(data.x_test, np.float32))
        results[name] = rows
        print(f"{name}: {sum(r['accumulated_off'] for r in rows)} of {sum(r['elements'] for r in rows)} elements "
              f"off the device, worst {max(r['accumulated_max_steps'] for r in rows):.0f} steps; local:", flush=True)
        for row in rows:
            if row["local_off"]:
                print(f"    {row['layer']}: {row['local_off']} of {row['elements']}")
    write_json(RESULTS / "device_tensors.json", results)


if __name__ == "__main__":
    main()
