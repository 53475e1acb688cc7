"""The kernel families whose arithmetic quantization-aware training can follow
(`toolkit.device_arithmetic`). Imports no TensorFlow (the CLI reads it before TensorFlow is loaded)."""

from __future__ import annotations

from toolkit.errors import ConfigError

__all__ = ["DEVICE_ARITHMETIC_NAMES", "DEVICE_FAMILIES", "FLOAT_SIMULATION", "check_family", "device_arithmetic_named"]

# XNNPACK (LiteRT's default CPU delegate, the family export validates on): int8 convolutions and
# fully connected layers requantized by float32(acc) * float32 multiplier, ties to even; ADD with
# 20-bit integer multipliers and one shift.
DEVICE_FAMILIES = ("xnnpack",)
FLOAT_SIMULATION = "none"   # the command-line name of no device arithmetic: the float simulation throughout
DEVICE_ARITHMETIC_NAMES = (*DEVICE_FAMILIES, FLOAT_SIMULATION)


def check_family(family) -> str | None:
    """`family` if it is one of DEVICE_FAMILIES (or None: the float simulation); ConfigError otherwise."""
    if family is not None and family not in DEVICE_FAMILIES:
        raise ConfigError(f"Unknown device arithmetic {family!r}; expected one of {', '.join(DEVICE_FAMILIES)} (or None).")
    return family


def device_arithmetic_named(name: str, epochs: int | None) -> dict:
    """The recipe's fields for `--device-arithmetic NAME --device-epochs EPOCHS` (a name of
    DEVICE_ARITHMETIC_NAMES): {"device_arithmetic": NAME, "device_epochs": EPOCHS}, or both None
    for FLOAT_SIMULATION (its epochs count is then unused)."""
    if name == FLOAT_SIMULATION:
        return {"device_arithmetic": None, "device_epochs": None}
    return {"device_arithmetic": check_family(name), "device_epochs": epochs}
