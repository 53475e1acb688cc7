"""TFLite Micro: which ops a model needs, its C sources, and its arena and flash, measured.

    ops = model_ops(micro_bytes)                 # builtin op names, in first-use order
    require_micro_ops(micro_bytes)               # UnsupportedOnMicroError naming an op TFLM lacks
    files = micro_sources(micro_bytes, "digits_cnn", arena_bytes)   # model_data.h/.cc, micro_ops.h
    measured = measure(micro_bytes, sample)      # arena by bisection + recording allocator

The micro model is the hard model converted with a batch of 1 (`export.tflite.convert(...,
batch_size=1)`): TFLite Micro does not resize tensors, and a static shape drops the SHAPE /
STRIDED_SLICE / PACK ops a dynamic batch needs. Its integers are the same as model.tflite's;
the bundle's check compares TFLite Micro's outputs with the integer reference's `micro` family.

Flash counts the model data only: the runtime and each op's kernel add code whose size depends
on the toolchain, the CPU and the kernels chosen (reference or CMSIS-NN); see the README.
"""

from __future__ import annotations

import re

import numpy as np

from export.device import micro_check
from export.device.reference import Graph
from toolkit.errors import ConfigError, UnsupportedLayerError

__all__ = ["MICRO_RESOLVER", "UnsupportedOnMicroError", "budget_failures", "c_name", "measure", "micro_sources",
           "micro_stage", "missing_ops", "model_ops", "peak_tensors", "require_micro_ops"]

# BuiltinOperator name -> the MicroMutableOpResolver method that registers it: every builtin op
# TFLite Micro's resolver offers (tensorflow/lite/micro/micro_mutable_op_resolver.h, 2024-2025).
MICRO_RESOLVER = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv", "ELU": "AddElu",
    "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather", "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax", "RELU": "AddRelu",
    "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "ROUND": "AddRound", "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum",
    "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv", "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}

_ELEMENT_BYTES = {"int8": 1, "uint8": 1, "int4": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4, "int64": 8,
                  "bool": 1}


class UnsupportedOnMicroError(UnsupportedLayerError):
    """A model with an op that TFLite Micro's resolver does not have."""


def model_ops(tflite_bytes: bytes) -> list[str]:
    """The builtin op names the model uses, in order of first use."""
    return list(dict.fromkeys(op.name for op in Graph(tflite_bytes).ops))


def missing_ops(tflite_bytes: bytes) -> list[dict]:
    """Every op TFLite Micro lacks: [{"op", "index", "tensor"}] (the tensor it computes)."""
    graph = Graph(tflite_bytes)
    return [{"op": op.name, "index": op.index, "tensor": graph.tensors[op.outputs[0]].name if op.outputs else "?"}
            for op in graph.ops if op.name not in MICRO_RESOLVER]


def require_micro_ops(tflite_bytes: bytes, name: str = "the model") -> None:
    """Raises UnsupportedOnMicroError naming the first op TFLite Micro lacks, and its layer."""
    missing = missing_ops(tflite_bytes)
    if missing:
        first = missing[0]
        others = sorted({row["op"] for row in missing} - {first["op"]})
        raise UnsupportedOnMicroError(
            f"TFLite Micro has no kernel for op {first['op']} (op {first['index']}, computing "
            f"{first['tensor'].split(';')[0]!r}) in {name}" + (f"; nor for {', '.join(others)}" if others else "")
            + ". Replace that layer with one TFLite Micro runs, or export for LiteRT (--target int8).")


def _tensor_bytes(tensor) -> int:
    return int(np.prod(tensor.shape, dtype=np.int64)) * _ELEMENT_BYTES.get(tensor.type, 4)


