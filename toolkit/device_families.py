"""The kernel families whose arithmetic quantization-aware training can follow
(`toolkit.device_arithmetic`). Imports no TensorFlow (the CLI reads it before TensorFlow is loaded)."""

from __future__ import annotations

from toolkit.errors import ConfigError

__all__ = ["DEVICE_FAMILIES", "check_family"]

# XNNPACK (LiteRT's default CPU delegate, the family export validates on): int8 convolutions and
# fully connected layers requantized by float32(acc) * float32 multiplier, ties to even; ADD with
# 20-bit integer multipliers and one shift.
DEVICE_FAMILIES = ("xnnpack",)


def check_family(family) -> str | None:
    """`family` if it is one of DEVICE_FAMILIES (or None: the float simulation); ConfigError otherwise."""
    if family is not None and family not in DEVICE_FAMILIES:
        raise ConfigError(f"Unknown device arithmetic {family!r}; expected one of {', '.join(DEVICE_FAMILIES)} (or None).")
    return family
