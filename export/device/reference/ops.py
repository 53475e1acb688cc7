"""OPS: the integer reference's op table, TFLite builtin op name -> kernel(context) -> outputs."""

from __future__ import annotations

from . import conv, elementwise, hard_swish, movement, pooling, quantize, softmax

__all__ = ["OPS"]

OPS = {
    "CONV_2D": conv.conv_2d,
    "DEPTHWISE_CONV_2D": conv.depthwise_conv_2d,
    "FULLY_CONNECTED": conv.fully_connected,
    "ADD": elementwise.add,
    "MUL": elementwise.mul,
    "LOGISTIC": elementwise.logistic,
    "TANH": elementwise.tanh,
    "HARD_SWISH": hard_swish.hard_swish,
    "MEAN": pooling.mean,
    "AVERAGE_POOL_2D": pooling.average_pool_2d,
    "MAX_POOL_2D": pooling.max_pool_2d,
    "REDUCE_MAX": pooling.reduce_max,
    "RESHAPE": movement.reshape,
    "EXPAND_DIMS": movement.expand_dims,
    "SQUEEZE": movement.squeeze,
    "SHAPE": movement.shape,
    "PACK": movement.pack,
    "STRIDED_SLICE": movement.strided_slice,
    "PAD": movement.pad,
    "CONCATENATION": movement.concatenation,
    "SPACE_TO_BATCH_ND": movement.space_to_batch_nd,
    "BATCH_TO_SPACE_ND": movement.batch_to_space_nd,
    "QUANTIZE": quantize.quantize,
    "DEQUANTIZE": quantize.dequantize,
    "SOFTMAX": softmax.softmax,
}
