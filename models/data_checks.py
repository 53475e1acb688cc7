"""The boundary: a data set checked against a model and a task before any work starts.

`check_dataset` raises ConfigError (exit 2) naming the split, the array and the offending value
when:

- an input or a regression target is not finite (NaN or inf: training "succeeds" with a NaN
  loss and the exporter then hands the runtime NaN scales);
- a split is empty, or x and y differ in rows;
- the inputs' per-sample shape is not the model's (`input_shape`; None dimensions match
  anything), or their rank differs from a zoo model's (a zoo model is rebuilt for another
  shape of the same rank, and `zoo_adaptation` says so);
- classification labels are not 1-D integers in [0, classes): negative, at or above the
  user model's outputs, or a class id below the largest label that never occurs in y_train
  (label 57 among digits would silently build a 58-class model);
- anomaly labels are not 0 (normal) and 1 (anomalous);
- too few training samples for the QAT schedule (`min_train_steps`).

Shards are checked part by part (memory-mapped, so no copy of the data set is made).
"""

from __future__ import annotations

import numpy as np

from models.datasets import Dataset
from models.epochs import epoch_steps
from toolkit.errors import ConfigError

__all__ = ["MIN_QAT_STEPS", "check_dataset", "check_dataset_for_model", "check_finite", "model_classes",
           "zoo_adaptation"]

# The fewest optimizer steps QAT may run. The alpha schedule ramps over the steps before its
# hold: with one step the model trains at alpha_start only (never annealed), with two or three it
# jumps from soft to near-hard; four visit alpha_start .. alpha_end^(3/4) (exponential ramp).
MIN_QAT_STEPS = 4


def check_finite(values, where: str, first_row: int = 0) -> None:
    """ConfigError naming the first non-finite element of `values` (any array-like); its index
    counts rows from `first_row` (`values` being a slice of a larger array)."""
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{where} has dtype {array.dtype}; expected numbers.")
    if np.issubdtype(array.dtype, np.integer):
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        index = [bad[0] + first_row, *bad[1:]] if bad else []
        raise ConfigError(f"{where} holds non-finite values (NaN or inf); the first is {array[bad]} at index {index}.")


def _check_inputs_finite(x, where: str) -> None:
    parts = getattr(x, "parts", None)  # models.shards: one memory-mapped array per shard
    if parts is None:
        for start in range(0, len(x), 4096):  # in chunks: a large array is not copied whole
            check_finite(x[start:start + 4096], where, start)
        return
    for number, part in enumerate(parts):
        for start in range(0, len(part), 4096):
            check_finite(part[start:start + 4096], f"{where} (shard {number})", start)


def model_classes(model, task: str) -> int | None:
    """The classes a classifier's output can name (its last dimension), else None."""
    width = model.outputs[0].shape[-1]
    return int(width) if task == "classification" and width else None


def check_dataset_for_model(data: Dataset, task: str, model, splits=("train", "test"),
                            min_train_steps: tuple[int, int] | None = None) -> None:
    """`check_dataset` against a Keras model's own input shape, output shape and classes."""
    check_dataset(data, task, input_shape=model.inputs[0].shape[1:], classes=model_classes(model, task),
                  splits=splits, min_train_steps=min_train_steps, output_shape=model.outputs[0].shape[1:])


def zoo_adaptation(zoo_model, data: Dataset) -> str | None:
    """What a zoo model is rebuilt for on this data set (None: its defaults), or ConfigError
    when the data's rank cannot be its input."""
    default_shape = tuple(zoo_model.input_shape)
    shape = tuple(data.input_shape)
    if len(shape) != len(default_shape):
        raise ConfigError(f"Dataset {data.name!r}: inputs of shape {shape} per sample cannot feed zoo model "
                          f"{zoo_model.name!r}, which takes rank-{len(default_shape)} inputs like {default_shape}.")
    changes = []
    if shape != default_shape:
        changes.append(f"input {shape} (its default {default_shape})")
    if zoo_model.task == "classification" and zoo_model.num_classes not in (None, data.num_classes):
        changes.append(f"{data.num_classes} classes (its default {zoo_model.num_classes})")
    if not changes:
        return None
    return f"zoo model {zoo_model.name!r} is built for dataset {data.name!r}: " + ", ".join(changes) + "."