def peak_tensors(tflite_bytes: bytes) -> dict:
    """Where the activations peak: the op at which the tensors alive (computed, not constant)
    take the most bytes, with its largest input and its output (the pair an arena must hold
    at once). {"op", "index", "layer", "input_bytes", "output_bytes", "live_bytes"}."""
    graph = Graph(tflite_bytes)
    first, last = {}, {}
    for index in graph.inputs:
        first[index] = last[index] = -1
    for op in graph.ops:
        for index in op.inputs:
            if index >= 0 and graph.tensors[index].data is None:
                last[index] = op.index
        for index in op.outputs:
            first[index] = last[index] = op.index
    for index in graph.outputs:
        last[index] = len(graph.ops)
    best = None
    for op in graph.ops:
        live = sum(_tensor_bytes(graph.tensors[t]) for t in first if first[t] <= op.index <= last[t])
        if best is None or live > best[0]:
            best = (live, op)
    if best is None:
        return {}
    live, op = best
    inputs = [_tensor_bytes(graph.tensors[i]) for i in op.inputs if i >= 0 and graph.tensors[i].data is None]
    output = graph.tensors[op.outputs[0]]
    return {"op": op.name, "index": op.index, "layer": output.name.split(";")[0], "input_bytes": max(inputs, default=0),
            "output_bytes": _tensor_bytes(output), "live_bytes": int(live)}


def c_name(name: str) -> str:
    """A C identifier from a model name: [A-Za-z0-9_], not starting with a digit."""
    identifier = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or "model"
    return f"m_{identifier}" if identifier[0].isdigit() else identifier


def _camel(identifier: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in identifier.split("_") if part)


def micro_sources(tflite_bytes: bytes, name: str, arena_bytes: int | None) -> dict[str, str]:
    """{file name: text}: model_data.h / model_data.cc (the flatbuffer as a 16-byte aligned const
    array with its length, and the measured arena size) and micro_ops.h (a resolver that adds
    exactly the model's ops)."""
    ident = c_name(name)
    guard = f"SOFTEDGE_{ident.upper()}"
    ops = model_ops(tflite_bytes)
    missing = [op for op in ops if op not in MICRO_RESOLVER]
    if missing:
        raise ConfigError(f"TFLite Micro lacks op(s) {', '.join(missing)}: no resolver can be written for {name!r}.")
    arena_line = (f"// The smallest tensor arena with which TFLite Micro's host build (64-bit) allocates and\n"
                  f"// runs the model ({arena_bytes} bytes), rounded up to 16; a 32-bit build needs a little less.\n"
                  f"constexpr unsigned int k{_camel(ident)}TensorArenaSize = {-(-arena_bytes // 16) * 16};\n"
                  if arena_bytes else "// The tensor arena was not measured (no TFLite Micro runtime at export).\n")
    header = (f"// Generated by softedge: the model {name!r} for TensorFlow Lite Micro.\n"
              f"#ifndef {guard}_MODEL_DATA_H_\n#define {guard}_MODEL_DATA_H_\n\n"
              f"// The .tflite flatbuffer ({len(tflite_bytes)} bytes), 16-byte aligned as TFLite Micro requires.\n"
              f"extern const unsigned char g_{ident}_model_data[];\n"
              f"extern const unsigned int g_{ident}_model_data_len;\n\n{arena_line}\n"
              f"#endif  // {guard}_MODEL_DATA_H_\n")
    rows = [", ".join(f"0x{byte:02x}" for byte in tflite_bytes[start:start + 12])
            for start in range(0, len(tflite_bytes), 12)]
    source = (f'// Generated by softedge from the model {name!r}.\n#include "model_data.h"\n\n'
              f"alignas(16) const unsigned char g_{ident}_model_data[] = {{\n    "
              + ",\n    ".join(rows) + f"\n}};\nconst unsigned int g_{ident}_model_data_len = {len(tflite_bytes)};\n")
    adds = "\n".join(f"  if (resolver.{MICRO_RESOLVER[op]}() != kTfLiteOk) return kTfLiteError;" for op in ops)
    resolver = (f"// Generated by softedge: exactly the ops of the model {name!r}.\n"
                f"#ifndef {guard}_MICRO_OPS_H_\n#define {guard}_MICRO_OPS_H_\n\n"
                '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
                f"constexpr unsigned int k{_camel(ident)}OpCount = {len(ops)};\n"
                f"using {_camel(ident)}OpResolver = tflite::MicroMutableOpResolver<k{_camel(ident)}OpCount>;\n\n"
                f"// {', '.join(ops)}\n"
                f"inline TfLiteStatus Register{_camel(ident)}Ops({_camel(ident)}OpResolver& resolver) {{\n"
                f"{adds}\n  return kTfLiteOk;\n}}\n\n#endif  // {guard}_MICRO_OPS_H_\n")
    return {"model_data.h": header, "model_data.cc": source, "micro_ops.h": resolver}


