"""The last link of the chain, checked bit for bit: LiteRT's integers vs the integer reference.

For each kernel family (`export.device.reference.KERNEL_FAMILIES`), the runtime runs the
device inputs with those kernels and the reference computes what they should produce:

    reference, builtin   every tensor an op produces (LiteRT keeps them with preserve-all-tensors)
    xnnpack              the outputs (a delegate keeps no intermediate tensors)

`compare_families` returns, per family, {"outputs_equal", "mismatched_elements",
"tensors_compared", "first_mismatch"} (and "runtime_error" where LiteRT cannot load the model
with those kernels: BUILTIN_REF has no int4 DEPTHWISE_CONV_2D, for one), plus the reference's
values for the callers that need intermediates or expected outputs.
"""

from __future__ import annotations

import numpy as np

from export.device.check import BundleError, load_interpreter
from export.device.reference import KERNEL_FAMILIES, Graph

__all__ = ["compare_families", "runtime_tensors"]


def runtime_tensors(tflite_bytes: bytes, device_inputs: np.ndarray, kernels: str, indices) -> dict[int, np.ndarray]:
    """LiteRT's values of `indices` after one batched invoke with `kernels`."""
    interpreter = load_interpreter(tflite_bytes, kernels, preserve_all_tensors=kernels != "xnnpack")
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"]) != tuple(device_inputs.shape):
        interpreter.resize_tensor_input(detail["index"], list(device_inputs.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], device_inputs)
    interpreter.invoke()
    return {index: np.array(interpreter.get_tensor(index)) for index in indices}


def _compared_indices(graph: Graph, kernels: str) -> list[int]:
    if kernels == "xnnpack":
        return list(graph.outputs)
    return [index for op in graph.ops for index in op.outputs]


def compare_families(tflite_bytes: bytes, device_inputs: np.ndarray, families=KERNEL_FAMILIES,
                     graph: Graph | None = None) -> tuple[dict, dict]:
    """({family: comparison}, {family: reference values}); see the module docstring."""
    graph = graph or Graph(tflite_bytes)
    comparisons, values_by_family = {}, {}
    for kernels in families:
        values = graph.run(device_inputs, kernels)
        values_by_family[kernels] = values
        indices = _compared_indices(graph, kernels)
        try:
            actual = runtime_tensors(tflite_bytes, device_inputs, kernels, indices)
        except BundleError as error:
            comparisons[kernels] = {"outputs_equal": None, "mismatched_elements": None, "tensors_compared": 0,
                                    "first_mismatch": None, "runtime_error": str(error).splitlines()[0]}
            continue
        mismatched, output_mismatched, first = 0, 0, None
        for index in indices:
            expected = np.asarray(values[index])
            got = actual[index]
            if got.shape != expected.shape:
                count = int(max(got.size, expected.size))
            else:
                count = int(np.sum(got != expected))
            mismatched += count
            output_mismatched += count if index in graph.outputs else 0
            if count and first is None:
                first = {"tensor": graph.tensors[index].name[:200], "op": _producer_name(graph, index),
                         "elements": count}
        comparisons[kernels] = {"outputs_equal": output_mismatched == 0, "mismatched_elements": int(mismatched),
                                "output_mismatched_elements": int(output_mismatched),
                                "tensors_compared": len(indices), "first_mismatch": first}
    return comparisons, values_by_family


def _producer_name(graph: Graph, index: int) -> str:
    op = graph.op_producing(index)
    return f"{op.index} {op.name}" if op is not None else "graph input"
