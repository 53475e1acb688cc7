"""`QuantScheme`: what `quantize` does to a model, as JSON-serializable data.

A scheme holds model-wide defaults and per-layer overrides. An override key is a regular
expression matched in full against layer names (a plain name matches itself); its value sets
any of `weight_bits`, `activation_bits`, `rounding`, `per_channel`, `learned_step`, or
`"float": true` to leave the layer unquantized. Later keys win.

    QuantScheme(weight_bits=4, overrides={"conv_in|logits": {"weight_bits": 8}})
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field

from toolkit import rounding
from toolkit.errors import ConfigError
from toolkit.quantizers import check_bits
from toolkit.roundings import Rounding

__all__ = ["LayerScheme", "QuantScheme"]

_WEIGHT_ROUNDINGS = tuple(Rounding.training_names())


@dataclass(frozen=True)
class LayerScheme:
    """The scheme resolved for one layer."""

    weight_bits: int
    activation_bits: int
    rounding: str
    per_channel: bool
    learned_step: bool
    float: bool = False


@dataclass
class QuantScheme:
    """Model-wide quantization settings.

    Attributes:
        weight_bits: kernel bit width, 2..8 (symmetric, narrow range).
        activation_bits: activation bit width, 2..8 (8 for an int8 TFLite model).
        rounding: kernel rounding method: "ste", "soft" or "sigmoid".
        activation_rounding: activation rounding method (default "ste").
        per_channel: one scale per output channel for conv kernels (Dense kernels are always
            per-tensor: TFLite cannot convert a per-channel FULLY_CONNECTED from fake quants).
        symmetric_activations: zero point 0 for activations.
        learned_step: learn the kernel step sizes (LSQ) instead of max-abs scaling.
        alpha: initial rounding sharpness (the schedule anneals it).
        ema_decay: decay of the activation range moving averages.
        unsupported: "error" (raise for a layer softedge cannot quantize) or "float" (leave it).
        overrides: layer-name regex -> {field: value}; see the module docstring.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    rounding: str = "soft"
    activation_rounding: str = "ste"
    per_channel: bool = True
    symmetric_activations: bool = False
    learned_step: bool = False
    alpha: float = 1.0
    ema_decay: float = 0.99
    unsupported: str = "error"
    overrides: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        for name, expected in _FIELD_TYPES.items():
            _check_type(getattr(self, name), expected, name)
        if not (math.isfinite(self.alpha) and 0 < self.ema_decay < 1):
            raise ConfigError(f"Expected a finite `alpha` and 0 < `ema_decay` < 1. Received: alpha={self.alpha}, "
                              f"ema_decay={self.ema_decay}")
        check_bits(self.weight_bits, "weight_bits")
        check_bits(self.activation_bits, "activation_bits")
        self._check_rounding(self.rounding, "rounding")
        rounding.get(self.activation_rounding)
        if self.unsupported not in ("error", "float"):
            raise ConfigError(f"Expected `unsupported` 'error' or 'float'. Received: unsupported={self.unsupported!r}")
        if not self.alpha >= 0:
            raise ConfigError(f"Expected `alpha` >= 0. Received: alpha={self.alpha}")
        for pattern, values in self.overrides.items():
            if not isinstance(values, dict):
                raise ConfigError(f"Expected `overrides[{pattern!r}]` to be an object of fields. Received: {values!r}")
            for name, value in values.items():
                if name in _OVERRIDE_TYPES:
                    _check_type(value, _OVERRIDE_TYPES[name], f"overrides[{pattern!r}].{name}")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"Invalid override pattern {pattern!r}: {error}") from None
            unknown = set(values) - _OVERRIDABLE
            if unknown:
                raise ConfigError(
                    f"Unknown override field(s) {sorted(unknown)} for {pattern!r}. Expected some of {sorted(_OVERRIDABLE)}."
                )
            if "weight_bits" in values:
                check_bits(values["weight_bits"], f"overrides[{pattern!r}].weight_bits")
            if "activation_bits" in values:
                check_bits(values["activation_bits"], f"overrides[{pattern!r}].activation_bits")
            if "rounding" in values:
                self._check_rounding(values["rounding"], f"overrides[{pattern!r}].rounding")

    @staticmethod
    def _check_rounding(name, where):
        if name not in _WEIGHT_ROUNDINGS:
            raise ConfigError(f"Unknown rounding method {name!r} for `{where}`. Expected one of: {', '.join(_WEIGHT_ROUNDINGS)}.")

    def for_layer(self, name: str, part_of: str | None = None) -> LayerScheme:
        """The settings for the layer called `name`, overrides applied. `part_of`: the layer it
        was split from (a SeparableConv2D's two halves): overrides matching that name apply too,
        and those matching `name` itself after them."""
        values = {f: getattr(self, f) for f in ("weight_bits", "activation_bits", "rounding", "per_channel", "learned_step")}
        for target in ([part_of] if part_of else []) + [name]:
            for pattern, override in self.overrides.items():
                if re.fullmatch(pattern, target):
                    values.update(override)
        return LayerScheme(**values)

    def unmatched_overrides(self, layer_names) -> list[str]:
        """The override keys that match none of `layer_names` (a typo, or another model's scheme)."""
        return [pattern for pattern in self.overrides if not any(re.fullmatch(pattern, name) for name in layer_names)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QuantScheme:
        if not isinstance(data, dict):
            raise ConfigError(f"Expected a QuantScheme object (JSON {{...}}). Received: {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"Unknown QuantScheme field(s): {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> QuantScheme:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"not JSON: {error}") from None
        return cls.from_dict(data)


def _json_types(cls) -> dict[str, type]:
    """Each field's type, read off the dataclass's own annotations (`dict[str, dict]` -> dict)."""
    return {name: typing.get_origin(hint) or hint for name, hint in typing.get_type_hints(cls).items()}


# The schema: every field's JSON type. JSON has no int/bool confusion to allow: `"per_channel":
# "yes"` or `"false"` is an error, not a truthy string. An override sets LayerScheme's fields.
_FIELD_TYPES = _json_types(QuantScheme)
_OVERRIDE_TYPES = _json_types(LayerScheme)
_OVERRIDABLE = set(_OVERRIDE_TYPES)
_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object"}


def _check_type(value, expected: type, where: str) -> None:
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ConfigError(f"Expected `{where}` to be {_JSON_NAMES[expected]}. Received: {value!r}")
