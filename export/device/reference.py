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

Three kernel families, which differ only in how they round (probed against LiteRT 2.3; the
tests compare every tensor with the runtime):

    reference  LiteRT's BUILTIN_REF kernels, which TFLite Micro shares
    builtin    LiteRT's built-in (optimized) kernels without a delegate
    xnnpack    LiteRT's default CPU path: the XNNPACK delegate for the ops it takes, builtin
               kernels for the rest

An op or tensor type it cannot execute raises `UnsupportedOpError` naming the op, its index
and its output tensor. Not reproduced yet: HARD_SWISH, MEAN with keep_dims over height and
width, and LiteRT's aarch64 builtin SOFTMAX (a uint16 table, compiled only for ARM64; the x86
kernel, a float table, is reproduced). Float ops outside QUANTIZE/DEQUANTIZE are refused: this
is an integer reference.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

try:  # inside the package, or copied beside check.py into a device bundle
    from . import fixed_point as fp
    from . import gemmlowp
except ImportError:  # pragma: no cover - exercised by the bundle's own check
    import fixed_point as fp
    import gemmlowp

__all__ = ["FAMILIES", "KERNEL_FAMILIES", "PROBED_MACHINES", "Graph", "TensorInfo", "UnsupportedOpError",
           "probed_families"]

KERNEL_FAMILIES = ("reference", "builtin", "xnnpack")   # LiteRT's: what a phone or a PC runs
# TFLite Micro's reference kernels: LiteRT's BUILTIN_REF ones, except FULLY_CONNECTED, which
# requantizes in fixed point (double rounding) where BUILTIN_REF rounds a float64 product.
MICRO_FAMILY = "micro"
FAMILIES = (*KERNEL_FAMILIES, MICRO_FAMILY)
# Where the builtin and XNNPACK rules were read off LiteRT by probing. TFLite's reference
# kernels are portable C; LiteRT's optimized kernels differ by ISA (an ARM64 build has its own
# uint16-table SOFTMAX and NEON depthwise paths), which no probe here has seen.
PROBED_MACHINES = ("x86_64", "amd64")


def probed_families(machine: str | None = None) -> tuple[str, ...]:
    """The kernel families whose rules were probed on `machine` (default: this one)."""
    if machine is None:
        import platform

        machine = platform.machine()
    return KERNEL_FAMILIES if machine.lower() in PROBED_MACHINES else ("reference",)


class UnsupportedOpError(Exception):
    """An op, tensor type or option the integer reference does not execute."""


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: tuple
    type: str                 # "int8", "int4", "int32", "float32", ...
    scale: np.ndarray         # float32, one per tensor or per channel (empty: not quantized)
    zero_point: np.ndarray    # int64
    axis: int                 # the quantized dimension of a per-channel tensor
    data: np.ndarray | None   # constant value (int4 unpacked to int8), else None

    @property
    def quantized(self) -> bool:
        return self.scale.size > 0

    def grid(self) -> tuple[float, int]:
        """(scale, zero point) of a per-tensor quantized tensor."""
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class OpInfo:
    index: int
    name: str
    inputs: list
    outputs: list
    options: object


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


_NUMPY_TYPES = {"FLOAT32": np.float32, "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8,
                "INT64": np.int64, "INT16": np.int16, "FLOAT16": np.float16, "BOOL": np.bool_}


def _unpack_int4(raw: np.ndarray, count: int) -> np.ndarray:
    """Packed int4 (two per byte, low nibble first) to int8 values in [-8, 7]."""
    nibbles = np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


