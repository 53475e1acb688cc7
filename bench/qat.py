"""Quantization-aware training benchmark: every method on the same data, seeds and epochs.

Rows (per model, seed, weight bit width): float; post-training int8 (representative data);
tfmot's own QAT (tf_keras, `DefaultNBitQuantizeScheme` at W{b}A8, Conv1D annotated with tfmot's
n-bit config as its error message instructs, exported the tfmot way); softedge Keras 3 QAT with
ste / soft / sigmoid rounding; softedge through the tfmot bridge with soft rounding. Every
quantized row starts from the same float weights and fine-tunes for the same epochs; it is
converted to int8 TFLite and run on LiteRT (XNNPACK kernels). An alpha sweep (seed 0, MNIST-1D,
soft rounding at W3 and W2) feeds the smooth-vs-hard plot.

Columns: Keras accuracy (smooth and hard), TFLite int8 accuracy, Keras->TFLite top-1 agreement,
smooth-vs-hard agreement, training time per epoch as a ratio to float and to tfmot at the same
bit width, .tflite bytes and their
ratio to the float TFLite model, batch-1 latency as a ratio to float TFLite. A row whose export
fails keeps its place with `error` set.

    python -m bench.qat                  # 3 seeds, both models, bits 8 4 3 2
    QUICK=1 python -m bench.qat          # 1 seed, fewer epochs

Writes bench/results/qat.json (a list of rows) and qat_summary.json (means over seeds, the
alpha sweep); prints a markdown table. `bench/report.py` turns the summary into docs/benchmarks.md's
Results section and the two plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.isolated import rows_in_own_process  # noqa: E402
from export.atomic import write_json  # noqa: E402
from export.device.check import latency_us, load_interpreter, predict, quantize_input  # noqa: E402
from export.harden import harden  # noqa: E402
from export.tflite import convert, run_converter  # noqa: E402
from export.validate import agreement  # noqa: E402
from models import datasets, registry  # noqa: E402
from models.training import Recipe, accuracy, learned_step_for, train_float, train_quantized  # noqa: E402
from toolkit import AlphaSchedule, QuantScheme  # noqa: E402
from toolkit.rounding import HARD_ALPHA  # noqa: E402
from toolkit.schedules import set_alpha  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODELS = {"mnist1d_cnn": "mnist1d", "digits_cnn": "digits"}
SOFTEDGE_ROUNDINGS = ("ste", "soft", "sigmoid")


class _EpochTimes:
    """Wall time of each epoch; `seconds` is the median of the epochs that compile nothing: all
    but the first (tracing) one and `compiling` (a QAT run's switch to the device's arithmetic,
    `Recipe.device_from`, rebuilds the training step)."""

    def __init__(self, compiling=()):
        super().__init__()
        self.compiling = {0, *compiling}

    def on_train_begin(self, logs=None):
        self.times, self.epochs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)
        self.epochs.append(epoch)

    @property
    def seconds(self) -> float:
        steady = [t for epoch, t in zip(self.epochs, self.times, strict=True) if epoch not in self.compiling]
        return float(np.median(steady or self.times))


class EpochTimer(_EpochTimes, keras.callbacks.Callback):
    pass


def qat_timer(recipe: Recipe) -> EpochTimer:
    """An `EpochTimer` for a QAT run of `recipe`, leaving out its switch to the device's arithmetic."""
    return EpochTimer(compiling=[recipe.device_from])   # qat_epochs, no epoch, where there is no switch


def EpochTimerTfKeras():  # noqa: N802 (tf_keras is imported only when tfmot rows run)
    import tf_keras

    class _Timer(_EpochTimes, tf_keras.callbacks.Callback):
        pass

    return _Timer()


def tflite_metrics(tflite_bytes: bytes, data, keras_outputs=None) -> dict:
    interpreter = load_interpreter(tflite_bytes, "xnnpack")
    outputs = predict(interpreter, data.x_test)
    device_inputs = quantize_input(data.x_test, interpreter.get_input_details()[0])
    metrics = {"tflite_acc": float(np.mean(np.argmax(outputs, -1) == data.y_test)),
               "tflite_bytes": len(tflite_bytes),
               "latency_us": latency_us(tflite_bytes, device_inputs, "xnnpack", runs=100)["p50"]}
    if keras_outputs is not None:
        metrics["agreement"] = agreement(outputs, keras_outputs)
    return metrics


def row(model_name, method, seed, weight_bits, activation_bits, **values) -> dict:
    base = {"model": model_name, "method": method, "seed": seed, "weight_bits": weight_bits,
            "activation_bits": activation_bits, "keras_acc": None, "smooth_acc": None, "tflite_acc": None,
            "agreement": None, "smooth_hard_agreement": None, "final_alpha": None, "epoch_seconds": None,
            "epoch_ratio_vs_float": None, "epoch_ratio_vs_tfmot": None, "tflite_bytes": None,
            "bytes_ratio_vs_float": None, "latency_us": None, "latency_ratio_vs_float": None, "error": None}
    base.update(values)
    return base


