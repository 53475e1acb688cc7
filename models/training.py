"""The training recipe: float pre-training, then quantize and fine-tune with alpha annealed to hard.

    1. train the float model (Adam, cross-entropy on logits);
    2. `quantize` it with the scheme, calibrating activation ranges on training batches;
    3. fine-tune the quantized model while `AnnealRounding` moves alpha from alpha_start to
       alpha_end (exponential), holding alpha_end for the last `hold_fraction` of the steps, so
       that the smooth model ends up behaving as the hard one it will be exported as.

alpha_end = 1e4 (measured, MNIST-1D CNN, W2 with learned steps): 1e3 leaves a smooth -> hard
gap (85.2% -> 80.7%: weights settle inside the soft transition, where they act as extra
levels); 1e4 closes it (82.2% -> 82.1%); 1e5 hardens too early to learn (77.5%). At W3-W8 1e4
costs nothing. A final straight-through phase instead was worse (80.7% -> 59.1% at W2).
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

__all__ = ["Recipe", "accuracy", "learned_step_for", "predict_logits", "train_float", "train_quantized"]


def learned_step_for(weight_bits: int, step: str = "auto") -> bool:
    """Whether kernels learn their step (LSQ): "learned", "max-abs", or "auto" = learned at 2 bits.

    Measured on the MNIST-1D CNN (hard accuracy after the default recipe): at 2 bits LSQ
    reaches 82% vs 75% with max-abs steps (ternary weights need a step well below max|w|);
    at 3 bits max-abs is better (94.2% vs 92.4%).
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


def _compile(model: keras.Model, learning_rate: float, jit_compile: bool = True) -> None:
    # jit_compile=True, not Keras' "auto" (which resolves to False for these models): XLA fuses
    # soft rounding to ~1.6x the cost of a plain round (graph mode: ~7.6x, bench/rounding.py)
    # and removes most per-step overhead (measured, MNIST-1D W3 soft: 0.21 -> 0.12 s/epoch;
    # the first epoch pays ~3 s of compilation).
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict_logits(model, x), axis=-1) == y))


def train_float(model: keras.Model, data: Dataset, recipe: Recipe, seed: int = 0, verbose: int = 0,
                callbacks=()) -> dict:
    """Phase 1. Returns the Keras history dict."""
    keras.utils.set_random_seed(seed)
    _compile(model, recipe.learning_rate, recipe.jit_compile)
    history = model.fit(data.x_train, data.y_train, epochs=recipe.float_epochs, batch_size=recipe.batch_size,
                        shuffle=True, verbose=verbose, callbacks=list(callbacks))
    return history.history


def train_quantized(float_model: keras.Model, data: Dataset, scheme: QuantScheme, recipe: Recipe,
                    seed: int = 0, verbose: int = 0, callbacks=()) -> tuple[keras.Model, dict]:
    """Phases 2-3. Returns (the smooth quantized model, its history dict with an "alpha" column)."""
    keras.utils.set_random_seed(seed)
    model = quantize(float_model, scheme, calibration_data=data.x_train[:1024])
    _compile(model, recipe.qat_learning_rate, recipe.jit_compile)
    steps = recipe.qat_epochs * math.ceil(len(data.x_train) / recipe.batch_size)
    schedule = AlphaSchedule("exponential", recipe.alpha_start, recipe.alpha_end, steps,
                             hold_steps=int(steps * recipe.hold_fraction))
    history = model.fit(data.x_train, data.y_train, epochs=recipe.qat_epochs, batch_size=recipe.batch_size,
                        shuffle=True, verbose=verbose, callbacks=[AnnealRounding(schedule), *callbacks])
    return model, history.history