class Graph:
    """The first subgraph of a .tflite flatbuffer, ready to run (see the module docstring)."""

    def __init__(self, tflite_bytes: bytes):
        schema = _schema()
        buffer = bytearray(tflite_bytes)
        model = schema.ModelT.InitFromPackedBuf(buffer, 0)
        subgraph = model.subgraphs[0]
        type_names = _enum_names(schema.TensorType)
        op_names = _enum_names(schema.BuiltinOperator)
        self.tensors = []
        raw_model = bytes(tflite_bytes)
        for index, tensor in enumerate(subgraph.tensors):
            type_name = type_names.get(tensor.type, str(tensor.type))
            quantization = tensor.quantization
            scale = np.asarray(quantization.scale if quantization is not None and quantization.scale is not None else [],
                               np.float32)
            zero_point = np.asarray(quantization.zeroPoint if quantization is not None and quantization.zeroPoint is not None
                                    else np.zeros(scale.size), np.int64)
            axis = int(quantization.quantizedDimension) if quantization is not None else 0
            shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
            self.tensors.append(TensorInfo(index, tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name),
                                           shape, type_name.lower(), scale, zero_point, axis,
                                           self._constant(model, tensor, type_name, shape, raw_model)))
        self.ops = []
        for index, op in enumerate(subgraph.operators):
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
            if builtin == schema.BuiltinOperator.CUSTOM:
                name = f"CUSTOM({code.customCode.decode() if code.customCode else '?'})"
            self.ops.append(OpInfo(index, name, [int(i) for i in (op.inputs if op.inputs is not None else [])],
                                   [int(i) for i in (op.outputs if op.outputs is not None else [])], op.builtinOptions))
        self.inputs = [int(i) for i in subgraph.inputs]
        self.outputs = [int(i) for i in subgraph.outputs]
        self.activation_names = _enum_names(schema.ActivationFunctionType)
        self.padding_names = _enum_names(schema.Padding)
        self.producer = {t: op.index for op in self.ops for t in op.outputs}

    @staticmethod
    def _constant(model, tensor, type_name, shape, raw_model: bytes):
        buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
        if buffer is None:
            return None
        if buffer.data is not None and len(buffer.data) > 0:
            raw = np.asarray(buffer.data, np.uint8)
        elif getattr(buffer, "offset", 0) > 1 and getattr(buffer, "size", 0) > 0:  # stored after the flatbuffer
            raw = np.frombuffer(raw_model, np.uint8, count=buffer.size, offset=buffer.offset)
        else:
            return None
        count = int(np.prod(shape)) if shape else 1
        if type_name == "INT4":
            return _unpack_int4(raw, count).reshape(shape)
        if type_name not in _NUMPY_TYPES:
            raise UnsupportedOpError(f"constant tensor {tensor.name!r} has type {type_name}, which the reference cannot read")
        return np.frombuffer(raw.tobytes(), _NUMPY_TYPES[type_name]).reshape(shape)

    def op_producing(self, tensor_index: int) -> OpInfo | None:
        index = self.producer.get(tensor_index)
        return None if index is None else self.ops[index]

    def run(self, device_inputs, kernels: str = "reference") -> dict[int, np.ndarray]:
        """Every tensor the graph computes (inputs and op outputs), by tensor index.

        `device_inputs`: one array, or one per graph input, exactly as the device receives them
        (int8 for an int8 input); the leading dimension is the batch.
        """
        if kernels not in FAMILIES:
            raise ValueError(f"Unknown kernel family {kernels!r}; expected one of {', '.join(FAMILIES)}.")
        arrays = [device_inputs] if isinstance(device_inputs, np.ndarray) else list(device_inputs)
        if len(arrays) != len(self.inputs):
            raise ValueError(f"The model has {len(self.inputs)} input(s); got {len(arrays)} array(s).")
        values: dict[int, np.ndarray] = {}
        for index, array in zip(self.inputs, arrays, strict=True):
            values[index] = np.asarray(array)
        for op in self.ops:
            kernel = OPS.get(op.name)
            if kernel is None:
                raise UnsupportedOpError(f"op {op.index} {op.name} (output tensor {self._out_name(op)!r}) is not "
                                         "executed by the integer reference")
            context = _Context(self, op, values, kernels)
            try:
                results = kernel(context)
            except UnsupportedOpError as error:
                raise UnsupportedOpError(f"op {op.index} {op.name} (output tensor {self._out_name(op)!r}): {error}") from None
            for index, result in zip(op.outputs, results, strict=True):
                values[index] = result
        return values

    def _out_name(self, op: OpInfo) -> str:
        return self.tensors[op.outputs[0]].name if op.outputs else "?"


class _Context:
    """What an op kernel sees: its inputs' values and tensors, its options, the kernel family.
    TFLite Micro computes as the reference family except where `micro` says otherwise."""

    def __init__(self, graph: Graph, op: OpInfo, values: dict, family: str):
        self.graph, self.op, self.values = graph, op, values
        self.micro = family == MICRO_FAMILY
        self.family = "reference" if self.micro else family
        self.options = op.options

    def has_input(self, i: int) -> bool:
        return i < len(self.op.inputs) and self.op.inputs[i] >= 0

    def tensor(self, i: int) -> TensorInfo:
        return self.graph.tensors[self.op.inputs[i]]

    def value(self, i: int) -> np.ndarray:
        index = self.op.inputs[i]
        if index in self.values:
            return self.values[index]
        data = self.graph.tensors[index].data
        if data is None:
            raise UnsupportedOpError(f"input {i} (tensor {self.graph.tensors[index].name!r}) has no value")
        return data

    def output(self, i: int = 0) -> TensorInfo:
        return self.graph.tensors[self.op.outputs[i]]

    def activation(self) -> str:
        code = getattr(self.options, "fusedActivationFunction", 0) or 0
        return self.graph.activation_names.get(code, str(code))

    def output_bounds(self, i: int = 0) -> tuple[int, int]:
        scale, zero_point = self.output(i).grid()
        try:
            return fp.activation_bounds(self.activation(), scale, zero_point)
        except ValueError as error:
            raise UnsupportedOpError(str(error)) from None

    def require_int8(self, *indices: int) -> None:
        for i in indices:
            tensor = self.tensor(i)
            if tensor.type not in ("int8", "int4") or not tensor.quantized:
                raise UnsupportedOpError(f"input {i} (tensor {tensor.name!r}) is {tensor.type}, not quantized int8")


# --------------------------------------------------------------------------- requantization

def _requantize(acc, real_scale, rounding: str, zero_point: int, bounds: tuple[int, int], multipliers=None):
    """acc (int64) -> int8. rounding: "float32" (XNNPACK, ties to even), "float64" (reference
    FULLY_CONNECTED, ties away), "double" / "upward" (fixed point with `multipliers` = (M, e); see
    fixed_point's docstring)."""
    if rounding == "float32":
        out = acc.astype(np.float32)
        out *= np.asarray(real_scale, np.float32)
        np.rint(out, out=out)      # an integer-valued float32; beyond 2^24 it clamps all the same
    elif rounding == "float64":
        out = fp.round_half_away(acc * np.asarray(real_scale, np.float64)).astype(np.int64)
    else:
        multiplier, shift = multipliers
        if rounding == "double":
            out = fp.multiply_by_quantized_multiplier(acc, multiplier, shift)
        else:  # "upward"
            out = fp.multiply_by_quantized_multiplier_upward(acc, multiplier, shift)
    out += zero_point
    np.clip(out, bounds[0], bounds[1], out=out)
    return out.astype(np.int8)