def bench_model(model_name: str, seed: int, bits_list, roundings, recipe: Recipe) -> list[dict]:
    data = datasets.load(MODELS[model_name])
    keras.utils.set_random_seed(seed)
    model = registry.build(model_name, data.input_shape, data.num_classes)
    timer = EpochTimer()
    train_float(model, data, recipe, seed=seed, callbacks=[timer])
    float_seconds = timer.seconds
    float_outputs = model.predict(data.x_test, verbose=0)
    float_tflite = tflite_metrics(convert(model, "float32"), data, float_outputs)
    rows = [row(model_name, "float", seed, 32, 32, keras_acc=accuracy(model, data.x_test, data.y_test),
                epoch_seconds=float_seconds, epoch_ratio_vs_float=1.0, **float_tflite)]
    try:
        ptq = tflite_metrics(convert(model, "int8", representative_data=data.x_train), data, float_outputs)
        rows.append(row(model_name, "ptq-int8", seed, 8, 8, keras_acc=rows[0]["keras_acc"], **ptq))
    except Exception as error:  # a failed export is a row, not a crash
        rows.append(row(model_name, "ptq-int8", seed, 8, 8, error=str(error)[:300]))
    for bits in bits_list:
        for rounding in roundings:
            scheme = QuantScheme(weight_bits=bits, rounding=rounding, learned_step=learned_step_for(bits))
            timer = qat_timer(recipe)
            quantized, history = train_quantized(model, data, scheme, recipe, seed=seed, callbacks=[timer])
            smooth_outputs = quantized.predict(data.x_test, verbose=0)
            values = {"smooth_acc": float(np.mean(np.argmax(smooth_outputs, -1) == data.y_test)),
                      "final_alpha": float(history["alpha"][-1]), "epoch_seconds": timer.seconds,
                      "epoch_ratio_vs_float": timer.seconds / float_seconds}
            try:
                hard = harden(quantized)
                hard_outputs = hard.predict(data.x_test, verbose=0)
                values["keras_acc"] = float(np.mean(np.argmax(hard_outputs, -1) == data.y_test))
                values["smooth_hard_agreement"] = agreement(smooth_outputs, hard_outputs)
                values.update(tflite_metrics(convert(hard, "int8"), data, hard_outputs))
            except Exception as error:
                values["error"] = str(error)[:300]
            rows.append(row(model_name, f"softedge-{rounding}", seed, bits, 8, **values))
    for bits in bits_list:
        rows.append(bench_tfmot(model, data, bits, seed, recipe))
        rows.append(bench_bridge(model, data, bits, seed, recipe))
    for r in rows:
        if r["epoch_seconds"]:
            r["epoch_ratio_vs_float"] = r["epoch_seconds"] / float_seconds
    tfmot_seconds = {r["weight_bits"]: r["epoch_seconds"] for r in rows if r["method"] == "tfmot-qat" and r["epoch_seconds"]}
    for r in rows:
        if r["epoch_seconds"] and r["weight_bits"] in tfmot_seconds and r["method"] != "float":
            r["epoch_ratio_vs_tfmot"] = r["epoch_seconds"] / tfmot_seconds[r["weight_bits"]]
    for r in rows:
        if r["tflite_bytes"]:
            r["bytes_ratio_vs_float"] = r["tflite_bytes"] / float_tflite["tflite_bytes"]
            r["latency_ratio_vs_float"] = r["latency_us"] / float_tflite["latency_us"]
    return rows


def _tf_keras_copy(model_name, data, source, batch_norm: bool):
    """The zoo architecture in tf_keras with `source`'s weights (same layer names)."""
    import tf_keras

    copy = registry.build(model_name, data.input_shape, data.num_classes, keras_module=tf_keras, batch_norm=batch_norm)
    for layer in copy.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return copy


def _fit_tf_keras(model, data, recipe, seed, callbacks=()):
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    timer = EpochTimerTfKeras()
    model.compile(tf_keras.optimizers.Adam(recipe.qat_learning_rate),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=recipe.qat_epochs, batch_size=recipe.batch_size, verbose=0,
              shuffle=True, callbacks=[timer, *callbacks])
    return timer.seconds


