"""Click parameter types and checks for softedge's options, answered before TensorFlow loads.

click's FloatRange lets NaN through (every comparison with NaN is false), so a gate such as
`--min-agreement nan` would silently pass everything; `Finite` refuses NaN and inf, and checks
its bounds itself. `Numbers` parses `--alphas 0,1,5`, `Widths` `--bits 2,3,4,8`.
"""

from __future__ import annotations

import math

import click

__all__ = ["Finite", "Numbers", "Widths"]


class Finite(click.ParamType):
    """A finite float within [low, high] (open at `low` where `low_open`)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number.", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            self.fail(f"{number:g} is not {'>' if self.low_open else '>='} {self.low:g}.", param, ctx)
        if self.high is not None and number > self.high:
            self.fail(f"{number:g} is not <= {self.high:g}.", param, ctx)
        return number


def _comma_parts(value, what: str, param_type: click.ParamType, param, ctx) -> list[str]:
    parts = [part.strip() for part in str(value).split(",") if part.strip()]
    if not parts:
        param_type.fail(f"{value!r} names no {what}; expected a comma-separated list.", param, ctx)
    return parts


class Numbers(click.ParamType):
    """Comma-separated finite numbers, each checked by `Finite(low, high)`; a tuple, in order."""

    name = "numbers"

    def __init__(self, low: float | None = None, high: float | None = None):
        self.item = Finite(low, high)

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        return tuple(self.item.convert(part, param, ctx) for part in _comma_parts(value, "number", self, param, ctx))


class Widths(click.ParamType):
    """Comma-separated bit widths, each 2..8, at least one; a sorted tuple without repeats."""

    name = "widths"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = _comma_parts(value, "width", self, param, ctx)
        try:
            widths = sorted({int(part) for part in parts})
        except ValueError:
            self.fail(f"{value!r} is not comma-separated integers (such as 2,3,4,8).", param, ctx)
        outside = [width for width in widths if not 2 <= width <= 8]
        if outside:
            self.fail(f"width {outside[0]} is outside 2..8.", param, ctx)
        return tuple(widths)


class Choices(click.ParamType):
    """Comma-separated names, each one of `choices`, at least one; a tuple in the order given,
    without repeats."""

    name = "choices"

    def __init__(self, choices):
        self.choices = tuple(choices)

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        names = list(dict.fromkeys(_comma_parts(value, "name", self, param, ctx)))
        unknown = [name for name in names if name not in self.choices]
        if unknown:
            self.fail(f"{unknown[0]!r} is not one of {', '.join(self.choices)}.", param, ctx)
        return tuple(names)
