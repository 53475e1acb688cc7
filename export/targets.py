"""`Target`: what a model is converted to. The one list of export targets; the CLI's `--target`
choices, the budget checks and the docs table derive from it. Imports nothing (the CLI reads it
before TensorFlow is loaded)."""

from __future__ import annotations

from enum import Enum

__all__ = ["Target"]


class Target(str, Enum):
    """An export target. The value is the name users type (`--target int4-weights`)."""

    INT8 = "int8"                  # int8 weights and activations (LiteRT, XNNPACK)
    INT4_WEIGHTS = "int4-weights"  # int8 activations, <= 4-bit kernels packed two per byte
    MICRO = "micro"                # int8 for TFLite Micro: an op it lacks is an error
    DYNAMIC = "dynamic"            # int8 weights, float activations (dynamic-range quantization)
    FLOAT16 = "float16"            # float16 weights
    FLOAT32 = "float32"            # no quantization

    def __str__(self) -> str:
        return self.value

    @property
    def integer(self) -> bool:
        """Integer activations: the int8 graph that validation runs on the integer reference and
        a microcontroller can run (so memory budgets apply)."""
        return self in (Target.INT8, Target.INT4_WEIGHTS, Target.MICRO)

    @property
    def converter_target(self) -> Target:
        """What the TFLite converter is asked for (TFLite Micro runs the int8 conversion)."""
        return Target.INT8 if self is Target.MICRO else self

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def names(cls, *, converter_only: bool = False) -> list[str]:
        """The values, in declaration order (the CLI's choices); `converter_only` leaves out the
        targets that are an export stage, not a converter setting (micro)."""
        return [t.value for t in cls if not (converter_only and t.converter_target is not t)]


_DESCRIPTIONS = {
    Target.INT8: "int8 weights and activations; validated bit for bit on the integer reference",
    Target.INT4_WEIGHTS: "int8 activations, kernels of <= 4 bits stored as int4 (half the weight bytes)",
    Target.MICRO: "int8 for TFLite Micro; an op the microcontroller interpreter lacks is an error",
    Target.DYNAMIC: "int8 weights, float activations (no integer validation)",
    Target.FLOAT16: "float16 weights (no integer validation)",
    Target.FLOAT32: "float32, no quantization",
}
