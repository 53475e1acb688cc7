"""`KernelFamily`: the ways a runtime computes an int8 graph's integers. The one list of kernel
families: the CLI's `--kernels` choices, the integer reference's rules (`reference.rules`), the
bundle's `expected_<family>` outputs and check.py's verdict derive from it.

A family is what one kernel selection computes on one instruction set. LiteRT is told which
kernels to run ("reference", "builtin", "xnnpack": `KernelFamily.kernel_names()`); its portable
C kernels (BUILTIN_REF) compute the same integers everywhere, but its optimized ones are compiled
per ISA and round differently on ARM64 (ruy's NEON output stage, a uint16-table SOFTMAX), so
"builtin" on an aarch64 device computes the `builtin-arm64` family:

    family          kernels     where            (`KernelFamily.on(machine)` lists a machine's)
    reference       reference   any machine
    builtin         builtin     x86-64
    xnnpack         xnnpack     x86-64
    builtin-arm64   builtin     aarch64
    xnnpack-arm64   xnnpack     aarch64
    micro           (TFLite Micro, any machine)

Imports nothing: it is copied beside check.py into every device bundle.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["KernelFamily"]

X86_64 = ("x86_64", "amd64")
# Linux's name for it: the aarch64 wheel was probed (under QEMU). macOS and Windows on ARM
# ("arm64", "ARM64") run other builds, not probed: only the portable family is claimed there.
AARCH64 = ("aarch64",)


class KernelFamily(str, Enum):
    REFERENCE = "reference"          # LiteRT's BUILTIN_REF kernels (portable C), which TFLite Micro shares but for one op
    BUILTIN = "builtin"              # LiteRT's built-in optimized kernels, no delegate, on x86-64
    XNNPACK = "xnnpack"              # LiteRT's default CPU path on x86-64: XNNPACK for the ops it takes, builtin for the rest
    BUILTIN_ARM64 = "builtin-arm64"  # LiteRT's built-in optimized kernels on ARM64 (NEON, ruy)
    XNNPACK_ARM64 = "xnnpack-arm64"  # LiteRT's default CPU path on ARM64
    MICRO = "micro"                  # TFLite Micro's reference kernels (a microcontroller without CMSIS-NN)

    def __str__(self) -> str:
        return self.value

    @property
    def runtime(self) -> str:
        """The interpreter that runs this family: "litert" or "tflite-micro"."""
        return "tflite-micro" if self is KernelFamily.MICRO else "litert"

    @property
    def kernels(self) -> str | None:
        """The LiteRT kernel selection that computes this family ("reference", "builtin" or
        "xnnpack"; None for TFLite Micro)."""
        return None if self is KernelFamily.MICRO else self.value.split("-")[0]

    @property
    def machines(self) -> tuple[str, ...]:
        """The `platform.machine()` names where LiteRT computes this family (empty: any)."""
        return _MACHINES.get(self, ())

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def litert(cls) -> tuple[KernelFamily, ...]:
        """The families LiteRT computes on some machine."""
        return tuple(family for family in cls if family.runtime == "litert")

    @classmethod
    def kernel_names(cls) -> list[str]:
        """The kernel selections LiteRT can be told to run (`load_interpreter(kernels=...)`)."""
        return list(dict.fromkeys(family.kernels for family in cls.litert()))

    @classmethod
    def on(cls, machine: str) -> tuple[KernelFamily, ...]:
        """The LiteRT families a `machine` computes: one per kernel selection where its ISA has
        been probed (x86-64, aarch64), else only the portable one."""
        machine = machine.lower()
        return tuple(family for family in cls.litert() if not family.machines or machine in family.machines)

    @classmethod
    def computed_by(cls, kernels: str, machine: str) -> KernelFamily | None:
        """The family LiteRT's `kernels` compute on `machine` (None: not probed there)."""
        return next((family for family in cls.on(machine) if family.kernels == str(kernels)), None)


_MACHINES = {KernelFamily.BUILTIN: X86_64, KernelFamily.XNNPACK: X86_64,
             KernelFamily.BUILTIN_ARM64: AARCH64, KernelFamily.XNNPACK_ARM64: AARCH64}

_DESCRIPTIONS = {
    KernelFamily.REFERENCE: "LiteRT's BUILTIN_REF kernels: portable C, fixed-point requantization with double rounding",
    KernelFamily.BUILTIN: "LiteRT's optimized kernels without a delegate, on x86-64: ruy's rounding (ties up)",
    KernelFamily.XNNPACK: "LiteRT's default on x86-64: XNNPACK (float32 requantization, ties to even), builtin kernels for the rest",
    KernelFamily.BUILTIN_ARM64: "LiteRT's optimized kernels without a delegate, on ARM64: ruy's NEON rounding (truncated "
                                "high half), a 3x3 depthwise kernel of its own, a uint16-table SOFTMAX",
    KernelFamily.XNNPACK_ARM64: "LiteRT's default on ARM64: XNNPACK as on x86-64, builtin-arm64 kernels for the rest "
                                "(int4 convolutions among them)",
    KernelFamily.MICRO: "TFLite Micro's reference kernels: BUILTIN_REF's, but FULLY_CONNECTED in fixed point",
}