def tfmot_qat_model(float_model, data, bits: int):
    """tfmot's QAT model of `float_model` at W{bits}A8 (n-bit scheme, tf_keras), from its BN-folded
    float weights like the bridge: tfmot cannot quantize a BatchNormalization that follows a Conv1D
    ("not supported")."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_registry as n_bit_registry,
    )

    from toolkit import fold_batch_norm

    source = _tf_keras_copy(float_model.name, data, fold_batch_norm(float_model), batch_norm=False)
    n_bit = tfmot.quantization.keras.experimental.default_n_bit

    def annotate(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, tf_keras.layers.Conv1D):  # tfmot: "pass a QuantizeConfig"
            config = n_bit_registry.DefaultNBitQuantizeConfig(["kernel"], ["activation"], False, num_bits_weight=bits,
                                                              num_bits_activation=8)
            return tfmot.quantization.keras.quantize_annotate_layer(clone, config)
        return tfmot.quantization.keras.quantize_annotate_layer(clone) if not isinstance(layer, tf_keras.layers.InputLayer) else clone

    annotated = tf_keras.models.clone_model(source, clone_function=annotate)
    annotated.set_weights(source.get_weights())
    with tfmot.quantization.keras.quantize_scope({"DefaultNBitQuantizeConfig": n_bit_registry.DefaultNBitQuantizeConfig}):
        return tfmot.quantization.keras.quantize_apply(
            annotated, scheme=n_bit.DefaultNBitQuantizeScheme(num_bits_weight=bits, num_bits_activation=8))


def bench_tfmot(float_model, data, bits: int, seed: int, recipe: Recipe) -> dict:
    """tfmot's own QAT at W{bits}A8 (n-bit scheme), exported as tfmot users export."""
    import tensorflow as tf

    model_name = float_model.name
    values = {}
    try:
        quantized = tfmot_qat_model(float_model, data, bits)
        values["epoch_seconds"] = _fit_tf_keras(quantized, data, recipe, seed)
        keras_outputs = quantized.predict(data.x_test, verbose=0)
        values["keras_acc"] = float(np.mean(np.argmax(keras_outputs, -1) == data.y_test))
        converter = tf.lite.TFLiteConverter.from_keras_model(quantized)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        values.update(tflite_metrics(run_converter(converter, f"tfmot {model_name} W{bits}"), data, keras_outputs))
    except Exception as error:  # a failed export is a row, not a crash
        values["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:250]}"
    return row(model_name, "tfmot-qat", seed, bits, 8, **values)


def bench_bridge(float_model, data, bits: int, seed: int, recipe: Recipe) -> dict:
    """softedge soft rounding through the tfmot bridge (BN folded first), exported exactly."""
    from toolkit import fold_batch_norm, tfmot_bridge

    model_name = float_model.name
    values = {}
    try:
        source = _tf_keras_copy(model_name, data, fold_batch_norm(float_model), batch_norm=False)
        quantized = tfmot_bridge.quantize_tfmot(source, QuantScheme(weight_bits=bits, rounding="soft"))
        steps = recipe.qat_epochs * int(np.ceil(len(data.x_train) / recipe.batch_size))
        schedule = AlphaSchedule("exponential", recipe.alpha_start, recipe.alpha_end, steps,
                                 hold_steps=int(steps * recipe.hold_fraction))
        values["epoch_seconds"] = _fit_tf_keras(quantized, data, recipe, seed, [tfmot_bridge.AnnealRoundingTfmot(schedule)])
        values["final_alpha"] = schedule(steps)
        smooth_outputs = quantized.predict(data.x_test, verbose=0)
        hard = harden(quantized)
        hard_outputs = hard.predict(data.x_test, verbose=0)
        values["smooth_acc"] = float(np.mean(np.argmax(smooth_outputs, -1) == data.y_test))
        values["keras_acc"] = float(np.mean(np.argmax(hard_outputs, -1) == data.y_test))
        values["smooth_hard_agreement"] = agreement(smooth_outputs, hard_outputs)
        values.update(tflite_metrics(convert(hard, "int8"), data, hard_outputs))
    except Exception as error:
        values["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:250]}"
    return row(model_name, "softedge-tfmot-soft", seed, bits, 8, **values)


def alpha_sweep(recipe: Recipe, alphas=(10.0, 100.0, 1e3, 1e4), bits_list=(3, 2)) -> list[dict]:
    """Smooth-vs-hard agreement as a function of the final alpha (MNIST-1D, seed 0, soft)."""
    data = datasets.load("mnist1d")
    keras.utils.set_random_seed(0)  # before building: the initial weights come from it
    model = registry.build("mnist1d_cnn", data.input_shape, data.num_classes)
    train_float(model, data, recipe, seed=0)
    rows = []
    for bits in bits_list:
        for alpha_end in alphas:
            swept = dataclasses.replace(recipe, alpha_end=alpha_end)
            quantized, _ = train_quantized(model, data, QuantScheme(weight_bits=bits, rounding="soft",
                                                                    learned_step=learned_step_for(bits)), swept)
            smooth = np.argmax(quantized.predict(data.x_test, verbose=0), -1)
            set_alpha(quantized, HARD_ALPHA)
            hard = np.argmax(quantized.predict(data.x_test, verbose=0), -1)
            rows.append({"model": "mnist1d_cnn", "weight_bits": bits, "final_alpha": alpha_end,
                         "smooth_acc": float(np.mean(smooth == data.y_test)), "hard_acc": float(np.mean(hard == data.y_test)),
                         "smooth_hard_agreement": float(np.mean(smooth == hard))})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and spread (max - min) over seeds of each (model, method, bits)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], r["weight_bits"]), []).append(r)
    summary = []
    for (model, method, bits), members in groups.items():
        entry = {"model": model, "method": method, "weight_bits": bits, "seeds": len(members),
                 "errors": [m["error"] for m in members if m["error"]]}
        for key in ("keras_acc", "smooth_acc", "tflite_acc", "agreement", "smooth_hard_agreement",
                    "epoch_ratio_vs_float", "epoch_ratio_vs_tfmot", "bytes_ratio_vs_float", "latency_ratio_vs_float"):
            values = [m[key] for m in members if m[key] is not None]
            entry[key] = float(np.mean(values)) if values else None
            entry[f"{key}_spread"] = float(np.ptp(values)) if values else None
        summary.append(entry)
    return summary


