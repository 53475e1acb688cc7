"""The model zoo's one registry: name -> what the model is and how to build it.

Each architecture file registers a builder `builder(input_shape, num_classes, **options) ->
keras.Model` with its default input shape, class count and task, and one line on the real data
set it is made for and the reference it follows; `make docs` (`app/docs.py`) generates
docs/zoo.md from it. `--data synthetic` generates a learnable stand-in of that shape
(`models.synthetic`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.tasks import Task
from toolkit.errors import ConfigError

__all__ = ["ZooModel", "build", "entry", "names", "register"]


@dataclass(frozen=True)
class ZooModel:
    """`task`: classification (integer labels, `num_classes` outputs) or anomaly (an
    autoencoder: outputs reconstruct the inputs; the anomaly score is the reconstruction error).
    `real_data`: the data set the reference trains on and the .npz layout softedge expects."""

    name: str
    builder: Callable
    input_shape: tuple[int, ...]
    num_classes: int | None
    task: str
    real_data: str
    reference: str = ""


_ZOO: dict[str, ZooModel] = {}


def register(name: str, input_shape: tuple[int, ...], num_classes: int | None = None, task: str = "classification",
             real_data: str = "", reference: str = ""):
    def decorate(builder):
        _ZOO[name] = ZooModel(name, builder, tuple(input_shape), num_classes, Task(task).value, real_data, reference)
        return builder

    return decorate


def names() -> tuple[str, ...]:
    _load_zoo()
    return tuple(_ZOO)


def entry(name: str) -> ZooModel:
    _load_zoo()
    if name not in _ZOO:
        raise ConfigError(f"Unknown model {name!r}. Expected one of: {', '.join(_ZOO)}.")
    return _ZOO[name]


def build(name: str, input_shape=None, num_classes=None, **options):
    """Builds the zoo model `name` (its default shapes where None); `options` go to its builder
    (`keras_module`, `batch_norm` for the models that take them). An autoencoder takes no
    `num_classes`: its output has its input's shape."""
    zoo_model = entry(name)
    kwargs = {}
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if num_classes is not None and zoo_model.task == "classification":
        kwargs["num_classes"] = int(num_classes)
    return zoo_model.builder(**kwargs, **options)


def _load_zoo():
    """Imports every architecture module of `models/` (a file that calls `@register`), which
    registers it: adding a zoo model is adding its file."""
    import importlib
    import pkgutil
    from pathlib import Path

    package = Path(__file__).parent
    for module in pkgutil.iter_modules([str(package)]):
        if "@register(" in (package / f"{module.name}.py").read_text():
            importlib.import_module(f"models.{module.name}")
