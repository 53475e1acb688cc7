"""`ExactModel`: an int8 .tflite graph computed in TensorFlow exactly as one kernel family
computes it (see the package docstring)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from export.device.families import KernelFamily
from export.device.reference import Graph, rules_of
from export.device.reference.context import Context, UnsupportedOpError
from export.device.reference.ops import OPS
from export.exact.kernels import KERNELS, ExactContext, NotInTensorFlow
from export.exact.tables import table_op, tabulates

__all__ = ["ExactModel"]

_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D")


class ExactModel:
    """The graph of `tflite_bytes` (or a reference `Graph`) as TensorFlow ops computing what the
    kernel family `family` computes, batched: `run(device_inputs)` returns what
    `Graph.run(device_inputs, family)` returns, every tensor by index, equal element for element.

    `in_tensorflow` / `in_numpy` name the ops computed by TensorFlow kernels (convolutions,
    pools, MEAN, moves, quantization, tables) and those handed to the numpy reference's kernel
    inside the TensorFlow graph (SOFTMAX, and what TensorFlow's kernels do not take).

    `compiled`: XLA fuses each requantization (one loop over the int64 accumulators instead of a
    pass per operation), or the whole graph where `whole_graph_compiles`; compiled on the first
    call for each batch shape."""

    def __init__(self, tflite_bytes_or_graph, family=KernelFamily.XNNPACK, compiled: bool = False):
        self.graph = tflite_bytes_or_graph if isinstance(tflite_bytes_or_graph, Graph) else Graph(tflite_bytes_or_graph)
        self.rules = rules_of(family)   # (ValueError naming the known families)
        self.family = self.rules.family
        self.compiled = compiled
        self.in_tensorflow: list[str] = []
        self.in_numpy: list[str] = []
        self._signature = [tf.TensorSpec([None, *self.graph.tensors[i].shape[1:]], tf.as_dtype(self.graph.tensors[i].type))
                           for i in self.graph.inputs]
        self._concrete = {}   # "tensors" (every tensor) or "outputs" (the graph's outputs) -> concrete function

    def run(self, device_inputs) -> dict[int, np.ndarray]:
        """Every tensor the graph computes (inputs and op outputs), by tensor index, for
        `device_inputs` (one array or one per graph input, as the device receives them)."""
        computed = self._call("tensors", self._checked(device_inputs))
        return {int(key): value.numpy() for key, value in computed.items()}

    def outputs(self, device_inputs) -> list[np.ndarray]:
        """The graph's outputs only (in `graph.outputs` order), as the runtime returns them: the
        same values as `run`'s at those indices, without handing every intermediate tensor back
        (the host's fast path: validation, benchmarks)."""
        computed = self._call("outputs", self._checked(device_inputs))
        return [computed[str(index)].numpy() for index in self.graph.outputs]

    def _checked(self, device_inputs) -> list[np.ndarray]:
        arrays = [device_inputs] if isinstance(device_inputs, np.ndarray) else list(device_inputs)
        if len(arrays) != len(self.graph.inputs):
            raise ValueError(f"The model has {len(self.graph.inputs)} input(s); got {len(arrays)} array(s).")
        arrays = [np.asarray(array) for array in arrays]
        for index, array in zip(self.graph.inputs, arrays, strict=True):
            tensor = self.graph.tensors[index]
            if array.dtype != np.dtype(tensor.type) or tuple(array.shape[1:]) != tuple(tensor.shape[1:]) \
                    or array.ndim != len(tensor.shape):
                raise ValueError(f"Input {tensor.name!r} takes {tensor.type} batches of {tuple(tensor.shape[1:])}; "
                                 f"got {array.dtype} of shape {array.shape}.")
        return arrays

    def _call(self, which: str, arrays: list[np.ndarray]) -> dict:
        if which not in self._concrete:
            concrete = self._trace(which, whole_graph_xla=False)
            if self.compiled and self.whole_graph_compiles():
                concrete = self._trace(which, whole_graph_xla=True)
            self._concrete[which] = concrete
        return self._concrete[which](*[tf.convert_to_tensor(a) for a in arrays])

    def _trace(self, which: str, whole_graph_xla: bool):
        """The concrete function of `which` ("tensors": every tensor; "outputs": the graph's),
        compiled whole with XLA, or (with `compiled`) each requantization alone."""
        keep = None if which == "tensors" else {str(index) for index in self.graph.outputs}
        each_op_compiled = self.compiled and not whole_graph_xla

        def compute(*inputs):
            values = self._compute(inputs, each_op_compiled)
            return values if keep is None else {key: values[key] for key in keep}

        return tf.function(compute, input_signature=self._signature, autograph=False,
                           jit_compile=whole_graph_xla).get_concrete_function()

    def whole_graph_compiles(self) -> bool:
        """Whether `compiled` compiles the whole graph with XLA, not each requantization alone:
        where every op runs in TensorFlow (XLA takes no tf.numpy_function) and none is a
        convolution (XLA's CPU convolutions are slower than TensorFlow's oneDNN ones: the digits
        CNN ran several times slower compiled whole, in a one-off probe). Read after the first
        trace. `make bench-reference` (W4, 1000 inputs): the FC autoencoder
        1.48x LiteRT per requantization, 1.32-1.35x whole (two runs; noisy at 2 ms)."""
        return not self.in_numpy and not any(op.name in _CONVOLUTIONS for op in self.graph.ops)

    def _compute(self, inputs, each_op_compiled: bool) -> dict[str, tf.Tensor]:
        values = dict(zip(self.graph.inputs, inputs, strict=True))
        self.in_tensorflow, self.in_numpy = [], []
        for op in self.graph.ops:
            context = ExactContext(self.graph, op, {}, self.rules, each_op_compiled)
            op_inputs = [values.get(index) if index >= 0 else None for index in op.inputs]
            if op.name not in OPS:
                raise UnsupportedOpError(f"op {op.index} {op.name} (output tensor {self._out_name(op)!r}) is not "
                                         "executed by the integer reference")
            try:
                results = self._op(context, op_inputs)
            except UnsupportedOpError as error:
                raise UnsupportedOpError(f"op {op.index} {op.name} (output tensor {self._out_name(op)!r}): {error}") from None
            for index, result in zip(op.outputs, results, strict=True):
                values[index] = result
        return {str(index): value for index, value in values.items()}

    def _op(self, context: Context, inputs) -> list:
        name = context.op.name
        if name in KERNELS:
            try:
                results = KERNELS[name](context, inputs)
                self.in_tensorflow.append(name)
                return results
            except NotInTensorFlow:
                pass
        if tabulates(context):
            self.in_tensorflow.append(name)
            return table_op(context, inputs)
        self.in_numpy.append(name)
        return self._numpy_op(context, inputs)

    def _numpy_op(self, context: Context, inputs) -> list:
        """The numpy reference's kernel, run inside the TensorFlow graph."""
        op, graph = context.op, self.graph
        computed = [(index, tensor) for index, tensor in zip(op.inputs, inputs, strict=True) if tensor is not None]
        out_types = [tf.as_dtype(graph.tensors[index].type) for index in op.outputs]

        def kernel(*arrays):
            values = {index: np.asarray(array) for (index, _), array in zip(computed, arrays, strict=True)}
            results = OPS[op.name](Context(graph, op, values, self.rules))
            return [np.asarray(result, dtype.as_numpy_dtype) for result, dtype in zip(results, out_types, strict=True)]

        results = tf.numpy_function(kernel, [tensor for _, tensor in computed], out_types, stateful=False)
        for index, result in zip(op.outputs, results, strict=True):
            shape = graph.tensors[index].shape
            if len(shape) >= 2 and shape[0] == 1 and graph.tensors[index].type in ("int8", "float32"):
                result.set_shape([None, *shape[1:]])
        return list(results)

    def _out_name(self, op) -> str:
        return self.graph.tensors[op.outputs[0]].name if op.outputs else "?"