def _fmt(entry, key, percent=True):
    value = entry[key]
    if value is None:
        return "-"
    spread = entry.get(f"{key}_spread") or 0.0
    if percent:
        return f"{100 * value:.1f}" + (f" ±{50 * spread:.1f}" if entry["seeds"] > 1 else "")
    return f"{value:.2f}"


def format_table(summary: list[dict]) -> str:
    lines = ["| model | method | W | Keras acc (hard) | smooth acc | TFLite acc | Keras->TFLite agree | smooth/hard agree "
             "| epoch x float | epoch x tfmot | bytes x float | latency x float | error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        lines.append(f"| {e['model']} | {e['method']} | {e['weight_bits']} | {_fmt(e, 'keras_acc')} | "
                     f"{_fmt(e, 'smooth_acc')} | {_fmt(e, 'tflite_acc')} | {_fmt(e, 'agreement')} | "
                     f"{_fmt(e, 'smooth_hard_agreement')} | {_fmt(e, 'epoch_ratio_vs_float', False)} | "
                     f"{_fmt(e, 'epoch_ratio_vs_tfmot', False)} | "
                     f"{_fmt(e, 'bytes_ratio_vs_float', False)} | {_fmt(e, 'latency_ratio_vs_float', False)} | "
                     f"{'; '.join(e['errors'])[:80] or ''} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick = os.environ.get("QUICK", "") not in ("", "0")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--bits", default="8,4,3,2")
    parser.add_argument("--roundings", default=",".join(SOFTEDGE_ROUNDINGS))
    parser.add_argument("--seeds", type=int, default=1 if quick else 3)
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="the results folder; with --only-seed, the JSON file of its rows")
    parser.add_argument("--only-seed", type=int, default=None,
                        help="run --models at this seed here and write their rows (the parent runs each so)")
    args = parser.parse_args(argv)
    # QUICK: a smoke run under 5 minutes. Without XLA (its ~3 s compile per model outweighs
    # 4 epochs), so its epoch-time ratios are not the recipe's; the sweep has two alphas.
    recipe = Recipe(float_epochs=10, qat_epochs=4, jit_compile=False) if quick else Recipe()
    if args.only_seed is not None:
        rows = [r for model_name in args.models.split(",")
                for r in bench_model(model_name, args.only_seed, [int(b) for b in args.bits.split(",")],
                                     args.roundings.split(","), recipe)]
        write_json(args.output, {"rows": rows})
        return
    rows = []
    for model_name in args.models.split(","):
        for seed in range(args.seeds):   # ~22 trainings each: a process of its own (bench.isolated)
            rows += rows_in_own_process("bench.qat", "--models", model_name, "--bits", args.bits,
                                        "--roundings", args.roundings, "--only-seed", str(seed))
            print(f"{model_name} seed {seed}: {len(rows)} rows", flush=True)
    sweep = alpha_sweep(recipe, alphas=(10.0, 1e4) if quick else (10.0, 100.0, 1e3, 1e4))
    summary = summarize(rows)
    print(format_table(summary))
    write_json(args.output / "qat.json", rows)
    write_json(args.output / "qat_summary.json", {"recipe": dataclasses.asdict(recipe), "seeds": args.seeds,
                                                  "summary": summary, "alpha_sweep": sweep})
    print(f"\nwrote {args.output / 'qat.json'}")


if __name__ == "__main__":
    main()
