"""An integer reference interpreter for int8 .tflite files: what the device computes, bit for bit.

    graph = Graph(tflite_bytes)
    values = graph.run(device_inputs, kernels="xnnpack")   # every tensor the graph computes
    outputs = [values[i] for i in graph.outputs]

numpy only (no TensorFlow); the graph is read with LiteRT's generated flatbuffer schema
(`ai_edge_litert.schema_py_generated`). The batch is the leading dimension of every input and
runs at once (heavy ops in chunks of rows, to stay near the CPU caches). Accumulators are exact:
int8 x int8 dot products are summed by BLAS in float32 where every partial sum is an integer
below 2^24 (K x max|x - z| x max|w| < 2^24, known per layer), else in float64 (exact below 2^53;
a 255 x 127 product is < 2^15, so any K < 2^38).

Six kernel families (`families.KernelFamily`), which differ only in how they round (probed
against LiteRT 2.3 on x86-64 and, emulated, on ARM64, and against TFLite Micro; the tests compare
every tensor with the runtime). What each does is one record, `rules.RULES[family]`, that the
ops read:

    reference      LiteRT's BUILTIN_REF kernels, which TFLite Micro shares but for FULLY_CONNECTED
    builtin        LiteRT's built-in (optimized) kernels without a delegate, on x86-64
    xnnpack        LiteRT's default CPU path on x86-64: the XNNPACK delegate for the ops it
                   takes, builtin kernels for the rest
    builtin-arm64  LiteRT's built-in kernels on ARM64 (ruy's NEON rounding, a uint16-table SOFTMAX)
    xnnpack-arm64  LiteRT's default CPU path on ARM64 (its int4 convolutions run as builtin-arm64)
    micro          TFLite Micro's reference kernels

The package, one module per op group: `graph` (reading and running), `context` (what an op
sees), `rules`, `requantize`, `conv` (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), `elementwise`
(ADD, MUL, LOGISTIC, TANH), `hard_swish`, `pooling` (pools, MEAN), `softmax`, `quantize` (QUANTIZE,
DEQUANTIZE), `movement` (reshapes, slices, concatenation), `ops` (the op table), with
`fixed_point` and `gemmlowp` (TFLite's integer arithmetic). It imports numpy and, outside
softedge, `families.py` beside it: a device bundle can carry it with check.py.

An op or tensor type it cannot execute raises `UnsupportedOpError` naming the op, its index
and its output tensor (LEAKY_RELU, GELU: not reproduced yet). Float ops outside
QUANTIZE/DEQUANTIZE are refused: this is an integer reference.
"""

from __future__ import annotations

import platform

from .context import TensorInfo, UnsupportedOpError
from .graph import Graph
from .rules import RULES, FamilyRules, rules_of
from .softmax import softmax_input_multiplier

try:  # inside softedge, or copied beside families.py as a package of its own
    from ..families import KernelFamily
except ImportError:  # pragma: no cover - exercised by tests/export/test_reference_package.py
    from families import KernelFamily

__all__ = ["FAMILIES", "KERNEL_FAMILIES", "RULES", "FamilyRules", "Graph", "KernelFamily",
           "TensorInfo", "UnsupportedOpError", "probed_families", "rules_of", "softmax_input_multiplier"]

FAMILIES = tuple(KernelFamily)             # every family the reference computes as
KERNEL_FAMILIES = KernelFamily.litert()    # LiteRT's: what a phone or a PC runs


def probed_families(machine: str | None = None) -> tuple[KernelFamily, ...]:
    """The LiteRT kernel families that `machine` (default: this one) computes, one per kernel
    selection, where its ISA was probed (x86-64; Linux aarch64, under QEMU user-mode emulation);
    elsewhere only the portable `reference` (TFLite's reference kernels are portable C)."""
    return KernelFamily.on(platform.machine() if machine is None else machine)
