"""Dataset registry: bundled or generated data only, nothing is downloaded.

- "digits": the 8x8 handwritten digits that ship inside scikit-learn (1797 images, values
  0..16 scaled to [0, 1]), shape (8, 8, 1); a fixed stratified 80/20 split.
- "mnist1d": MNIST-1D generated procedurally by the `mnist1d` package (its default arguments:
  4000 train / 1000 test sequences of length 40), shape (40, 1).
- "synthetic" (with a zoo model) or "synthetic:MODEL": a learnable stand-in of MODEL's real data
  set, generated locally (`models.synthetic`; the README's zoo table says which real set).
- any path to an `.npz` with `x_train`, `y_train`, `x_test`, `y_test` (integer labels: classification;
  float targets: regression; for anomaly detection, `--task anomaly`: y 1 marks an anomalous
  sample, and training uses the rows of x_train whose y_train is 0).
- a directory of `.npz` shards (or a glob of them) for training data larger than memory: each
  shard holds `x_train`, `y_train` (uncompressed, `np.savez`), and `test.npz` beside them holds
  `x_test`, `y_test`. The shards are memory-mapped and streamed (`models.shards`); the labels
  and the test split are read into memory.
"""

from __future__ import annotations

import glob
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.tasks import Task
from toolkit.errors import ArtifactError, ConfigError

__all__ = ["NAMES", "TASKS", "Dataset", "calibration_samples", "infer_task", "load", "training_pairs"]

NAMES = ("digits", "mnist1d", "synthetic")
_SPLIT_SEED = 0  # the train/test split is part of the dataset, not of a run's seed


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str | None = None  # set where the data set says it (synthetic anomaly data); else from the labels
    shards: object | None = None  # models.shards.Shards where x_train is streamed from shards

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=_SPLIT_SEED, stratify=y)
    return Dataset("digits", x_train, y_train, x_test, y_test)


def _mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # generated from its seed (42); no download
    return Dataset(
        "mnist1d",
        data["x"].astype(np.float32)[..., None], data["y"].astype(np.int64),
        data["x_test"].astype(np.float32)[..., None], data["y_test"].astype(np.int64),
    )


def _npz(path: Path) -> Dataset:
    if not path.is_file():
        raise ArtifactError(f"Dataset file {path} does not exist.")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"Dataset {path} is not an .npz file (not a zip archive of arrays, as np.savez writes).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise ArtifactError(f"Dataset {path} lacks array(s) {sorted(missing)}; found {sorted(archive.files)}.")
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as error:
        raise ArtifactError(f"Dataset {path} is not a readable .npz file: {error}") from error
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) == 0:
            raise ConfigError(f"Dataset {path} has an empty {split} split (x_{split} has 0 rows).")
        if len(x) != len(y):
            raise ConfigError(f"Dataset {path}: x_{split} has {len(x)} rows but y_{split} has {len(y)}.")
        if not np.issubdtype(x.dtype, np.number):
            raise ConfigError(f"Dataset {path}: x_{split} has dtype {x.dtype}; expected numbers.")
        if np.issubdtype(y.dtype, np.integer) and y.ndim != 1:
            raise ConfigError(f"Dataset {path}: integer y_{split} must be 1-D class labels; got shape {y.shape}.")
        if not np.issubdtype(y.dtype, np.number):
            raise ConfigError(f"Dataset {path}: y_{split} has dtype {y.dtype}; expected integer labels or float targets.")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ConfigError(f"Dataset {path}: x_train rows {arrays['x_train'].shape[1:]} and x_test rows {arrays['x_test'].shape[1:]} differ.")
    return Dataset(path.stem, arrays["x_train"].astype(np.float32), _targets(arrays["y_train"]),
                   arrays["x_test"].astype(np.float32), _targets(arrays["y_test"]))


TASKS = tuple(Task.names())


def infer_task(y: np.ndarray, task: str | None = None) -> str:
    """`task` if given, else classification for 1-D integer labels and regression otherwise.
    (Anomaly detection is never inferred: its labels look like classes.)"""
    if task is not None:
        if task not in TASKS:
            raise ConfigError(f"Unknown task {task!r}. Expected one of: {', '.join(TASKS)}.")
        return task
    y = np.asarray(y)
    return "classification" if np.issubdtype(y.dtype, np.integer) and y.ndim == 1 else "regression"


