"""What an op kernel of the integer reference sees: the tensors, the op, and the `Context` that
hands it its inputs, its options and its kernel family's rules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import fixed_point as fp
from .rules import FamilyRules

__all__ = ["Context", "OpInfo", "TensorInfo", "UnsupportedOpError"]


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


class Context:
    """What an op kernel sees: its inputs' values and tensors, its options, and the rules of the
    kernel family it computes as (`rules.FamilyRules`)."""

    def __init__(self, graph, op: OpInfo, values: dict, rules: FamilyRules):
        self.graph, self.op, self.values, self.rules = graph, op, values, rules
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

    def output_bounds(self, i: int = 0, ties_even: bool = False) -> tuple[int, int]:
        """The fused activation's int8 range: TFLite's (ties away from zero), or with
        `ties_even` XNNPACK's (lrintf)."""
        scale, zero_point = self.output(i).grid()
        try:
            return fp.activation_bounds(self.activation(), scale, zero_point, ties="even" if ties_even else "away")
        except ValueError as error:
            raise UnsupportedOpError(str(error)) from None

    def require_int8(self, *indices: int) -> None:
        for i in indices:
            tensor = self.tensor(i)
            if tensor.type not in ("int8", "int4") or not tensor.quantized:
                raise UnsupportedOpError(f"input {i} (tensor {tensor.name!r}) is {tensor.type}, not quantized int8")
