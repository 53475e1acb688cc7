"""`KernelFamily`: the ways a runtime computes an int8 graph's integers. The one list of kernel
families: the CLI's `--kernels` choices, the integer reference's rules (`reference.rules`), the
bundle's `expected_<family>` outputs and check.py's verdict derive from it.

Imports nothing: it is copied beside check.py into every device bundle.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["KernelFamily"]


class KernelFamily(str, Enum):
    REFERENCE = "reference"  # LiteRT's BUILTIN_REF kernels (portable C), which TFLite Micro shares but for one op
    BUILTIN = "builtin"      # LiteRT's built-in optimized kernels, no delegate
    XNNPACK = "xnnpack"      # LiteRT's default CPU path: XNNPACK for the ops it takes, builtin for the rest
    MICRO = "micro"          # TFLite Micro's reference kernels (a microcontroller without CMSIS-NN)

    def __str__(self) -> str:
        return self.value

    @property
    def runtime(self) -> str:
        """The interpreter that runs this family: "litert" or "tflite-micro"."""
        return "tflite-micro" if self is KernelFamily.MICRO else "litert"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def litert(cls) -> tuple[KernelFamily, ...]:
        """The families LiteRT can be told to run (`load_interpreter(kernels=...)`)."""
        return tuple(family for family in cls if family.runtime == "litert")

    @classmethod
    def litert_names(cls) -> list[str]:
        return [family.value for family in cls.litert()]


_DESCRIPTIONS = {
    KernelFamily.REFERENCE: "LiteRT's BUILTIN_REF kernels: portable C, fixed-point requantization with double rounding",
    KernelFamily.BUILTIN: "LiteRT's optimized kernels without a delegate: ruy's rounding (ties up)",
    KernelFamily.XNNPACK: "LiteRT's default: XNNPACK (float32 requantization, ties to even), builtin kernels for the rest",
    KernelFamily.MICRO: "TFLite Micro's reference kernels: BUILTIN_REF's, but FULLY_CONNECTED in fixed point",
}