def measure(tflite_bytes: bytes, sample: np.ndarray) -> dict:
    """Arena and flash of the micro model on this host's TFLite Micro:
    {"runs", "arena_bytes", "arena_recorded_bytes", "flash_bytes", "error"}; raises
    micro_check.MicroUnavailable when TFLite Micro is not installed."""
    micro_check.micro_runtime()
    try:
        arena = micro_check.smallest_arena(tflite_bytes, sample)
        recorded = micro_check.recorded_arena(tflite_bytes, sample, arena + micro_check.ARENA_ALIGNMENT)
    except RuntimeError as error:
        return {"runs": False, "error": str(error), "flash_bytes": len(tflite_bytes)}
    return {"runs": True, "arena_bytes": arena, "arena_recorded_bytes": recorded, "flash_bytes": len(tflite_bytes)}


def budget_failures(micro: dict, max_arena_kb: float | None, max_flash_kb: float | None) -> list[str]:
    """One message per budget exceeded (1 KB = 1024 bytes), naming by how much and, for the
    arena, the layer whose input and output tensors peak."""
    failures = []
    arena = micro.get("arena_bytes")
    if max_arena_kb is not None:
        if arena is None:
            failures.append(f"--max-arena-kb {max_arena_kb:g}: the arena was not measured ({micro.get('skipped') or micro.get('error')})")
        elif arena > max_arena_kb * 1024:
            peak = micro.get("peak") or {}
            failures.append(
                f"tensor arena {arena / 1024:.1f} KB exceeds --max-arena-kb {max_arena_kb:g} by "
                f"{(arena - max_arena_kb * 1024) / 1024:.1f} KB; the activations peak at layer {peak.get('layer')!r} "
                f"(op {peak.get('index')} {peak.get('op')}: input {peak.get('input_bytes')} + output "
                f"{peak.get('output_bytes')} bytes, {peak.get('live_bytes')} bytes live)")
    flash = micro.get("flash_bytes")
    if max_flash_kb is not None and flash is not None and flash > max_flash_kb * 1024:
        failures.append(f"model data {flash / 1024:.1f} KB of flash exceeds --max-flash-kb {max_flash_kb:g} by "
                        f"{(flash - max_flash_kb * 1024) / 1024:.1f} KB")
    return failures


def micro_stage(micro_bytes: bytes, name: str, sample: np.ndarray) -> tuple[dict, dict | None]:
    """(the report's "micro" section so far, the bundle's micro part or None) for the batch-1
    model: its ops (and any TFLite Micro lacks), where its activations peak, and, where TFLite
    Micro is installed, its arena. `sample`: one device input (int8), without the batch."""
    section = {"ops": model_ops(micro_bytes), "flash_bytes": len(micro_bytes), "peak": peak_tensors(micro_bytes)}
    missing = missing_ops(micro_bytes)
    if missing:
        section.update(runs=False, missing_ops=missing,
                       error=f"TFLite Micro lacks op(s) {', '.join(sorted({row['op'] for row in missing}))}")
        return section, None
    try:
        section.update(measure(micro_bytes, sample))
    except micro_check.MicroUnavailable as error:
        section.update(runs=None, skipped=str(error))
    if section["runs"] is False:
        return section, None
    arena = section.get("arena_bytes")
    bundle_part = {"model": micro_bytes, "files": micro_sources(micro_bytes, name, arena),
                   "manifest": {key: section.get(key) for key in ("ops", "arena_bytes", "arena_recorded_bytes", "peak")}
                   | {"resolver": [MICRO_RESOLVER[op] for op in section["ops"]]}}
    return section, bundle_part
