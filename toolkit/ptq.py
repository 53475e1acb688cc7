"""Post-training quantization of a trained float model: steps, then round to nearest or learn
the rounding layer by layer (AdaRound, `toolkit.adaround`).

    quantized = quantize(float_model, ptq_scheme(scheme), calibration_data=x)   # activation ranges
    report = post_training_rounding(float_model, quantized, x, "adaround")      # kernels, in place

The result is the same kind of model QAT produces: every kernel is stored on its grid, w = s q
with q the chosen integers, and each layer's step s is held in its `kernel_step` variable
(`ptq_scheme` gives every layer a stored step), so harden / convert / validate store exactly
these integers.

Steps. For each output channel (or the whole kernel where per-tensor), s minimises the weights'
squared rounding error ||w - s clip(round(w / s), -qmax, qmax)||^2 over s = f max|w| / qmax,
f in {0.30, 0.31, ..., 1.00}: below 4 bits clipping a few large weights beats a grid too coarse
for the rest (at 2 bits max-abs scaling leaves most weights at 0).

AdaRound (Nagel et al. 2020), for each quantized kernel layer in graph order:
    q = clip(floor(w / s) + h(V), -qmax, qmax), h the rectified sigmoid, V from w's fractions;
    minimise  mean_positions sum_channels (f(x_q; s q) - f(x; w))^2  +  lambda f_reg(V; beta)
over V, where f is the layer (its bias and activation included), x_q its input in the quantized
model whose earlier layers hold their learned integers (activations quantized), and x its input
in the float model (BatchNormalization folded, as quantize folds it). Adam on batches of the
calibration samples; the regulariser is off for the warm start, then beta anneals 20 -> 2
(`adaround.beta_schedule`). Finally h is made hard: h >= 1/2 rounds up.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from toolkit import adaround
from toolkit.batchnorm_folding import fold_batch_norm
from toolkit.errors import ConfigError
from toolkit.graph import to_functional
from toolkit.quantizers import STEP_FRACTIONS, mse_steps
from toolkit.rewrite import quantized_layers
from toolkit.roundings import PtqRounding
from toolkit.scheme import QuantScheme
from toolkit.separable import split_separable_convs

__all__ = ["STEP_FRACTIONS", "AdaRoundSettings", "ROUNDINGS", "mse_steps", "post_training_rounding", "ptq_scheme", "set_mse_step"]

ROUNDINGS = tuple(PtqRounding.names())
_STEPS_PER_CALL = 1000   # AdaRound steps per compiled call; the progress and loss history interval


@dataclass(frozen=True)
class AdaRoundSettings:
    """AdaRound's optimisation, defaults as the paper and AIMET."""

    iterations: int = 10_000
    regularization: float = 0.01   # lambda
    warm_start: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0
    learning_rate: float = 1e-3
    batch_size: int = 32

    def __post_init__(self):
        if self.iterations < 1 or self.batch_size < 1 or not 0 <= self.warm_start < 1:
            raise ConfigError(f"AdaRound needs iterations >= 1, batch_size >= 1 and 0 <= warm_start < 1. Received: "
                              f"{asdict(self)}")

    def to_dict(self) -> dict:
        return asdict(self)


def ptq_scheme(scheme: QuantScheme) -> QuantScheme:
    """`scheme` with a stored step for every kernel (`learned_step`: the step is a variable
    that post-training rounding sets) and straight-through rounding (the weights lie on their
    grids, where every rounding method agrees; STE's forward pass is the hard model)."""
    overrides = {pattern: {**values, "learned_step": True} for pattern, values in scheme.overrides.items()}
    overrides = {pattern: {k: v for k, v in values.items() if k != "rounding"} for pattern, values in overrides.items()}
    return QuantScheme(**{**asdict(scheme), "learned_step": True, "rounding": "ste", "overrides": overrides})


def set_mse_step(layer) -> np.ndarray:
    """Sets a quantized layer's stored step to its kernel's MSE step (`mse_steps`); returns the
    step the layer then computes with (|step| + tiny). Also a starting point for learned
    steps in QAT (`make bench-recipe` compares it with LSQ's)."""
    quantizer = layer.weight_quantizer
    if quantizer.step_variable is None:
        raise ConfigError(f"Layer {layer.name!r} has no stored step: quantize with ptq_scheme(scheme) or "
                          f"learned_step=True.")
    kernel = np.asarray(layer.float_kernel.numpy(), np.float32)
    quantizer.step_variable.assign(mse_steps(kernel, quantizer.reduce_axes, quantizer.qmax))
    return np.asarray(quantizer.scale(layer.float_kernel))


@contextlib.contextmanager
def _kernel(layer, kernel):
    """`layer`'s call computes with `kernel` in place of its quantized kernel while inside."""
    layer.__dict__["quantized_kernel"] = lambda: kernel
    try:
        yield
    finally:
        layer.__dict__.pop("quantized_kernel", None)


def _outputs(layer, x, kernel):
    with _kernel(layer, kernel):
        return layer.call(x)


