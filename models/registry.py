"""The model zoo's one registry: name -> builder(input_shape, num_classes) -> keras.Model."""

from __future__ import annotations

from collections.abc import Callable

from toolkit.errors import ConfigError

__all__ = ["build", "names", "register"]

_BUILDERS: dict[str, Callable] = {}


def register(name: str):
    def decorate(builder):
        _BUILDERS[name] = builder
        return builder

    return decorate


def names() -> tuple[str, ...]:
    _load_zoo()
    return tuple(_BUILDERS)


def build(name: str, input_shape=None, num_classes=None, **options):
    """Builds the zoo model `name` (default shapes if None); `options` go to its builder
    (`keras_module`, `batch_norm`)."""
    _load_zoo()
    if name not in _BUILDERS:
        raise ConfigError(f"Unknown model {name!r}. Expected one of: {', '.join(_BUILDERS)}.")
    kwargs = {}
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    return _BUILDERS[name](**kwargs, **options)


def _load_zoo():
    # Importing the architecture modules registers them (one file per architecture).
    from models import digits_cnn, mnist1d_cnn  # noqa: F401