def check_dataset(data: Dataset, task: str, input_shape=None, classes: int | None = None,
                  splits=("train", "test"), min_train_steps: tuple[int, int] | None = None,
                  output_shape=None) -> None:
    """Raises ConfigError for the first problem of `data` (see the module docstring).

    `input_shape` / `output_shape`: the model's per-sample input and output shapes (None: not
    checked; the output shape is checked against regression targets). `classes`: the model's
    outputs for classification (None: the data's own max label + 1). `splits`: the splits the
    command reads. `min_train_steps`: (batch_size, qat_epochs) when QAT will run."""
    name = data.name
    if task == "regression" and output_shape is not None:
        target_shape = tuple(np.asarray(data.y_train if "train" in splits else data.y_test).shape[1:]) or (1,)
        if tuple(output_shape) != target_shape:
            raise ConfigError(f"Dataset {name!r}: regression targets of shape {target_shape} per sample, but the model "
                              f"outputs {tuple(output_shape)}" + (" (for classification, give integer labels)."
                                                                  if target_shape == (1,) else "."))
    for split in splits:
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if np.ndim(x) < 2 or np.ndim(y) < 1:
            raise ConfigError(f"Dataset {name!r}: x_{split} must hold samples along its first axis (shape "
                              f"{np.shape(x)}) and y_{split} one target per sample (shape {np.shape(y)}).")
        if len(x) == 0:
            raise ConfigError(f"Dataset {name!r} has an empty {split} split (x_{split} has 0 rows).")
        if len(x) != len(y):
            raise ConfigError(f"Dataset {name!r}: x_{split} has {len(x)} rows but y_{split} has {len(y)}.")
        if input_shape is not None:
            expected = tuple(input_shape)
            got = tuple(x.shape[1:])
            if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got, strict=True)):
                raise ConfigError(f"Dataset {name!r}: x_{split} has shape {got} per sample; the model expects "
                                  f"{expected}.")
        _check_inputs_finite(x, f"Dataset {name!r}: x_{split}")
        _check_targets(np.asarray(y), task, f"Dataset {name!r}: y_{split}", classes, split == "train")
    if min_train_steps is not None and "train" in splits:
        batch_size, qat_epochs = min_train_steps
        # An autoencoder trains on the normal rows only (`datasets.training_pairs`).
        rows = int(np.sum(np.asarray(data.y_train) == 0)) if task == "anomaly" else len(data.x_train)
        steps = epoch_steps(rows, batch_size) * qat_epochs
        if steps < MIN_QAT_STEPS:
            raise ConfigError(f"Dataset {name!r}: QAT would run {steps} step(s) ({rows} training samples, batch "
                              f"{batch_size}, {qat_epochs} epoch(s)); annealing the rounding needs at least "
                              f"{MIN_QAT_STEPS}: give more --qat-epochs or more data.")


def _check_targets(y: np.ndarray, task: str, where: str, classes: int | None, train: bool) -> None:
    if task == "regression":
        check_finite(y, where)
        return
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ConfigError(f"{where} must be 1-D integer labels for {task}; got dtype {y.dtype}, shape {y.shape}.")
    low, high = int(y.min()), int(y.max())
    if task == "anomaly":
        if low < 0 or high > 1:
            raise ConfigError(f"{where} must be 0 (normal) or 1 (anomalous); found {low if low < 0 else high}.")
        return
    if low < 0:
        raise ConfigError(f"{where} holds the negative label {low}; labels must be 0..classes-1.")
    if classes is not None and high >= classes:
        raise ConfigError(f"{where} holds the label {high}, but the model has {classes} outputs (labels 0..{classes - 1}).")
    if train:
        missing = np.setdiff1d(np.arange(high + 1), y)
        if len(missing):
            shown = ", ".join(str(int(c)) for c in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ConfigError(f"{where}: labels go up to {high}, but class(es) {shown} ({len(missing)} of {high + 1}) "
                              f"never occur; labels must be 0..classes-1 with every class present.")
