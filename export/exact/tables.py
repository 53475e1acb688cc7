"""Elementwise int8 ops as tables the numpy reference fills: LOGISTIC, TANH, HARD_SWISH and an
int8 -> int8 QUANTIZE are functions of one int8 value (256 entries); ADD and MUL of two (65,536
entries, one per pair). The reference's own kernel computes every entry, on every possible
input, so the table is its arithmetic by construction, whatever the family's rule; TensorFlow
only gathers: out = T[a + 128] or T[256 (a + 128) + (b + 128)], broadcasting as the op does.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from export.device.reference.context import Context
from export.device.reference.ops import OPS

__all__ = ["BINARY_OPS", "TABLE_OPS", "UNARY_OPS", "table_op", "tabulates"]

UNARY_OPS = ("LOGISTIC", "TANH", "HARD_SWISH", "QUANTIZE")   # of one int8 input (QUANTIZE: int8 -> int8)
BINARY_OPS = ("ADD", "MUL")
TABLE_OPS = UNARY_OPS + BINARY_OPS

_ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


def _table(context: Context, inputs: dict) -> np.ndarray:
    """The reference kernel's outputs for `inputs` (tensor index -> every value to tabulate)."""
    kernel = OPS[context.op.name]
    return np.asarray(kernel(Context(context.graph, context.op, inputs, context.rules))[0]).reshape(-1)


def tabulates(context: Context) -> bool:
    """Whether the op is one of TABLE_OPS on int8 inputs (a float32 QUANTIZE is not a table)."""
    inputs = context.op.inputs[:1] if context.op.name in UNARY_OPS else context.op.inputs[:2]
    return context.op.name in TABLE_OPS and all(context.graph.tensors[i].type == "int8" for i in inputs)


def table_op(context: Context, inputs) -> list:
    """The op's outputs by table lookup (see the module docstring)."""
    indices = context.op.inputs
    if context.op.name in UNARY_OPS or indices[0] == indices[1]:
        table = _table(context, {indices[0]: _ALL_INT8})
        return [tf.gather(tf.constant(table), tf.cast(inputs[0], tf.int32) + 128)]
    a, b = (tensor if tensor is not None else tf.constant(np.asarray(context.value(i)))
            for i, tensor in enumerate(inputs[:2]))
    table = _table(context, {indices[0]: np.repeat(_ALL_INT8, 256), indices[1]: np.tile(_ALL_INT8, 256)})
    position = (tf.cast(a, tf.int32) + 128) * 256 + (tf.cast(b, tf.int32) + 128)
    return [tf.gather(tf.constant(table), position)]
