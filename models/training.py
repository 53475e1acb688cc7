"""The training recipe: float pre-training, then quantize and fine-tune with alpha annealed to hard.

    1. train the float model (Adam, cross-entropy on logits);
    2. `quantize` it with the scheme, calibrating activation ranges on training batches;
    3. fine-tune the quantized model while `AnnealRounding` moves alpha from alpha_start to
       alpha_end (exponential), holding alpha_end for the last `hold_fraction` of the steps, so
       that the smooth model ends up behaving as the hard one it will be exported as;
    4. after the last step, alpha = `HARD_ALPHA` (`Recipe.end_hard`): the trained model rounds
       its weights as round(x), so it computes with the integers `harden` exports;
    5. the last QAT epoch computes its forward pass in the device's arithmetic (below).

Step 4: at alpha_end = 1e4 a weight within about 1e-3 of a rounding boundary still sits between
two levels (tanh(1e4 r) < 1 in float32 for |r| < 1e-3) and acts as an extra one. On the MLPerf
DS-CNN at W4 (`bench/zoo.py` settings, seed 0) the model at alpha_end agreed with the hard model
on 99.5% of top-1 decisions; the same weights at HARD_ALPHA on 100%.

Step 5, the last QAT epoch on the device's arithmetic (`Recipe.device_arithmetic` = "xnnpack",
`device_epochs` = 1, the defaults): the kernel layers, two-input Adds and the input quantizer
compute their forward pass as XNNPACK and an int8-input host do (`toolkit.device_arithmetic`,
straight-through gradients), so the trained model computes the integers the device will. With it
every zoo model agreed with the device on every top-1 decision at W8/W4/W3 and its task metric
equalled the TFLite model's, against 99.6% on MobileNetV2-0.35 W4 and W3 with the float
simulation throughout (`make bench-zoo`, docs/benchmarks.md); accuracy moved within one seed's
noise (up to 2.4 points either way on 250-600 inputs), MNIST-1D within its seeds' spread (`make
bench-recipe`), at 2-15 s more QAT per zoo model (one more XLA compile). `device_arithmetic=None`
keeps the float simulation throughout. In a run of few QAT epochs the last one still anneals
(the hold phase is `hold_fraction` of the steps): its forward pass is the device's, its gradient
the soft rounding's at the current alpha.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
import numpy as np

from models.datasets import Dataset, training_pairs
from models.epochs import EpochClock, array_epochs, epoch_steps
from toolkit.device_arithmetic import DeviceArithmeticFrom, set_device_arithmetic
from toolkit.device_families import check_family
from toolkit.distribute import (
    global_batch_loss,
    is_multi_worker,
    prepare_fit,
    synchronized_batch_norm,
)
from toolkit.errors import ConfigError
from toolkit.graph import all_layers
from toolkit.rewrite import quantize
from toolkit.rounding import HARD_ALPHA
from toolkit.schedules import AlphaSchedule, AnnealRounding, set_alpha
from toolkit.scheme import QuantScheme

__all__ = ["Recipe", "accuracy", "anomaly_scores", "compile_classifier", "compile_for_task", "ends_in_softmax", "evaluate", "learned_step_for",
           "predict_logits", "recalibrate_batch_norm", "steps_per_call", "task_metrics", "train_float", "train_quantized", "use_xla"]


def learned_step_for(weight_bits: int, step: str = "auto") -> bool:
    """Whether kernels learn their step (LSQ): "learned", "max-abs", or "auto" = learned at 2 bits.

    `make bench-recipe` (MNIST-1D CNN, hard accuracy after the default recipe, mean of 3 seeds):
    a learned step, started at the MSE step (`toolkit.quantizers.mse_steps`, the default start),
    reaches 90.5% at 2 bits, against 83.2% from LSQ's own start and 77.2% with max-abs steps
    (ternary weights need a step well below max|w|); at 3 bits max-abs is as good (95.0% vs
    94.5%, LSQ's start 92.9%), so "auto" keeps max-abs from 3 bits up.
    """
    if step not in ("auto", "learned", "max-abs"):
        from toolkit.errors import ConfigError

        raise ConfigError(f"Expected step 'auto', 'learned' or 'max-abs'. Received: step={step!r}")
    return step == "learned" or (step == "auto" and weight_bits <= 2)


@dataclass(frozen=True)
class Recipe:
    """Epochs and optimizer settings of both phases, and the alpha schedule's ends."""

    float_epochs: int = 30
    qat_epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 2e-3
    qat_learning_rate: float = 5e-4
    alpha_start: float = 1.0
    alpha_end: float = 1e4
    hold_fraction: float = 0.2
    end_hard: bool = True  # step 4: after the last step the trained model rounds hard (HARD_ALPHA)
    # Step 5: the last `device_epochs` QAT epochs (None: all of them) train with the forward pass
    # in this kernel family's arithmetic (`toolkit.device_arithmetic`, straight-through);
    # device_arithmetic=None: the float simulation throughout.
    device_arithmetic: str | None = "xnnpack"
    device_epochs: int | None = 1
    jit_compile: bool | None = None  # None: `use_xla` decides per model
    steps_per_execution: int | None = None  # None: `steps_per_call` decides from the epoch's steps

    def __post_init__(self):
        """Refuses a recipe that would fail (or silently do nothing) only after float training."""
        for name, low in (("float_epochs", 0), ("qat_epochs", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"Expected an integer {name} >= {low}. Received: {name}={value!r}")
        for name in ("learning_rate", "qat_learning_rate", "alpha_start", "alpha_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ConfigError(f"Expected a finite {name} > 0. Received: {name}={value!r}")
        if not (isinstance(self.hold_fraction, (int, float)) and 0 <= self.hold_fraction < 1):
            raise ConfigError(f"Expected 0 <= hold_fraction < 1. Received: hold_fraction={self.hold_fraction!r}")
        check_family(self.device_arithmetic)
        if self.device_epochs is not None and (isinstance(self.device_epochs, bool) or not isinstance(self.device_epochs, int)
                                               or not 1 <= self.device_epochs <= self.qat_epochs):
            raise ConfigError(f"Expected device_epochs None or 1..qat_epochs ({self.qat_epochs}). "
                              f"Received: device_epochs={self.device_epochs!r}")
        if not isinstance(self.end_hard, bool):
            raise ConfigError(f"Expected end_hard True or False. Received: end_hard={self.end_hard!r}")
        if self.steps_per_execution is not None and not (isinstance(self.steps_per_execution, int)
                                                         and self.steps_per_execution >= 1):
            raise ConfigError(f"Expected steps_per_execution >= 1. Received: {self.steps_per_execution!r}")

    @property
    def device_from(self) -> int:
        """The first QAT epoch on the device's arithmetic (counted from 0; `qat_epochs` where none)."""
        if self.device_arithmetic is None:
            return self.qat_epochs
        return self.qat_epochs - (self.device_epochs or self.qat_epochs)

    def to_dict(self) -> dict:
        return asdict(self)


def use_xla(model: keras.Model, jit_compile: bool | None = None) -> bool:
    """`jit_compile` if given; else XLA unless the model has a depthwise convolution.

    XLA fuses soft rounding and removes per-step overhead (below), but its CPU depthwise
    convolution is slow: MLPerf Tiny DS-CNN on 2400 synthetic 49x10 inputs, warm epochs, 2
    cores: float 16-21 s with XLA vs 2.7-3.0 s without, QAT (W4) 20.6 s vs 3.7 s.
    """
    if jit_compile is not None:
        return bool(jit_compile)
    kinds = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv1D,
             keras.layers.SeparableConv2D)
    return not any(isinstance(layer, kinds) for layer in all_layers(model))  # QAT twins subclass these


# Steps one compiled call runs when the recipe does not say (`steps_per_call`): Keras' per-call
# overhead (the iterator, callbacks, logs) is paid once per call instead of once per step.
# Probed on digits_cnn QAT at W3 (23 steps an epoch, no XLA), median warm epoch: 0.20-0.26 s at
# 1 step per call, 0.14-0.17 s at 16; `make bench-speed` measures it with and without XLA.
AUTO_STEPS_PER_CALL = 16


def steps_per_call(recipe: Recipe, samples: int) -> int:
    """The recipe's `steps_per_execution`, else AUTO_STEPS_PER_CALL capped at one epoch's steps."""
    if recipe.steps_per_execution is not None:
        if recipe.steps_per_execution < 1:
            from toolkit.errors import ConfigError

            raise ConfigError(f"Expected steps_per_execution >= 1. Received: {recipe.steps_per_execution}")
        return int(recipe.steps_per_execution)
    return max(1, min(AUTO_STEPS_PER_CALL, math.ceil(samples / recipe.batch_size)))


def recalibrate_batch_norm(model: keras.Model, x: np.ndarray, batch_size: int = 64, max_batches: int = 64) -> None:
    """Sets every BatchNormalization's moving mean and variance to the average of its batch
    statistics over `x` with the final weights (a "precise BN" pass; no weight changes).

    Keras updates them as m <- momentum m + (1 - momentum) batch, from m = 0 / v = 1: with few
    steps (a small data set, a short run) they lag far behind fast-moving weights. Measured on
    the MLPerf Tiny DS-CNN, 2400 synthetic samples, 5 epochs (190 steps) at momentum 0.99: a
    depthwise BN's moving variance 0.159 where its input's variance is 0.011, test accuracy 8.7%
    in inference mode against 82% in training mode. Batch k (from 0) is averaged in with
    momentum k / (k + 1).
    """
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, min(len(x), batch_size * max_batches), batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(x[start:start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def compile_classifier(model: keras.Model, learning_rate: float, jit_compile: bool = True, from_logits: bool = True,
                       steps_per_execution: int = 1) -> None:
    """Adam, cross-entropy on logits (or probabilities), accuracy; XLA by default (see below)."""
    # jit_compile=True, not Keras' "auto" (which resolves to False for these models): XLA fuses
    # soft rounding to ~1.6-1.9x the cost of a plain round (graph mode: ~6-7.6x,
    # bench/rounding.py) and removes most per-step overhead (`make bench-recipe`, MNIST-1D W3
    # soft: 0.23 -> 0.14 s/epoch; the first epoch pays ~3 s more for compilation).
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=global_batch_loss(keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def ends_in_softmax(model: keras.Model) -> bool:
    """Whether the model outputs probabilities (its last layer applies a softmax)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    return last.get_config().get("activation") == "softmax"


def compile_for_task(model: keras.Model, learning_rate: float, task: str, jit_compile: bool = True,
                     from_logits: bool = True, steps_per_execution: int = 1) -> None:
    """classification: `compile_classifier` (from_logits False for a model that ends in a softmax,
    as a user's model may); regression and anomaly (reconstruction): mean squared error, MAE reported."""
    if task in ("regression", "anomaly"):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=global_batch_loss(keras.losses.MeanSquaredError()),
                      metrics=["mae"], jit_compile=jit_compile,
                      steps_per_execution=steps_per_execution)
        return
    compile_classifier(model, learning_rate, jit_compile, from_logits=from_logits, steps_per_execution=steps_per_execution)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, task: str) -> dict:
    """{"accuracy"} for classification, {"mse", "mae"} for regression, {"auc", "normal_mse"} for
    anomaly detection (see `task_metrics`)."""
    return task_metrics(predict_logits(model, x), x, y, task)


def anomaly_scores(outputs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """An autoencoder's anomaly score per sample: the mean squared reconstruction error."""
    error = np.asarray(outputs, np.float64).reshape(len(x), -1) - np.asarray(x, np.float64).reshape(len(x), -1)
    return np.mean(error ** 2, axis=1)


def task_metrics(outputs: np.ndarray, x: np.ndarray, y: np.ndarray, task: str) -> dict:
    """Metrics of a model's outputs on (x, y): classification accuracy; regression MSE and MAE;
    anomaly detection: the ROC AUC of the anomaly scores against y (1 = anomalous) and the mean
    score of the normal samples."""
    outputs = np.asarray(outputs, np.float64)
    if task == "classification":
        return {"accuracy": float(np.mean(np.argmax(outputs, axis=-1) == y))}
    if task == "anomaly":
        from sklearn.metrics import roc_auc_score

        scores, y = anomaly_scores(outputs, x), np.asarray(y)
        auc = float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan")
        return {"auc": auc, "normal_mse": float(np.mean(scores[y == 0]))}
    error = outputs.reshape(len(y), -1) - np.asarray(y, np.float64).reshape(len(y), -1)
    return {"mse": float(np.mean(error ** 2)), "mae": float(np.mean(np.abs(error)))}


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict_logits(model, x), axis=-1) == y))


def _fit(model: keras.Model, data: Dataset, x, y, recipe: Recipe, epochs: int, seed: int, verbose: int, callbacks,
         initial_epoch: int = 0, restore=None):
    """model.fit over epochs initial_epoch .. epochs-1, epoch e's batches keyed by (seed, e)
    (`models.epochs`), from the arrays or from the shards where the data set is sharded.
    `restore(model)`, if given, loads a checkpoint into the built model (and optimizer) first."""
    clock = EpochClock(initial_epoch)
    if data.shards is not None and x is data.x_train:
        batches = data.shards.stream(recipe.batch_size, seed=seed, clock=clock)
    else:
        batches = array_epochs(x, y, recipe.batch_size, seed, clock)
    prepare_fit(model, np.asarray(x[:recipe.batch_size]), np.asarray(y[:recipe.batch_size]))
    if restore is not None:
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        restore(model)
    return model.fit(batches, epochs=epochs, initial_epoch=initial_epoch, verbose=verbose, shuffle=False,  # shuffled above
                     callbacks=[clock.callback(), *callbacks])


def _compile_settings(model: keras.Model, recipe: Recipe, samples: int) -> dict:
    """XLA and steps per call for this model, except under several workers (one step per call,
    no XLA: `toolkit.distribute` says why)."""
    if is_multi_worker():
        return {"jit_compile": False, "steps_per_execution": 1}
    return {"jit_compile": use_xla(model, recipe.jit_compile), "steps_per_execution": steps_per_call(recipe, samples)}


def train_float(model: keras.Model, data: Dataset, recipe: Recipe, seed: int = 0, verbose: int = 0,
                callbacks=(), task: str = "classification", initial_epoch: int = 0, restore=None) -> dict:
    """Phase 1 (from `initial_epoch`, after `restore(model)` where a run resumes). Returns the
    Keras history dict of the epochs run."""
    keras.utils.set_random_seed(seed)
    x, y = training_pairs(data, task)
    settings = _compile_settings(model, recipe, len(x))
    compile_for_task(model, recipe.learning_rate, task, settings["jit_compile"], from_logits=not ends_in_softmax(model),
                     steps_per_execution=settings["steps_per_execution"])
    with synchronized_batch_norm(model):
        history = _fit(model, data, x, y, recipe, recipe.float_epochs, seed, verbose, list(callbacks), initial_epoch,
                       restore)
    recalibrate_batch_norm(model, x)
    return history.history


def train_quantized(float_model: keras.Model, data: Dataset, scheme: QuantScheme, recipe: Recipe,
                    seed: int = 0, verbose: int = 0, callbacks=(), task: str = "classification",
                    initial_epoch: int = 0, restore=None) -> tuple[keras.Model, dict]:
    """Phases 2-3 (fine-tuning from `initial_epoch`, after `restore(model)` where a run resumes).
    Returns (the smooth quantized model, the history dict of the epochs run, with an "alpha" column).
    With `recipe.end_hard` the returned model's alpha is `HARD_ALPHA` (the history keeps the
    schedule's)."""
    keras.utils.set_random_seed(seed)
    x, y = training_pairs(data, task)
    model = quantize(float_model, scheme, calibration_data=x[:1024])
    if recipe.device_arithmetic is not None and recipe.device_from <= initial_epoch:
        set_device_arithmetic(model, recipe.device_arithmetic)
    elif recipe.device_arithmetic is not None:
        callbacks = [DeviceArithmeticFrom(recipe.device_arithmetic, recipe.device_from), *callbacks]
    settings = _compile_settings(float_model, recipe, len(x))
    compile_for_task(model, recipe.qat_learning_rate, task, settings["jit_compile"],
                     from_logits=not ends_in_softmax(float_model), steps_per_execution=settings["steps_per_execution"])
    steps_per_epoch = epoch_steps(len(x), recipe.batch_size)
    steps = recipe.qat_epochs * steps_per_epoch
    schedule = AlphaSchedule("exponential", recipe.alpha_start, recipe.alpha_end, steps,
                             hold_steps=int(steps * recipe.hold_fraction))
    annealing = AnnealRounding(schedule, initial_step=initial_epoch * steps_per_epoch)
    with synchronized_batch_norm(model):
        history = _fit(model, data, x, y, recipe, recipe.qat_epochs, seed, verbose, [annealing, *callbacks],
                       initial_epoch, restore)
    if recipe.end_hard:
        set_alpha(model, HARD_ALPHA)
    return model, history.history