def _targets(y: np.ndarray) -> np.ndarray:
    """Integer labels as int64 (classification), anything else as float32 (regression targets)."""
    return y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32)


def _synthetic(model: str | None) -> Dataset:
    from models import registry, synthetic

    if model is None or str(model).endswith(".keras"):
        raise ConfigError(f"--data synthetic generates the data of a zoo model; name one with --model or as "
                          f"synthetic:MODEL (one of {', '.join(registry.names())}).")
    zoo_model = registry.entry(model)
    if zoo_model.task == "anomaly":
        return Dataset(f"synthetic:{model}", *synthetic.machine_sounds(zoo_model.input_shape), task="anomaly")
    images = len(zoo_model.input_shape) == 3 and zoo_model.input_shape[-1] == 3
    return Dataset(f"synthetic:{model}", *synthetic.class_patterns(zoo_model.input_shape, zoo_model.num_classes, images),
                   task="classification")


TEST_SHARD = "test.npz"


def _sharded(location: str) -> Dataset:
    """Training shards at a directory or glob (every .npz but test.npz), the test split in the
    test.npz beside them."""
    from models.shards import Shards

    directory = Path(location) if os.path.isdir(location) else Path(os.path.dirname(location) or ".")
    test_path = directory / TEST_SHARD
    if not test_path.is_file():
        raise ArtifactError(f"Sharded dataset {location!r} needs its test split in {test_path} (x_test, y_test).")
    shards = Shards.open(location, exclude=(TEST_SHARD,))
    try:
        with np.load(test_path, allow_pickle=False) as archive:
            x_test, y_test = archive["x_test"], archive["y_test"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"{test_path} is not an .npz with x_test and y_test: {error}") from error
    if x_test.shape[1:] != shards.sample_shape:
        raise ConfigError(f"{test_path}: x_test rows {x_test.shape[1:]} and the shards' x_train rows "
                          f"{shards.sample_shape} differ.")
    labels = np.concatenate([np.asarray(part) for part in shards.y.parts])
    return Dataset(directory.name, shards.x, _targets(labels), x_test.astype(np.float32), _targets(y_test),
                   shards=shards)


def load(name: str, model: str | None = None) -> Dataset:
    """Loads a dataset by registry name or .npz path (see the module docstring); `model` is the
    zoo model that "synthetic" generates data for."""
    if name == "digits":
        return _digits()
    if name == "mnist1d":
        return _mnist1d()
    if name == "synthetic" or str(name).startswith("synthetic:"):
        return _synthetic(str(name).partition(":")[2] or model)
    if os.path.isdir(str(name)) or glob.has_magic(str(name)):
        return _sharded(str(name))
    if str(name).endswith(".npz"):
        return _npz(Path(name))
    raise ConfigError(f"Unknown dataset {name!r}. Expected one of {', '.join(NAMES)} or a path to an .npz file.")


def calibration_samples(data: Dataset, count: int, seed: int = 0) -> np.ndarray:
    """`count` training inputs (all of them if fewer), drawn without replacement with `seed`, in
    their stored order (so shards are read front to back), as float32."""
    rows = np.sort(np.random.default_rng(seed).choice(len(data.x_train), min(count, len(data.x_train)), replace=False))
    return np.asarray(data.x_train[rows], np.float32)


def training_pairs(data: Dataset, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, targets) to fit: the labels, or for anomaly detection the normal samples as their own targets."""
    if task == "anomaly":
        if data.shards is not None:
            raise ConfigError(f"Dataset {data.name!r} is sharded; anomaly training selects the normal rows and needs "
                              "them in memory: give it as one .npz.")
        labels = np.asarray(data.y_train)
        if labels.ndim != 1:
            raise ConfigError(f"Dataset {data.name!r}: anomaly labels y_train must be 1-D (0 = normal); got shape {labels.shape}.")
        normal = data.x_train[labels == 0]
        if len(normal) == 0:
            raise ConfigError(f"Dataset {data.name!r} has no normal training sample (y_train == 0) to train an autoencoder on.")
        return normal, normal
    return data.x_train, data.y_train
