"""`Graph`: an int8 .tflite flatbuffer read with LiteRT's generated schema, and run op by op."""

from __future__ import annotations

import numpy as np

from .context import Context, OpInfo, TensorInfo, UnsupportedOpError
from .ops import OPS
from .rules import rules_of

__all__ = ["Graph"]


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


class _ReadRules:
    """A family's rules that record which fields an op reads (`Graph.run_families` shares an op's
    outputs between families that agree in those fields)."""

    def __init__(self, rules):
        self._rules, self.read = rules, {}

    def __getattr__(self, name: str):
        value = getattr(self._rules, name)
        self.read[name] = value
        return value


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
        """Every tensor the graph computes (inputs and op outputs), by tensor index, as the kernel
        family `kernels` (a `KernelFamily` or its name) computes them.

        `device_inputs`: one array, or one per graph input, exactly as the device receives them
        (int8 for an int8 input); the leading dimension is the batch.
        """
        return self.run_families(device_inputs, [kernels])[kernels]

    def run_families(self, device_inputs, families) -> dict:
        """{family: what `run` computes as that family}, each op computed once for the families
        whose inputs to it are the same arrays and whose rules agree in every field it reads
        (xnnpack and xnnpack-arm64 share every op but SOFTMAX and int4 convolutions; builtin and
        builtin-arm64 every op before the first that reads a rule they differ in)."""
        rules = {family: rules_of(family) for family in families}
        arrays = [device_inputs] if isinstance(device_inputs, np.ndarray) else list(device_inputs)
        if len(arrays) != len(self.inputs):
            raise ValueError(f"The model has {len(self.inputs)} input(s); got {len(arrays)} array(s).")
        start = {index: np.asarray(array) for index, array in zip(self.inputs, arrays, strict=True)}
        values = {family: dict(start) for family in families}
        for op in self.ops:
            kernel = OPS.get(op.name)
            if kernel is None:
                raise UnsupportedOpError(f"op {op.index} {op.name} (output tensor {self._out_name(op)!r}) is not "
                                         "executed by the integer reference")
            computed = []  # (the input arrays, the rule fields read and their values, the outputs)
            for family in families:
                inputs = [values[family].get(index) for index in op.inputs]
                results = next((outputs for arrays, read, outputs in computed
                                if all(a is b for a, b in zip(arrays, inputs, strict=True))
                                and all(getattr(rules[family], name) == value for name, value in read.items())), None)
                if results is None:
                    recorded = _ReadRules(rules[family])
                    try:
                        results = kernel(Context(self, op, values[family], recorded))
                    except UnsupportedOpError as error:
                        raise UnsupportedOpError(f"op {op.index} {op.name} (output tensor {self._out_name(op)!r}): {error}") from None
                    computed.append((inputs, recorded.read, results))
                for index, result in zip(op.outputs, results, strict=True):
                    values[family][index] = result
        return values

    def _out_name(self, op: OpInfo) -> str:
        return self.tensors[op.outputs[0]].name if op.outputs else "?"
