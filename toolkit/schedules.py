"""Sharpness (alpha) schedules for annealing soft rounding to hard, and the Keras callback.

An `AlphaSchedule` maps a training step to alpha. Over the first `steps - hold_steps` steps it
moves from `alpha_start` to `alpha_end`, with t = step / (steps - hold_steps) clipped to [0, 1]:

    constant     alpha = alpha_start
    linear       alpha = a0 + (a1 - a0) t
    exponential  alpha = a0 (a1 / a0)^t                  (geometric; needs a0, a1 > 0)
    cosine       alpha = a1 + (a0 - a1) (1 + cos(pi t)) / 2

and then holds alpha_end for the last `hold_steps` steps (and any step after `steps`).
Exponential is the natural choice for soft rounding: the curve's shape changes with log(alpha).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import keras

from toolkit.errors import ConfigError
from toolkit.quantizers import ALPHA_WEIGHT_NAME

__all__ = ["KINDS", "AlphaSchedule", "AnnealRounding", "AnnealingSteps", "alpha_tensor", "alpha_variables",
           "set_alpha"]

KINDS = ("constant", "linear", "exponential", "cosine")


@dataclass(frozen=True)
class AlphaSchedule:
    """alpha(step); see the module docstring. JSON-serializable via `to_dict` / `from_dict`."""

    kind: str = "exponential"
    alpha_start: float = 1.0
    alpha_end: float = 1000.0
    steps: int = 1000
    hold_steps: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"Unknown schedule kind {self.kind!r}. Expected one of: {', '.join(KINDS)}.")
        if not (self.alpha_start >= 0 and self.alpha_end >= 0):
            raise ConfigError(f"Expected alphas >= 0. Received: alpha_start={self.alpha_start}, alpha_end={self.alpha_end}")
        if self.kind == "exponential" and not (self.alpha_start > 0 and self.alpha_end > 0):
            raise ConfigError(f"An exponential schedule needs alphas > 0. Received: alpha_start={self.alpha_start}, alpha_end={self.alpha_end}")
        if self.steps < 1 or not 0 <= self.hold_steps <= self.steps:
            raise ConfigError(f"Expected steps >= 1 and 0 <= hold_steps <= steps. Received: steps={self.steps}, hold_steps={self.hold_steps}")

    def __call__(self, step: int) -> float:
        ramp = self.steps - self.hold_steps
        t = 1.0 if ramp == 0 else min(max(step / ramp, 0.0), 1.0)
        a0, a1 = self.alpha_start, self.alpha_end
        if self.kind == "constant":
            return a0
        if self.kind == "linear":
            return a0 + (a1 - a0) * t
        if self.kind == "exponential":
            return a0 * (a1 / a0) ** t
        return a1 + (a0 - a1) * (1 + math.cos(math.pi * t)) / 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AlphaSchedule:
        return cls(**data)


def alpha_tensor(schedule: AlphaSchedule, step):
    """`schedule(step)` for a step tensor, as float32: the same formulas, computed in float64 so
    that the value matches the Python schedule's (also rounded to the float32 variable)."""
    step = keras.ops.cast(step, "float64")
    ramp = schedule.steps - schedule.hold_steps
    t = keras.ops.ones_like(step) if ramp == 0 else keras.ops.clip(step / ramp, 0.0, 1.0)
    a0, a1 = schedule.alpha_start, schedule.alpha_end
    if schedule.kind == "constant":
        alpha = a0 + 0.0 * t
    elif schedule.kind == "linear":
        alpha = a0 + (a1 - a0) * t
    elif schedule.kind == "exponential":
        alpha = a0 * keras.ops.power(keras.ops.cast(a1 / a0, "float64"), t)
    else:
        alpha = a1 + (a0 - a1) * (1.0 + keras.ops.cos(math.pi * t)) / 2.0
    return keras.ops.cast(alpha, "float32")


def alpha_variables(model) -> list:
    """Every rounding-sharpness variable in `model` (one per layer that rounds softly); a Keras 3
    model or a tfmot bridge model (tf_keras variables have a `name` such as
    "quant_conv0/kernel_rounding_alpha:0" instead of a `path`)."""
    def name(variable):
        return (getattr(variable, "path", None) or variable.name).split(":")[0]

    return [v for v in model.variables if name(v).endswith(ALPHA_WEIGHT_NAME)]


def set_alpha(model: keras.Model, alpha: float) -> None:
    """Sets the shared rounding sharpness of every quantizer in `model`."""
    for variable in alpha_variables(model):
        variable.assign(alpha)


class AnnealingSteps:
    """The annealing logic, shared by the Keras 3 callback and the tf_keras one (tfmot bridge):
    before each training batch, every alpha variable of the model is set from the schedule;
    the alpha in force at the end of each epoch goes into the epoch logs ("alpha" in history)."""

    def __init__(self, schedule: AlphaSchedule, initial_step: int = 0):
        super().__init__()
        self.schedule = schedule
        self.step = initial_step
        self.alpha = schedule(initial_step)
        self._variables = []

    def on_train_begin(self, logs=None):
        self._variables = alpha_variables(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        self.alpha = self.schedule(self.step)
        for variable in self._variables:
            variable.assign(self.alpha)
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["alpha"] = self.alpha


class AnnealRounding(AnnealingSteps, keras.callbacks.Callback):
    """Sets every quantizer's alpha from `schedule` before each training batch.

    The alpha is set inside the compiled train step, from the optimizer's iteration count
    (`alpha_tensor`), so it follows the schedule step by step also when a call runs several
    steps (`compile(steps_per_execution=k)`, where batch callbacks run once per k steps). The
    alpha in force at the end of each epoch is added to the epoch logs (so `history` has an
    "alpha" column). `initial_step` resumes a schedule part-way.
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        model, schedule, variables = self.model, self.schedule, self._variables
        self._first_iteration = int(model.optimizer.iterations.numpy())
        self._own_train_step = model.__dict__.get("train_step")   # an instance-level override, if any
        offset = self.step - self._first_iteration
        original = model.train_step

        def annealed_train_step(data):
            alpha = alpha_tensor(schedule, model.optimizer.iterations + offset)
            for variable in variables:
                variable.assign(alpha)
            return original(data)

        model.train_step = annealed_train_step
        model.make_train_function(force=True)   # fit built it before calling this callback

    def on_train_batch_begin(self, batch, logs=None):
        pass  # the compiled step sets alpha

    def _steps_done(self) -> int:
        return self.step + int(self.model.optimizer.iterations.numpy()) - self._first_iteration

    def on_epoch_end(self, epoch, logs=None):
        self.alpha = self.schedule(max(self._steps_done() - 1, 0))
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.step = self._steps_done()
        if self._own_train_step is None:
            del self.model.__dict__["train_step"]   # the class's method again
        else:
            self.model.__dict__["train_step"] = self._own_train_step
        self.model.make_train_function(force=True)
