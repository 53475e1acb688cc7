"""The training recipe: float pre-training, then quantize and fine-tune with alpha annealed to hard.

    1. train the float model (Adam, cross-entropy on logits);
    2. `quantize` it with the scheme, calibrating activation ranges on training batches;
    3. fine-tune the quantized model while `AnnealRounding` moves alpha from alpha_start to
       alpha_end (exponential), holding alpha_end for the last `hold_fraction` of the steps, so
       that the smooth model ends up behaving as the hard one it will be exported as.

alpha_end = 1e4 (`make bench-recipe`, MNIST-1D CNN, W2 with learned steps, mean of 3 seeds):
1e3 leaves a large smooth -> hard gap (86.0% smooth, 66.0% hard: weights settle inside the
soft transition, where they act as extra levels); 1e4 closes it (78.9% both); 1e5 is no
different (79.1% / 79.0%). A final straight-through phase after annealing is not used: it
helped on one seed and hurt on two (hard 78.9% -> 74.0% on average).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
import numpy as np

from models.datasets import Dataset
from toolkit.quantize import quantize
from toolkit.schedules import AlphaSchedule, AnnealRounding
from toolkit.scheme import QuantScheme

__all__ = ["Recipe", "accuracy", "compile_classifier", "compile_for_task", "ends_in_softmax", "evaluate", "learned_step_for",
           "predict_logits", "train_float", "train_quantized"]


def learned_step_for(weight_bits: int, step: str = "auto") -> bool:
    """Whether kernels learn their step (LSQ): "learned", "max-abs", or "auto" = learned at 2 bits.

    `make bench-recipe` (MNIST-1D CNN, hard accuracy after the default recipe, mean of 3 seeds):
    at 2 bits LSQ reaches 78.9% vs 74.8% with max-abs steps (ternary weights need a step well
    below max|w|); at 3 bits max-abs is better (93.5% vs 91.9%).
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
    jit_compile: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def compile_classifier(model: keras.Model, learning_rate: float, jit_compile: bool = True, from_logits: bool = True) -> None:
    """Adam, cross-entropy on logits (or probabilities), accuracy; XLA by default (see below)."""
    # jit_compile=True, not Keras' "auto" (which resolves to False for these models): XLA fuses
    # soft rounding to ~1.6-1.9x the cost of a plain round (graph mode: ~6-7.6x,
    # bench/rounding.py) and removes most per-step overhead (`make bench-recipe`, MNIST-1D W3
    # soft: 0.25 -> 0.14 s/epoch; the first epoch pays ~2 s more for compilation).
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def ends_in_softmax(model: keras.Model) -> bool:
    """Whether the model outputs probabilities (its last layer applies a softmax)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    return last.get_config().get("activation") == "softmax"


def compile_for_task(model: keras.Model, learning_rate: float, task: str, jit_compile: bool = True,
                     from_logits: bool = True) -> None:
    """classification: `compile_classifier` (from_logits False for a model that ends in a softmax,
    as a user's model may); regression: mean squared error, MAE reported."""
    if task == "regression":
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", metrics=["mae"], jit_compile=jit_compile)
        return
    compile_classifier(model, learning_rate, jit_compile, from_logits=from_logits)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, task: str) -> dict:
    """{"accuracy"} for classification, {"mse", "mae"} for regression."""
    if task == "classification":
        return {"accuracy": accuracy(model, x, y)}
    error = predict_logits(model, x).reshape(np.shape(y)) - y
    return {"mse": float(np.mean(error ** 2)), "mae": float(np.mean(np.abs(error)))}


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict_logits(model, x), axis=-1) == y))


def train_float(model: keras.Model, data: Dataset, recipe: Recipe, seed: int = 0, verbose: int = 0,
                callbacks=(), task: str = "classification") -> dict:
    """Phase 1. Returns the Keras history dict."""
    keras.utils.set_random_seed(seed)
    compile_for_task(model, recipe.learning_rate, task, recipe.jit_compile, from_logits=not ends_in_softmax(model))
    history = model.fit(data.x_train, data.y_train, epochs=recipe.float_epochs, batch_size=recipe.batch_size,
                        shuffle=True, verbose=verbose, callbacks=list(callbacks))
    return history.history


def train_quantized(float_model: keras.Model, data: Dataset, scheme: QuantScheme, recipe: Recipe,
                    seed: int = 0, verbose: int = 0, callbacks=(), task: str = "classification") -> tuple[keras.Model, dict]:
    """Phases 2-3. Returns (the smooth quantized model, its history dict with an "alpha" column)."""
    keras.utils.set_random_seed(seed)
    model = quantize(float_model, scheme, calibration_data=data.x_train[:1024])
    compile_for_task(model, recipe.qat_learning_rate, task, recipe.jit_compile, from_logits=not ends_in_softmax(float_model))
    steps = recipe.qat_epochs * math.ceil(len(data.x_train) / recipe.batch_size)
    schedule = AlphaSchedule("exponential", recipe.alpha_start, recipe.alpha_end, steps,
                             hold_steps=int(steps * recipe.hold_fraction))
    history = model.fit(data.x_train, data.y_train, epochs=recipe.qat_epochs, batch_size=recipe.batch_size,
                        shuffle=True, verbose=verbose, callbacks=[AnnealRounding(schedule), *callbacks])
    return model, history.history