def _multipliers(real_scales) -> tuple[np.ndarray, np.ndarray]:
    return _multipliers_of(np.asarray(real_scales, np.float64).reshape(-1).tobytes())


@functools.lru_cache(maxsize=1024)
def _multipliers_of(real_scales: bytes) -> tuple[np.ndarray, np.ndarray]:
    pairs = [fp.quantize_multiplier(float(m)) for m in np.frombuffer(real_scales, np.float64)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


# Rows of a batch a heavy op computes at once: its int64 intermediates then stay near the
# CPU's caches (2^17 output elements, 1 MiB each), which is 1.5-2x faster than the whole batch.
_CHUNK_ELEMENTS = 1 << 17


def _in_chunks(compute, x: np.ndarray, out_elements_per_row: int) -> np.ndarray:
    """compute(x[rows]) over chunks of rows along axis 0, concatenated."""
    rows = max(1, _CHUNK_ELEMENTS // max(out_elements_per_row, 1))
    if len(x) <= rows:
        return compute(x)
    return np.concatenate([compute(x[start:start + rows]) for start in range(0, len(x), rows)])


def _kernel_scales(context: _Context, weights_index: int = 1):
    """(double real scales, float32 real scales) s_in s_w[c] / s_out of a conv/FC, per channel.

    TFLite computes the double one as double(s_in) double(s_w[c]) / double(s_out), except for a
    FULLY_CONNECTED with per-tensor weights in LiteRT (GetQuantizedConvolutionMultipler): there
    the product s_in s_w is taken in float32 first, double(float32(s_in s_w)) / double(s_out).
    The two multipliers differ in their last bits, which moves outputs near a rounding boundary
    by one step (probed on LiteRT's builtin kernels: 3 of 76,800 outputs of a 640 -> 128 layer).
    TFLite Micro (the tflite-micro wheel) takes the double product for FULLY_CONNECTED too:
    with the float32 product, 1 of 10,000 logits of a trained MNIST-1D CNN (W8) differed from
    it; with the double product, none."""
    input_scale = context.tensor(0).scale[0]
    weight_scale = context.tensor(weights_index).scale
    output_scale = context.output().scale[0]
    if context.op.name == "FULLY_CONNECTED" and weight_scale.size == 1 and not context.micro:
        product = np.float64(np.float32(input_scale) * np.float32(weight_scale[0]))
        double = np.atleast_1d(product / np.float64(output_scale))
    else:
        double = np.float64(input_scale) * weight_scale.astype(np.float64) / np.float64(output_scale)
    single = (np.float32(input_scale) * weight_scale.astype(np.float32)) / np.float32(output_scale)
    return double, single


def _conv_requantize(context: _Context, acc_by_channel, rounding: str, channels: slice = slice(None)):
    """int64 accumulators laid out channel first, (C, rows), to int8 laid out (rows, C);
    `channels`: which output channels these are (their scales).

    Channel first, each per-channel multiplier broadcasts over a long contiguous row: numpy's
    elementwise ops then run about 3x faster than over a short last axis."""
    double, single = _kernel_scales(context)
    if double.size > 1:
        double, single = double[channels], single[channels]
    scale, zero_point = context.output().grid()
    if rounding == "float32":  # XNNPACK
        out = _requantize(acc_by_channel, single[:, None], "float32", zero_point, _xnnpack_bounds(context))
    elif rounding == "float64":
        out = _requantize(acc_by_channel, double[:, None], "float64", zero_point, context.output_bounds())
    else:
        multiplier, shift = _multipliers(double)
        out = _requantize(acc_by_channel, None, rounding, zero_point, context.output_bounds(),
                          (multiplier[:, None], shift[:, None]))
    return out.T


def _xnnpack_bounds(context: _Context) -> tuple[int, int]:
    """XNNPACK quantizes the fused activation's float bounds with lrintf (ties to even)."""
    scale, zero_point = context.output().grid()
    return fp.activation_bounds(context.activation(), scale, zero_point, ties="even")


# --------------------------------------------------------------------------- convolutions

def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2, total - total // 2


def _valid_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    effective = (kernel - 1) * dilation + 1
    return (size - effective + stride) // stride


def _padded_windows(context: _Context, x: np.ndarray, kh: int, kw: int, dtype):
    """(N, OH, OW, kh, kw, C) windows (a strided view, no copy) of x - zero point in `dtype`,
    padding contributing 0."""
    options = context.options
    sh, sw = options.strideH, options.strideW
    dh, dw = max(getattr(options, "dilationHFactor", 1), 1), max(getattr(options, "dilationWFactor", 1), 1)
    _, zero_point = context.tensor(0).grid()
    n, h, w, c = x.shape
    if context.graph.padding_names.get(options.padding) == "SAME":
        oh, top, bottom = _same_padding(h, kh, sh, dh)
        ow, left, right = _same_padding(w, kw, sw, dw)
        centered = np.zeros((n, h + top + bottom, w + left + right, c), dtype)
        interior = centered[:, top:top + h, left:left + w, :]
        interior[...] = x
        interior -= zero_point
    else:
        oh, ow = _valid_size(h, kh, sh, dh), _valid_size(w, kw, sw, dw)
        centered = x.astype(dtype)
        centered -= zero_point
    windows = np.lib.stride_tricks.sliding_window_view(centered, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    windows = windows[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw, :, ::dh, ::dw]  # (N, OH, OW, C, kh, kw)
    return windows.transpose(0, 1, 2, 4, 5, 3)


def _exact_dtype(context: _Context, weights: np.ndarray, terms: int):
    """float32 where every partial sum of the int8 dot products is an integer below 2^24 (so
    float32 BLAS is exact and twice as fast), else float64 (exact below 2^53)."""
    _, zero_point = context.tensor(0).grid()
    largest_input = max(zero_point + 128, 127 - zero_point)
    largest_weight = int(np.abs(weights).max()) if weights.size else 0
    return np.float32 if terms * largest_input * largest_weight < (1 << 24) else np.float64


def _bias(context: _Context, index: int = 2):
    if context.has_input(index):
        bias = context.value(index)
        if bias.dtype not in (np.int32, np.int64):
            raise UnsupportedOpError(f"bias tensor {context.tensor(index).name!r} is {bias.dtype}, not int32")
        return bias.astype(np.int64)
    return np.int64(0)


def _weights(context: _Context, index: int = 1) -> np.ndarray:
    tensor = context.tensor(index)
    if tensor.type not in ("int8", "int4") or not tensor.quantized:
        raise UnsupportedOpError(f"weights {tensor.name!r} are {tensor.type}, not int8/int4 (a float layer?)")
    if np.any(tensor.zero_point != 0):
        raise UnsupportedOpError(f"weights {tensor.name!r} have a nonzero zero point")
    return context.value(index).astype(np.int64)


def _delegated_family(context: _Context) -> str:
    """The family that really runs a conv: XNNPACK does not take CONV_2D / DEPTHWISE_CONV_2D with
    packed int4 weights (LiteRT 2.3 runs them on its builtin kernels); it does take FULLY_CONNECTED."""
    if context.family == "xnnpack" and context.tensor(1).type == "int4" and context.op.name != "FULLY_CONNECTED":
        return "builtin"
    return context.family


def _conv_rounding(context: _Context) -> str:
    return {"reference": "double", "builtin": "upward", "xnnpack": "float32"}[_delegated_family(context)]


def _conv_2d(context: _Context):
    context.require_int8(0)
    weights = _weights(context)                       # (out, kh, kw, in)
    out_channels, kh, kw, in_channels = weights.shape
    x = context.value(0)
    if x.shape[-1] != in_channels:
        raise UnsupportedOpError(f"grouped convolution ({x.shape[-1]} input channels, filter has {in_channels})")
    dtype = _exact_dtype(context, weights, kh * kw * in_channels)
    matrix = weights.reshape(out_channels, -1).astype(dtype)
    bias, rounding = _column(_bias(context)), _conv_rounding(context)

    def compute(rows):
        windows = _padded_windows(context, rows, kh, kw, dtype)
        n, oh, ow = windows.shape[:3]
        acc = (matrix @ windows.reshape(n * oh * ow, -1).T).astype(np.int64)   # (out, n oh ow)
        acc += bias
        return _conv_requantize(context, acc, rounding).reshape(n, oh, ow, out_channels)

    return [_in_chunks(compute, x, int(np.prod(context.output().shape[1:])))]


def _column(bias):
    """A per-channel bias as a column (C, 1) for channel-first accumulators."""
    return bias.reshape(-1, 1) if np.ndim(bias) else bias


_DEPTHWISE_BLOCK = 8


def _depthwise_conv_2d(context: _Context):
    """Per channel, one multiply-add of the shifted input per filter tap."""
    context.require_int8(0)
    weights = _weights(context)                       # (1, kh, kw, in * multiplier)
    _, kh, kw, out_channels = weights.shape
    x = context.value(0)
    multiplier = out_channels // x.shape[-1]
    dtype = _exact_dtype(context, weights, kh * kw)
    taps = weights[0].astype(dtype)
    bias, rounding = _column(_bias(context)), _conv_rounding(context)

    def compute(rows):
        windows = _padded_windows(context, rows, kh, kw, dtype)
        if multiplier > 1:
            windows = np.repeat(windows, multiplier, axis=-1)
        acc = np.empty((*windows.shape[:3], out_channels), dtype)
        term = np.empty_like(acc)
        np.multiply(windows[:, :, :, 0, 0, :], taps[0, 0], out=acc)
        for i, j in [(i, j) for i in range(kh) for j in range(kw)][1:]:
            np.multiply(windows[:, :, :, i, j, :], taps[i, j], out=term)
            acc += term
        by_channel = acc.reshape(-1, out_channels).T.astype(np.int64)
        by_channel += bias
        if rounding != "upward" or out_channels % _DEPTHWISE_BLOCK == 0:
            return _conv_requantize(context, by_channel, rounding).reshape(acc.shape)
        # LiteRT's builtin depthwise kernel requantizes whole blocks of 8 output channels with
        # SIMD (ruy's rounding) and the channels after the last whole block one by one with
        # TFLite's scalar MultiplyByQuantizedMultiplier (double rounding); probed for 3-24 channels.
        blocked = slice(0, out_channels - out_channels % _DEPTHWISE_BLOCK)
        tail = slice(blocked.stop, out_channels)
        out = np.concatenate([_conv_requantize(context, by_channel[blocked], "upward", blocked),
                              _conv_requantize(context, by_channel[tail], "double", tail)], axis=1)
        return out.reshape(acc.shape)

    return [_in_chunks(compute, x, int(np.prod(context.output().shape[1:])))]


def _fully_connected(context: _Context):
    context.require_int8(0)
    weights = _weights(context)                       # (out, in)
    x = context.value(0)
    _, zero_point = context.tensor(0).grid()
    dtype = _exact_dtype(context, weights, weights.shape[1])
    matrix = weights.astype(dtype)
    bias, rounding = _column(_bias(context)), _fc_rounding(context)

    def compute(rows):
        centered = rows.astype(dtype)
        centered -= zero_point
        acc = (matrix @ centered.T).astype(np.int64)                         # (out, rows)
        acc += bias
        return _conv_requantize(context, acc, rounding)

    out = _in_chunks(compute, x.reshape(-1, weights.shape[1]), weights.shape[0])
    if getattr(context.options, "keepNumDims", False):
        return [out.reshape(*x.shape[:-1], weights.shape[0])]
    return [out]


def _fc_rounding(context: _Context) -> str:
    """TFLite Micro's FULLY_CONNECTED is MultiplyByQuantizedMultiplier (double rounding), with the
    same multipliers; LiteRT's BUILTIN_REF rounds round((double) acc * multiplier) instead."""
    if context.micro:
        return "double"
    return {"reference": "float64", "builtin": "upward", "xnnpack": "float32"}[_delegated_family(context)]


# --------------------------------------------------------------------------- elementwise

def _add(context: _Context):
    context.require_int8(0, 1)
    a, b = context.value(0).astype(np.int64), context.value(1).astype(np.int64)
    (sa, za), (sb, zb), (so, zo) = context.tensor(0).grid(), context.tensor(1).grid(), context.output().grid()
    if context.family == "xnnpack":
        return [_xnnpack_add(a, b, sa, za, sb, zb, so, zo, _xnnpack_bounds(context))]
    left_shift = 20
    twice_max = 2.0 * max(float(sa), float(sb))
    m_a, e_a = fp.quantize_multiplier(float(sa) / twice_max)
    m_b, e_b = fp.quantize_multiplier(float(sb) / twice_max)
    m_o, e_o = fp.quantize_multiplier(twice_max / ((1 << left_shift) * float(so)))
    # TFLite's reference kernel rounds each multiply twice (SaturatingRoundingDoublingHighMul,
    # then RoundingDivideByPOT). LiteRT's builtin kernel on x86 rounds the two input rescales
    # once (ties up) and the output rescale twice. Probed on ResNet-8 (trained at W3 and
    # untrained at W4) and MobileNetV2-0.35: double rounding everywhere missed 1,107 of 4.9 M
    # elements of one ADD, single rounding everywhere 1 of 262 k in another (sums within 2e-6 of
    # a half); this mix missed none of 16 ADDs (36 M elements). Rounding the output rescale
    # upward (ruy's rule) fit as well: those probes do not tell the two apart.
    rescale = fp.multiply_by_quantized_multiplier_single if context.family == "builtin" else fp.multiply_by_quantized_multiplier
    scaled_a = rescale((a - za) << left_shift, m_a, e_a)
    scaled_b = rescale((b - zb) << left_shift, m_b, e_b)
    out = fp.multiply_by_quantized_multiplier(scaled_a + scaled_b, m_o, e_o) + zo
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def _xnnpack_add(a, b, sa, za, sb, zb, so, zo, bounds):
    """XNNPACK qs8 add: 20-bit multipliers of s_a/s_out, s_b/s_out and one arithmetic shift."""
    scale_a = np.float32(sa) / np.float32(so)
    scale_b = np.float32(sb) / np.float32(so)
    exponent = int(np.frexp(np.float32(max(scale_a, scale_b)))[1]) - 1
    shift = 20 - exponent
    m_a = int(np.rint(np.float32(np.ldexp(scale_a, shift))))
    m_b = int(np.rint(np.float32(np.ldexp(scale_b, shift))))
    bias = (1 << (shift - 1)) - m_a * za - m_b * zb
    out = ((bias + a * m_a + b * m_b) >> shift) + zo
    return np.clip(out, bounds[0], bounds[1]).astype(np.int8)


def _mul(context: _Context):
    context.require_int8(0, 1)
    a, b = context.value(0).astype(np.int64), context.value(1).astype(np.int64)
    (sa, za), (sb, zb), (so, zo) = context.tensor(0).grid(), context.tensor(1).grid(), context.output().grid()
    product = (a - za) * (b - zb)
    if context.family == "xnnpack":
        scale = (np.float32(sa) * np.float32(sb)) / np.float32(so)
        return [_requantize(product, scale, "float32", zo, _xnnpack_bounds(context))]
    multiplier = fp.quantize_multiplier(float(sa) * float(sb) / float(so))
    return [_requantize(product, None, "double", zo, context.output_bounds(), multiplier)]


# --------------------------------------------------------------------------- pooling, reduction

def _pool_windows(context: _Context, x: np.ndarray, fill):
    """(N, OH, OW, fh, fw, C) windows and a validity mask (padding is outside the input)."""
    options = context.options
    fh, fw, sh, sw = options.filterHeight, options.filterWidth, options.strideH, options.strideW
    n, h, w, c = x.shape
    valid = np.ones((1, h, w, 1), bool)
    if context.graph.padding_names.get(options.padding) == "SAME":
        oh, top, bottom = _same_padding(h, fh, sh, 1)
        ow, left, right = _same_padding(w, fw, sw, 1)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
        valid = np.pad(valid, ((0, 0), (top, bottom), (left, right), (0, 0)))
    else:
        oh, ow = _valid_size(h, fh, sh, 1), _valid_size(w, fw, sw, 1)

    def windows(array):
        rows = [[array[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :] for j in range(fw)] for i in range(fh)]
        return np.stack([np.stack(row, axis=3) for row in rows], axis=3)

    return windows(x), windows(valid)


def _max_pool_2d(context: _Context):
    context.require_int8(0)
    windows, _ = _pool_windows(context, context.value(0).astype(np.int64), -(1 << 20))
    out = windows.max(axis=(3, 4))
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def _average_pool_2d(context: _Context):
    """sum / count over the valid window, rounded half away from zero, in the input's grid."""
    context.require_int8(0)
    windows, valid = _pool_windows(context, context.value(0).astype(np.int64), 0)
    total = windows.sum(axis=(3, 4))
    count = valid.sum(axis=(3, 4)).astype(np.int64)
    half = count // 2
    out = np.where(total > 0, _div_trunc(total + half, count), _div_trunc(total - half, count))
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def _div_trunc(a, b):
    return np.where((a >= 0) == (b > 0), np.abs(a) // np.abs(b), -(np.abs(a) // np.abs(b)))


def _mean(context: _Context):
    """MEAN over `axes` (GlobalAveragePooling2D): the int32 sum, then one requantization.

    Builtin and reference (TFLite's QuantizedMeanOrSum): (M, e) = quantize_multiplier(s_in / s_out),
    k = min(floor(log2 n), 32, 31 + e), M' = (M 2^k) // n, e' = e - k, and
    out = MultiplyByQuantizedMultiplier(sum - n z_in, M', e') + z_out, equal grids in and out
    included: LiteRT 2.3 (builtin and BUILTIN_REF) and TFLite Micro take this path there too, not
    the truncating sum // n of TFLite's older same-grid branch (probed on MobileNetV2-0.35, a 3x3
    MEAN on one grid: 3,790 of 20,480 elements differed with truncation, 0 without). XNNPACK: with m = float32(s_in / (s_out n)) and the zero point
    folded into a float32 bias b = -(z_in n) m, out = lrintf(float32(sum) m + b) + z_out. (Folding
    z_in into the integer sum instead rounds some near-ties the other way: 36.50002 steps vs
    XNNPACK's 36 on a trained digits_cnn.)
    """
    context.require_int8(0)
    x = context.value(0).astype(np.int64)
    axes = tuple(sorted({int(a) % x.ndim for a in np.asarray(context.value(1)).reshape(-1)}))
    keep = bool(getattr(context.options, "keepDims", False))
    (si, zi), (so, zo) = context.tensor(0).grid(), context.output().grid()
    count = int(np.prod([x.shape[a] for a in axes]))
    total = x.sum(axis=axes, keepdims=keep)
    if context.family == "xnnpack":
        scale = np.float32(si) / (np.float32(so) * np.float32(count))
        bias = -(np.float32(zi) * np.float32(count)) * scale
        out = np.rint(total.astype(np.float32) * scale + bias).astype(np.int64) + zo
        return [np.clip(out, -128, 127).astype(np.int8)]
    if keep and x.ndim == 4 and axes == (1, 2):
        raise UnsupportedOpError("MEAN with keep_dims over height and width (a separate TFLite kernel) is not reproduced")
    multiplier, shift = fp.quantize_multiplier(float(si) / float(so))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << k) // count
    out = fp.multiply_by_quantized_multiplier(total - zi * count, multiplier, shift - k) + zo
    return [np.clip(out, -128, 127).astype(np.int8)]


# --------------------------------------------------------------------------- data movement

def _reshape(context: _Context):
    x = context.value(0)
    if context.has_input(1):
        target = [int(d) for d in np.asarray(context.value(1)).reshape(-1)]
    else:
        target = list(getattr(context.options, "newShape", None) or context.output().shape)
    return [x.reshape(_batched_shape(x, target))]


def _batched_shape(x: np.ndarray, target: list) -> list:
    """A static target shape with batch 1 applied to a batch of N: the leading 1 becomes N."""
    target = list(target)
    known = int(np.prod([d for d in target if d != -1])) if target else 1
    if -1 not in target and known != x.size and target and target[0] == 1 and known * x.shape[0] == x.size:
        target[0] = x.shape[0]
    return target


def _expand_dims(context: _Context):
    x = context.value(0)
    axis = int(np.asarray(context.value(1)).reshape(-1)[0])
    return [np.expand_dims(x, axis if axis >= 0 else x.ndim + 1 + axis)]


def _squeeze(context: _Context):
    x = context.value(0)
    dims = list(getattr(context.options, "squeezeDims", None) or [])
    return [np.squeeze(x, axis=tuple(d % x.ndim for d in dims)) if dims else np.squeeze(x)]


def _shape(context: _Context):
    return [np.asarray(context.value(0).shape, np.int32)]


def _pack(context: _Context):
    axis = int(getattr(context.options, "axis", 0))
    return [np.stack([np.asarray(context.value(i)) for i in range(len(context.op.inputs))], axis=axis)]


def _strided_slice(context: _Context):
    x = np.asarray(context.value(0))
    begin, end, strides = (np.asarray(context.value(i)).reshape(-1) for i in (1, 2, 3))
    options = context.options
    for name in ("ellipsisMask", "newAxisMask"):
        if getattr(options, name, 0):
            raise UnsupportedOpError(f"strided slice with {name}")
    slices = []
    for d in range(len(begin)):
        start = None if (options.beginMask >> d) & 1 else int(begin[d])
        stop = None if (options.endMask >> d) & 1 else int(end[d])
        if getattr(options, "offset", False) and stop is not None:
            stop = int(begin[d]) + stop
        slices.append(slice(start, stop, int(strides[d])))
    out = x[tuple(slices)]
    shrink = [d for d in range(len(begin)) if (options.shrinkAxisMask >> d) & 1]
    return [out.reshape([s for d, s in enumerate(out.shape) if d not in shrink]) if shrink else out]


def _pad(context: _Context):
    x = context.value(0)
    paddings = np.asarray(context.value(1)).reshape(-1, 2)
    fill = context.tensor(0).grid()[1] if context.tensor(0).quantized else 0
    if context.has_input(2):
        fill = int(np.asarray(context.value(2)).reshape(-1)[0])
    return [np.pad(x, [tuple(int(v) for v in row) for row in paddings], constant_values=fill)]


def _concatenation(context: _Context):
    out_scale, out_zero = context.output().grid()
    parts = []
    for i in range(len(context.op.inputs)):
        scale, zero_point = context.tensor(i).grid()
        value = context.value(i)
        if scale != out_scale or zero_point != out_zero:
            raise UnsupportedOpError(f"concatenation input {i} has another grid than the output")
        parts.append(value)
    axis = int(context.options.axis) % parts[0].ndim
    out = np.concatenate(parts, axis=axis).astype(np.int64)
    low, high = context.output_bounds()
    return [np.clip(out, low, high).astype(np.int8)]


def _space_to_batch_nd(context: _Context):
    x = context.value(0)
    block = [int(v) for v in np.asarray(context.value(1)).reshape(-1)]
    paddings = np.asarray(context.value(2)).reshape(-1, 2)
    zero_point = context.tensor(0).grid()[1] if context.tensor(0).quantized else 0
    x = np.pad(x, [(0, 0), *[tuple(int(v) for v in row) for row in paddings], (0, 0)], constant_values=zero_point)
    n, h, w, c = x.shape
    bh, bw = block
    x = x.reshape(n, h // bh, bh, w // bw, bw, c).transpose(2, 4, 0, 1, 3, 5)
    return [x.reshape(bh * bw * n, h // bh, w // bw, c)]


def _batch_to_space_nd(context: _Context):
    x = context.value(0)
    bh, bw = (int(v) for v in np.asarray(context.value(1)).reshape(-1))
    crops = np.asarray(context.value(2)).reshape(-1, 2)
    nb, h, w, c = x.shape
    n = nb // (bh * bw)
    x = x.reshape(bh, bw, n, h, w, c).transpose(2, 3, 0, 4, 1, 5).reshape(n, h * bh, w * bw, c)
    return [x[:, crops[0, 0]:h * bh - crops[0, 1], crops[1, 0]:w * bw - crops[1, 1], :]]


# --------------------------------------------------------------------------- (de)quantization

def _quantize(context: _Context):
    source, target = context.tensor(0), context.output()
    x = context.value(0)
    scale, zero_point = target.grid()
    if source.type == "float32":
        # reference: TFLite's AffineQuantize, zero_point + round_half_away(x / scale); builtin and
        # XNNPACK multiply by the float32 reciprocal and round ties to even (probed with exact ties).
        x = np.asarray(x, np.float32)
        if context.family == "reference":
            q = fp.round_half_away(x / np.float32(scale)) + zero_point
        else:
            q = np.rint(x * (np.float32(1.0) / np.float32(scale))) + zero_point
        return [np.clip(q, -128, 127).astype(np.int8)]
    context.require_int8(0)
    in_scale, in_zero = source.grid()
    centered = x.astype(np.int64) - in_zero
    if context.family == "xnnpack":
        ratio = np.float32(in_scale) / np.float32(scale)
        multiplier = int(np.rint(np.float32(256.0) * ratio))
        out = ((centered * multiplier + 0x80) >> 8) + zero_point
        return [np.clip(out, -128, 127).astype(np.int8)]
    multiplier = fp.quantize_multiplier(float(in_scale) / float(scale))
    return [_requantize(centered, None, "double", zero_point, (-128, 127), multiplier)]


def _dequantize(context: _Context):
    """float32 (q - z) s; the builtin (vectorized) kernel computes q s - z s, which rounds differently."""
    scale, zero_point = context.tensor(0).grid()
    q = context.value(0).astype(np.int32)
    if context.family == "builtin":
        return [q.astype(np.float32) * np.float32(scale) - np.float32(zero_point) * np.float32(scale)]
    return [(q - zero_point).astype(np.float32) * np.float32(scale)]


# --------------------------------------------------------------------------- lookup-table activations

def _lookup_table(context: _Context, function):
    """An int8 -> int8 table: out = zero_point + round(f(s_in (q - z_in)) / s_out), clamped."""
    context.require_int8(0)
    (si, zi), (so, zo) = context.tensor(0).grid(), context.output().grid()
    q = np.arange(-128, 128, dtype=np.int64)
    real = np.float32(si) * (q - zi).astype(np.float32)
    transformed = function(real.astype(np.float32)).astype(np.float32)
    if context.family == "xnnpack":
        table = np.rint(transformed / np.float32(so)) + zo
    else:
        table = fp.round_half_away(transformed * (np.float32(1.0) / np.float32(so))) + zo
    table = np.clip(table, -128, 127).astype(np.int8)
    return [table[context.value(0).astype(np.int64) + 128]]


def _logistic(context: _Context):
    return _lookup_table(context, lambda v: (np.float32(1.0) / (np.float32(1.0) + np.exp(-v))).astype(np.float32))


def _tanh(context: _Context):
    return _lookup_table(context, lambda v: np.tanh(v).astype(np.float32))


# --------------------------------------------------------------------------- softmax

_SCALED_DIFF_INTEGER_BITS = 5    # TFLite's kScaledDiffIntegerBits
_ACCUMULATION_INTEGER_BITS = 12  # TFLite's kAccumulationIntegerBits


def _softmax(context: _Context):
    """int8 SOFTMAX over the last axis, output grid 1/256 with zero point -128.

    reference (TFLite's reference kernel, TFLite Micro): gemmlowp fixed point. With
    (M, e) = quantize_multiplier(beta s_in 2^26) and d = q - max(q) >= d_min
    (d_min = -floor(31 2^26 / 2^e)): E = exp_on_negative_values(SRDHM(d 2^e, M)) with 5 integer bits
    in; S = sum of E / 2^12 (12 integer bits); (R, b) = get_reciprocal(S);
    out = RoundingDivideByPOT(SRDHM(R, E), b + 23) - 128; entries with d < d_min give -128.
    builtin and xnnpack (LiteRT's optimized kernel on x86; XNNPACK takes only float softmax): a
    float32 table T[k] = expf(-s_in beta k), k = max - q; S = T summed in order (float32);
    out = round_half_away(T[k] * (1 / (S s_out))) - 128.
    """
    context.require_int8(0)
    x = context.value(0).astype(np.int64)
    input_scale, _ = context.tensor(0).grid()
    output_scale, output_zero = context.output().grid()
    beta = float(getattr(context.options, "beta", 1.0))
    rows = x.reshape(-1, x.shape[-1])
    diff = rows - rows.max(axis=-1, keepdims=True)
    if context.family == "reference":
        out = _softmax_fixed_point(diff, beta, float(input_scale))
    else:
        table = _expf(-np.float32(input_scale) * np.float32(beta) * np.arange(256, dtype=np.float32))
        exps = table[-diff]
        total = np.add.accumulate(exps, axis=-1, dtype=np.float32)[:, -1:]
        inverse = np.float32(1.0) / (total * np.float32(output_scale))
        out = fp.round_half_away(exps * inverse).astype(np.int64) + output_zero
    return [np.clip(out, -128, 127).astype(np.int8).reshape(x.shape)]


def softmax_input_multiplier(beta: float, input_scale: float) -> float:
    """beta s_in 2^26 (capped at 2^31 - 1): TFLite's PreprocessSoftmaxScaling, which aborts the
    process (a CHECK in QuantizeMultiplierGreaterThanOne) unless it is > 1, i.e. for an int8
    SOFTMAX input scale below 2^-26 / beta: a degenerate (near-zero) calibrated range."""
    return min(beta * input_scale * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)), float((1 << 31) - 1))


def _softmax_fixed_point(diff, beta: float, input_scale: float):
    real = softmax_input_multiplier(beta, input_scale)
    if real <= 1.0:
        raise UnsupportedOpError(f"input scale {input_scale:.3g} is below 2^-26: TFLite aborts on this SOFTMAX")
    multiplier, left_shift = fp.quantize_multiplier(real)
    diff_min = -int(np.floor(((1 << _SCALED_DIFF_INTEGER_BITS) - 1) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS))
                             / float(1 << left_shift)))
    valid = diff >= diff_min
    rescaled = gemmlowp.srdhm(np.where(valid, diff, 0) << left_shift, multiplier)
    exps = gemmlowp.exp_on_negative_values(rescaled, _SCALED_DIFF_INTEGER_BITS)
    terms = gemmlowp.rounding_divide_by_pot(exps, _ACCUMULATION_INTEGER_BITS)
    total = np.where(valid, terms, 0).sum(axis=-1, keepdims=True)
    reciprocal, bits_over_unit = gemmlowp.get_reciprocal(total, _ACCUMULATION_INTEGER_BITS)
    scaled = gemmlowp.srdhm(reciprocal, exps)
    out = fp.rounding_divide_by_pot(scaled, bits_over_unit + 31 - 8)
    return np.where(valid, out - 128, -128)


def _expf(values: np.ndarray) -> np.ndarray:
    """C's expf on float32 values, as exp in double rounded to float32: correctly rounded, which
    glibc's expf (within 0.502 ulp) matches but for near-ties; equal on every table probed.
    (numpy's own float32 exp is not: it differed from expf in 9-102 of 256 entries.)"""
    return np.exp(np.asarray(values, np.float64)).astype(np.float32)


OPS = {
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "FULLY_CONNECTED": _fully_connected,
    "ADD": _add,
    "MUL": _mul,
    "MEAN": _mean,
    "AVERAGE_POOL_2D": _average_pool_2d,
    "MAX_POOL_2D": _max_pool_2d,
    "RESHAPE": _reshape,
    "EXPAND_DIMS": _expand_dims,
    "SQUEEZE": _squeeze,
    "SHAPE": _shape,
    "PACK": _pack,
    "STRIDED_SLICE": _strided_slice,
    "PAD": _pad,
    "CONCATENATION": _concatenation,
    "SPACE_TO_BATCH_ND": _space_to_batch_nd,
    "BATCH_TO_SPACE_ND": _batch_to_space_nd,
    "QUANTIZE": _quantize,
    "DEQUANTIZE": _dequantize,
    "LOGISTIC": _logistic,
    "TANH": _tanh,
    "SOFTMAX": _softmax,
}
