"""The ablations behind the training recipe's defaults (make bench-recipe).

Each row changes one setting of `models.training.Recipe` / `QuantScheme` and reports what the
default was chosen on:
- BN momentum 0.99 vs 0.9 (float accuracy, digits_cnn);
- kernel step: max-abs vs learned (LSQ) started at LSQ's 2 mean|w| / sqrt(qmax) or at the MSE
  steps PTQ uses (the default start), at W3 and W2 (hard accuracy, MNIST-1D, soft rounding);
- alpha_end 1e3 / 1e4 / 1e5 at W2 with learned steps (smooth vs hard accuracy; the annealing
  not ended hard, the float simulation throughout, so that alpha_end alone moves);
- ending the annealing hard (`Recipe.end_hard`) or at alpha_end, at W2 (smooth vs hard);
- the last QAT epoch on XNNPACK's arithmetic (`Recipe.device_arithmetic`) or the float
  simulation throughout, at W3 and W2 (hard accuracy);
- a final straight-through phase (3 epochs) after annealing, at W2;
- XLA on/off: training seconds per epoch at W3 (median after the first epoch);
- biases on TFLite's int32 grid or not: hard-Keras vs TFLite agreement at W3, on XNNPACK and
  builtin kernels.

    python -m bench.recipe [--seeds N]     (default 3 seeds, ~20 minutes)

Prints a table; writes bench/results/recipe.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.isolated import rows_in_own_process  # noqa: E402
from bench.qat import qat_timer  # noqa: E402
from export.atomic import write_json  # noqa: E402
from export.device.check import load_interpreter, predict  # noqa: E402
from export.device.families import KernelFamily  # noqa: E402
from export.harden import harden  # noqa: E402
from export.tflite import convert  # noqa: E402
from export.validate import agreement  # noqa: E402
from models import datasets, registry  # noqa: E402
from models.training import (  # noqa: E402
    Recipe,
    accuracy,
    compile_classifier,
    train_float,
    train_quantized,
    use_xla,
)
from toolkit import QuantScheme  # noqa: E402
from toolkit.quantizers import lsq_step  # noqa: E402
from toolkit.rewrite import quantized_layers  # noqa: E402
from toolkit.rounding import HARD_ALPHA  # noqa: E402
from toolkit.schedules import set_alpha  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "recipe.json"


def _float_model(name: str, data, recipe: Recipe, seed: int, bn_momentum: float | None = None):
    keras.utils.set_random_seed(seed)
    model = registry.build(name, data.input_shape, data.num_classes)
    if bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    train_float(model, data, recipe, seed=seed)
    return model


def _lsq_steps(quantized) -> None:
    """Learned steps start at LSQ's 2 mean|w| / sqrt(qmax) rather than the MSE steps (the default)."""
    for layer in quantized_layers(quantized):
        quantizer = layer.weight_quantizer
        quantizer.step_variable.assign(lsq_step(layer.float_kernel, quantizer.reduce_axes, quantizer.qmax))


def _smooth_and_hard(model, data, scheme, recipe, seed, callbacks=(), start=None):
    """`start(quantized)`, if given, runs on the built model before fine-tuning."""
    quantized, _ = train_quantized(model, data, scheme, recipe, seed=seed, callbacks=callbacks, restore=start)
    smooth = accuracy(quantized, data.x_test, data.y_test)
    set_alpha(quantized, HARD_ALPHA)
    return quantized, smooth, accuracy(quantized, data.x_test, data.y_test)


