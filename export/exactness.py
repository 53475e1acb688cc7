"""The last link of the chain, checked bit for bit: LiteRT's integers vs the integer reference.

For each kernel family this machine computes (`reference.probed_families()`: reference, builtin
and xnnpack on x86-64; reference, builtin-arm64 and xnnpack-arm64 on aarch64), the runtime runs
the device inputs with that family's kernels and the reference computes what they should produce:

    reference, builtin   every tensor an op produces (LiteRT keeps them with preserve-all-tensors)
    xnnpack              the outputs (a delegate keeps no intermediate tensors)

`compare_families` returns, per family, {"outputs_equal", "mismatched_elements",
"tensors_compared", "first_mismatch"} (and "runtime_error" where LiteRT cannot load the model
with those kernels: BUILTIN_REF has no int4 DEPTHWISE_CONV_2D, for one), plus the reference's
values for the callers that need intermediates or expected outputs.
"""

from __future__ import annotations

import numpy as np

from export.device.check import BundleError, invoke, load_interpreter
from export.device.families import KernelFamily
from export.device.reference import Graph, probed_families

__all__ = ["compare_families", "compare_values", "compare_with_family", "compared_indices", "runtime_tensors"]


def runtime_tensors(tflite_bytes: bytes, device_inputs: np.ndarray, kernels: str, indices) -> dict[int, np.ndarray]:
    """LiteRT's values of `indices` after one batched invoke with `kernels`."""
    interpreter = load_interpreter(tflite_bytes, kernels, preserve_all_tensors=kernels != "xnnpack")
    invoke(interpreter, device_inputs)
    return {index: np.array(interpreter.get_tensor(index)) for index in indices}


def compared_indices(graph: Graph, kernels: str) -> list[int]:
    """The tensors LiteRT's `kernels` keep after an invoke: every op output, or with XNNPACK
    (a delegate keeps no intermediates) the graph's outputs."""
    if kernels == "xnnpack":
        return list(graph.outputs)
    return [index for op in graph.ops for index in op.outputs]


def compare_families(tflite_bytes: bytes, device_inputs: np.ndarray, families=None,
                     graph: Graph | None = None) -> tuple[dict, dict]:
    """({family: comparison}, {family: reference values}); see the module docstring."""
    graph = graph or Graph(tflite_bytes)
    comparisons = {}
    values_by_family = graph.run_families(device_inputs, [KernelFamily(f) for f in (probed_families() if families is None else families)])
    for family, values in values_by_family.items():
        indices = compared_indices(graph, family.kernels)
        try:
            actual = runtime_tensors(tflite_bytes, device_inputs, family.kernels, indices)
        except BundleError as error:
            comparisons[family] = {"outputs_equal": None, "mismatched_elements": None, "tensors_compared": 0,
                                    "first_mismatch": None, "runtime_error": str(error).splitlines()[0]}
            continue
        comparisons[family] = compare_values(graph, values, actual, indices)
    return comparisons, values_by_family


def compare_with_family(graph: Graph, device_inputs, actual: dict, family) -> dict:
    """A runtime's tensors `actual` (every tensor its kernels keep, from this machine or an
    emulated device) against what `family` computes for `device_inputs`; see `compare_values`."""
    family = KernelFamily(family)
    return compare_values(graph, graph.run(device_inputs, family), actual, compared_indices(graph, family.kernels))


def compare_values(graph: Graph, expected_values: dict, actual: dict, indices) -> dict:
    """The comparison of a runtime's tensors `actual` with the reference's `expected_values` at
    `indices`: {"outputs_equal", "mismatched_elements", "output_mismatched_elements",
    "tensors_compared", "first_mismatch"} (a tensor of another shape counts every element)."""
    mismatched, output_mismatched, first = 0, 0, None
    for index in indices:
        expected = np.asarray(expected_values[index])
        got = np.asarray(actual[index])
        count = int(max(got.size, expected.size)) if got.shape != expected.shape else int(np.sum(got != expected))
        mismatched += count
        output_mismatched += count if index in graph.outputs else 0
        if count and first is None:
            first = {"tensor": graph.tensors[index].name[:200], "op": _producer_name(graph, index), "elements": count}
    return {"outputs_equal": output_mismatched == 0, "mismatched_elements": int(mismatched),
            "output_mismatched_elements": int(output_mismatched), "tensors_compared": len(indices), "first_mismatch": first}


def _producer_name(graph: Graph, index: int) -> str:
    op = graph.op_producing(index)
    return f"{op.index} {op.name}" if op is not None else "graph input"
