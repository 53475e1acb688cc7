"""Checkpoints of a training run, so that an interrupted run resumes (`softedge train --resume`)
with the result the uninterrupted run would have had.

    RUN/checkpoint/state.json     {"config": the run's config, "phase": "float" | "qat",
                                   "epochs_done": k, "history": {"float": {...}, "qat": {...}},
                                   "variables": "qat-0003.npz" | null}
    RUN/checkpoint/qat-0003.npz   every model variable and optimizer variable after 3 QAT epochs

A resumed run repeats the same computation because everything a later epoch depends on is
restored or recomputed the same way:
- the .npz holds every variable of the model (weights, BN statistics, quantizer ranges and
  steps, alpha, dropout's seed-generator state) and of the optimizer (its moments, and its
  iteration count, from which the alpha schedule runs). Keras' `save_weights` leaves the seed
  generators out, so it is not used;
- epoch e's batches depend only on (seed, e) (`models.epochs`);
- each phase starts from `set_random_seed(seed)`, and the QAT phase from float.keras, which is
  saved when the float phase ends (state "qat", 0 epochs done, no variables).
Files are written atomically: the .npz first, then state.json naming it, and only then is the
previous .npz deleted, so an interruption at any moment leaves a consistent checkpoint.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from export.atomic import write_bytes, write_json
from toolkit.errors import ArtifactError, ConfigError

__all__ = ["CHECKPOINT_DIR", "EpochTimes", "RunCheckpoints", "config_differences", "merge_history"]

CHECKPOINT_DIR = "checkpoint"
PHASES = ("float", "qat")


def merge_history(earlier: dict, later: dict) -> dict:
    """The per-epoch columns of two consecutive stretches of one phase, one after the other."""
    return {key: [*earlier.get(key, []), *later.get(key, [])] for key in {**earlier, **later}}


def config_differences(saved, current, prefix: str = "") -> list[str]:
    """'name: saved -> current' for each entry (nested dicts flattened with dots) that differs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [line for key in sorted(set(saved) | set(current))
                for line in config_differences(saved.get(key), current.get(key), f"{prefix}{key}.")]
    return [] if saved == current else [f"{prefix.rstrip('.')}: {saved!r} -> {current!r}"]


def _variables(model: keras.Model) -> list:
    return [*model.variables, *model.optimizer.variables]


class RunCheckpoints:
    """The checkpoint of one run directory for one run config (a dict, `RunConfig.to_dict()`)."""

    def __init__(self, directory, config: dict):
        self.directory = Path(directory)
        self.config = json.loads(json.dumps(config))   # as it reads back from JSON
        self.state: dict | None = None

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def load(self) -> dict | None:
        """The saved state (None when there is none); ConfigError when the run that saved it had
        another config, ArtifactError when it is unreadable."""
        if not self.state_path.is_file():
            return None
        try:
            state = json.loads(self.state_path.read_text())
            saved_config, phase, done = state["config"], state["phase"], int(state["epochs_done"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"{self.state_path} is not a softedge checkpoint: {error}") from error
        if phase not in PHASES:
            raise ArtifactError(f"{self.state_path}: unknown phase {phase!r}.")
        if state.get("variables") and not (self.directory / state["variables"]).is_file():
            raise ArtifactError(f"{self.state_path} names {state['variables']}, which is not in {self.directory}.")
        if state.get("variables"):
            try:  # a truncated archive fails here, before any epoch, not in the middle of a restore
                with np.load(self.directory / state["variables"], allow_pickle=False) as saved:
                    saved.files  # noqa: B018  (reads the archive's directory)
            except Exception as error:
                raise ArtifactError(f"{self.directory / state['variables']} is not a readable checkpoint archive: "
                                    f"{type(error).__name__}: {error}") from None
        differences = config_differences(saved_config, self.config)
        if differences:
            raise ConfigError(f"--resume: the checkpoint in {self.directory} is of a run with other settings "
                              f"({'; '.join(differences)}, saved -> now). Resume with the settings it was "
                              f"started with, or train without --resume to start over.")
        self.state = {**state, "epochs_done": done}
        return self.state

    def clear(self) -> None:
        """Deletes the checkpoint (a fresh start, or a finished run)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.state = None

    def history(self, phase: str) -> dict:
        return dict(self.state["history"].get(phase, {})) if self.state else {}

    def phase_finished(self, phase: str) -> bool:
        """Whether the saved state is past `phase` (the float phase once QAT has begun)."""
        return self.state is not None and PHASES.index(self.state["phase"]) > PHASES.index(phase)

    def epochs_done(self, phase: str) -> int:
        """Epochs of `phase` saved (0 where the saved state is of another phase)."""
        return self.state["epochs_done"] if self.state is not None and self.state["phase"] == phase else 0

    def restorer(self, phase: str):
        """A function that loads the saved variables into a model with a built optimizer, or
        None when `phase` has none saved."""
        if self.state is None or self.state["phase"] != phase or not self.state.get("variables"):
            return None
        path = self.directory / self.state["variables"]

        def restore(model: keras.Model) -> None:
            variables = _variables(model)
            with np.load(path) as saved:
                if len(saved.files) != len(variables):
                    raise ArtifactError(f"{path} holds {len(saved.files)} variables; model {model.name!r} and its "
                                        f"optimizer have {len(variables)}. Was the model changed since?")
                for index, variable in enumerate(variables):
                    value = saved[f"v{index}"]
                    if tuple(value.shape) != tuple(variable.shape):
                        raise ArtifactError(f"{path}: variable {index} ({variable.path}) is {value.shape} in the "
                                            f"checkpoint, {tuple(variable.shape)} in the model.")
                    variable.assign(value)

        return restore

    def save(self, phase: str, epochs_done: int, history: dict, model: keras.Model | None = None) -> None:
        """Records `epochs_done` epochs of `phase` (with the model's and optimizer's variables,
        if `model` is given), the whole history so far, atomically."""
        previous = (self.state or {}).get("variables")
        name = None
        if model is not None:
            name = f"{phase}-{epochs_done:04d}.npz"
            buffer = io.BytesIO()
            np.savez(buffer, **{f"v{index}": np.asarray(variable.numpy()) for index, variable in enumerate(_variables(model))})
            write_bytes(self.directory / name, buffer.getvalue())
        self.state = {"config": self.config, "phase": phase, "epochs_done": epochs_done,
                      "history": json.loads(json.dumps(history, default=float)), "variables": name}
        write_json(self.state_path, self.state)
        if previous and previous != name:
            (self.directory / previous).unlink(missing_ok=True)

    def saver(self, phase: str, history: dict, earlier_phases: dict | None = None) -> keras.callbacks.Callback:
        """A callback that saves after every epoch of `phase`; `history`: that phase's columns
        before this fit, `earlier_phases`: the finished phases' histories."""
        checkpoints = self

        class SaveEachEpoch(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.columns = {key: list(values) for key, values in history.items()}

            def on_epoch_end(self, epoch, logs=None):
                for key, value in (logs or {}).items():
                    self.columns.setdefault(key, []).append(float(value))
                checkpoints.save(phase, epoch + 1, {**(earlier_phases or {}), phase: self.columns}, self.model)

        return SaveEachEpoch()


class EpochTimes(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch, in `seconds`; `median()` of the warm ones (the first
    epoch also traces and compiles the step, so it counts only when it is the only one)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def median(self) -> float | None:
        warm = self.seconds[1:] or self.seconds
        return float(np.median(warm)) if warm else None