def run(seed: int = 0) -> list[dict]:
    rows = []
    recipe = Recipe()
    digits = datasets.load("digits")
    for momentum in (0.99, 0.9):
        model = _float_model("digits_cnn", digits, recipe, seed, bn_momentum=momentum)
        rows.append({"ablation": "bn_momentum", "setting": momentum, "model": "digits_cnn",
                     "float_acc": accuracy(model, digits.x_test, digits.y_test)})

    data = datasets.load("mnist1d")
    model = _float_model("mnist1d_cnn", data, recipe, seed)
    for bits in (3, 2):
        for setting in ("max-abs", "learned from LSQ's start", "learned from MSE steps"):
            scheme = QuantScheme(weight_bits=bits, learned_step=setting != "max-abs")
            start = _lsq_steps if setting == "learned from LSQ's start" else None
            _, smooth, hard = _smooth_and_hard(model, data, scheme, recipe, seed, start=start)
            rows.append({"ablation": "kernel_step", "setting": setting, "weight_bits": bits,
                         "smooth_acc": smooth, "hard_acc": hard})
    w2 = QuantScheme(weight_bits=2, learned_step=True)
    for end_hard in (False, True):
        _, smooth, hard = _smooth_and_hard(model, data, w2, dataclasses.replace(recipe, end_hard=end_hard), seed)
        rows.append({"ablation": "end_hard", "setting": end_hard, "weight_bits": 2, "smooth_acc": smooth, "hard_acc": hard})
    for bits in (3, 2):
        for device in (None, "xnnpack"):
            scheme = QuantScheme(weight_bits=bits, learned_step=bits == 2)
            last_epoch = dataclasses.replace(recipe, device_arithmetic=device, device_epochs=1 if device else None)
            _, _, hard = _smooth_and_hard(model, data, scheme, last_epoch, seed)
            rows.append({"ablation": "device_arithmetic_last_epoch", "setting": str(device), "weight_bits": bits,
                         "hard_acc": hard})
    annealing_only = dataclasses.replace(recipe, end_hard=False, device_arithmetic=None)
    for alpha_end in (1e3, 1e4, 1e5):
        quantized, smooth, hard = _smooth_and_hard(model, data, w2, dataclasses.replace(annealing_only, alpha_end=alpha_end), seed)
        rows.append({"ablation": "alpha_end", "setting": alpha_end, "weight_bits": 2, "smooth_acc": smooth, "hard_acc": hard})
        if alpha_end == recipe.alpha_end:  # the default run, then 3 straight-through epochs on it
            for layer in quantized.layers:
                if hasattr(layer, "weight_quantizer"):
                    layer.weight_quantizer.rounding = "ste"
            compile_classifier(quantized, recipe.qat_learning_rate, use_xla(quantized, recipe.jit_compile))
            quantized.fit(data.x_train, data.y_train, epochs=3, batch_size=recipe.batch_size, verbose=0)
            rows.append({"ablation": "final_ste_phase", "setting": "3 epochs after annealing", "weight_bits": 2,
                         "hard_acc_before": hard, "hard_acc": accuracy(quantized, data.x_test, data.y_test)})
    w3 = QuantScheme(weight_bits=3)
    for jit in (False, True):
        timer = qat_timer(recipe)
        quantized, _, hard = _smooth_and_hard(model, data, w3, dataclasses.replace(recipe, jit_compile=jit), seed, [timer])
        rows.append({"ablation": "xla", "setting": jit, "weight_bits": 3, "epoch_seconds": timer.seconds,
                     "first_epoch_seconds": timer.times[0], "hard_acc": hard})
    hard_keras = quantized.predict(data.x_test, verbose=0)
    for bake_bias in (False, True):
        hard_model = harden(quantized, bake_bias=bake_bias)
        tflite_bytes = convert(hard_model, "int8")
        hard_outputs = hard_model.predict(data.x_test, verbose=0)
        row = {"ablation": "bias_on_int32_grid", "setting": bake_bias, "weight_bits": 3,
               "agreement_with_alpha_inf": agreement(hard_outputs, hard_keras)}
        for kernels in (KernelFamily.XNNPACK, KernelFamily.BUILTIN):
            row[f"hard_tflite_agreement_{kernels}"] = agreement(hard_outputs, predict(load_interpreter(tflite_bytes, kernels), data.x_test))
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Means over seeds of every measured number, one line per (ablation, setting, bits)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["ablation"], str(r["setting"]), r.get("weight_bits", "-")), []).append(r)
    lines = ["| ablation | setting | W | seeds | mean over seeds |", "|---|---|---|---|---|"]
    for (ablation, setting, bits), members in groups.items():
        keys = [k for k, v in members[0].items() if isinstance(v, float) and k != "setting"]
        measured = ", ".join(f"{k} {np.mean([m[k] for m in members]):.4f}" for k in keys)
        lines.append(f"| {ablation} | {setting} | {bits} | {len(members)} | {measured} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seed", type=int, default=None, help="run one seed here (the parent runs each so)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.only_seed is not None:
        write_json(args.output, {"seeds": 1, "rows": [{**row, "seed": args.only_seed} for row in run(args.only_seed)]})
        return
    rows = [row for seed in range(args.seeds) for row in rows_in_own_process("bench.recipe", "--only-seed", str(seed))]
    print(format_table(rows))
    write_json(args.output, {"seeds": args.seeds, "rows": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