def _inputs(model: keras.Model, layer_name: str, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The input of `layer_name` in `model` (inference mode) for every sample of `x`."""
    probe = keras.Model(model.inputs, model.get_layer(layer_name).input)
    return np.concatenate([np.asarray(probe(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)])


def _all_outputs(layer, kernel: np.ndarray, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """`layer`'s outputs with `kernel` for every sample of `x`."""
    kernel = tf.constant(kernel, tf.float32)
    return np.concatenate([np.asarray(_outputs(layer, x[i:i + batch_size], kernel)) for i in range(0, len(x), batch_size)])


def post_training_rounding(float_model: keras.Model, quantized: keras.Model, x: np.ndarray, rounding: str = "adaround",
                           settings: AdaRoundSettings | None = None, seed: int = 0, progress=None) -> list[dict]:
    """Sets every kernel of `quantized` (made by `quantize(float_model, ptq_scheme(...))`) to
    s q: MSE steps, then q rounded to nearest or learned (module docstring), layer by layer in
    graph order. `x`: calibration samples. `progress(record)`: called as layers finish (and every
    1000 AdaRound iterations, with "iteration"). Returns one record per layer: name, bits,
    weights, reconstruction error (mean squared) with nearest rounding and with the result,
    the share of weights rounded differently from nearest, seconds."""
    if rounding not in ROUNDINGS:
        raise ConfigError(f"Expected rounding in {ROUNDINGS}. Received: {rounding!r}")
    settings = settings or AdaRoundSettings()
    source = fold_batch_norm(split_separable_convs(to_functional(float_model)))
    x = np.asarray(x, np.float32)
    records = []
    layers = quantized_layers(quantized)
    for position, layer in enumerate(layers):
        quantizer = layer.weight_quantizer
        start = time.perf_counter()
        w = np.asarray(layer.float_kernel.numpy(), np.float32)
        s = set_mse_step(layer)
        nearest = np.clip(np.round(w / s), -quantizer.qmax, quantizer.qmax)
        x_q = _inputs(quantized, layer.name, x)
        target = _all_outputs(layer, w, _inputs(source, layer.name, x))
        record = {"layer": layer.name, "bits": quantizer.bits, "weights": int(w.size), "rounding": rounding}
        if rounding == "adaround":
            integers, history = _learn_rounding(layer, w, s, quantizer.qmax, x_q, target, settings, seed + position,
                                                progress, record)
            record["losses"] = history
        else:
            integers = nearest
        layer.float_kernel.assign((s * integers).astype(np.float32))
        record["error_nearest"] = _error(layer, s * nearest, x_q, target)
        record["error"] = _error(layer, s * integers, x_q, target)
        record["changed_from_nearest"] = float(np.mean(integers != nearest))
        record["seconds"] = time.perf_counter() - start
        records.append(record)
        if progress:
            progress({**record, "position": position + 1, "layers": len(layers)})
    return records


def _error(layer, kernel, x_q, target) -> float:
    return float(np.mean((_all_outputs(layer, kernel, x_q) - target) ** 2))


def _learn_rounding(layer, w, s, qmax, x_q, target, settings: AdaRoundSettings, seed: int, progress, record):
    """AdaRound on one layer; (the learned integers, [(iteration, loss), ...] every 1000),
    calling progress({**record, "iteration", "loss"}) as it goes."""
    w_floor = tf.constant(np.floor(w / s), tf.float32)
    scale = tf.constant(s, tf.float32)
    v = tf.Variable(adaround.initial_v(w, s), name=f"{layer.name}_adaround_v")
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    optimizer.build([v])
    x_all, y_all = tf.constant(x_q), tf.constant(target)

    def train_step(rows, beta, regularization):
        with tf.GradientTape() as tape:
            kernel = scale * tf.clip_by_value(w_floor + adaround.rectified_sigmoid(v), -qmax, qmax)
            outputs = _outputs(layer, tf.gather(x_all, rows), kernel)
            reconstruction = tf.reduce_mean(tf.reduce_sum(tf.square(outputs - tf.gather(y_all, rows)), axis=-1))
            loss = reconstruction + regularization * adaround.rounding_regularizer(v, beta)
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])
        return reconstruction

    @tf.function(jit_compile=False, reduce_retracing=True)
    def train_steps(rows, betas, regularizations):
        """One compiled call runs len(rows) steps (per-call overhead dominates a small layer's step)."""
        reconstruction = tf.constant(0.0)
        for i in tf.range(tf.shape(rows)[0]):
            reconstruction = train_step(rows[i], betas[i], regularizations[i])
        return reconstruction

    # Every step's batch, beta and lambda, drawn up front in iteration order.
    rng = np.random.default_rng(seed)
    batch = min(settings.batch_size, len(x_q))
    rows = np.stack([rng.choice(len(x_q), size=batch, replace=False) for _ in range(settings.iterations)])
    betas = np.array([adaround.beta_schedule(i, settings.iterations, (settings.beta_start, settings.beta_end),
                                             settings.warm_start) for i in range(settings.iterations)], np.float32)
    regularizations = np.array([0.0 if adaround.in_warm_start(i, settings.iterations, settings.warm_start)
                                else settings.regularization for i in range(settings.iterations)], np.float32)
    history = []
    for start in range(0, settings.iterations, _STEPS_PER_CALL):
        end = min(start + _STEPS_PER_CALL, settings.iterations)
        loss = float(train_steps(tf.constant(rows[start:end]), tf.constant(betas[start:end]),
                                 tf.constant(regularizations[start:end])))
        history.append((end, loss))
        if progress:
            progress({**record, "iteration": end, "loss": loss})
    integers = np.clip(np.floor(w / s) + adaround.hard_rounding(v.numpy()), -qmax, qmax)
    return integers, history
