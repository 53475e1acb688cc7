"""Layers left in float, as the converter writes them and as softedge makes them run.

The converter names every TFLite tensor after the Keras ops fused into it, so a tensor's owning
layers can be read off its name (`layer_scopes`). A layer left in float (`unsupported="float"`
or an override) should compute in float between the DEQUANTIZE of its int8 input and the
QUANTIZE of its trained output grid. The converter does not always leave it so: an op of the
layer that has an int8 kernel and reads the int8 input directly is quantized on its input's grid
and dequantized at once. LayerNormalization is the case met: its mean, an int8 MEAN on the
input's grid (the mean rounded to a whole input step), then a DEQUANTIZE, while the rest of the
layer is float; the layer's output was up to 3 steps off the float layer trained.

`run_in_float(tflite_bytes, layer_names)` rewrites every such op to read the float version of its
input and write its float output directly (its DEQUANTIZE removed), so the layer runs in float
entirely, as trained; `float_ops(tflite_bytes, layer_names)` lists, per layer left in float,
every op that computes its output, int8 ones included.
"""

from __future__ import annotations

import re

from export.tflite_file import read_model, write_model

__all__ = ["float_ops", "layer_scopes", "run_in_float"]


def layer_scopes(tensor_name: str, layer_names) -> set:
    """The Keras layers whose ops were fused into a TFLite tensor: the converter names the tensor
    after those ops, ";"-joined ("model_1/dense_a_1/MatMul;model_1/relu6_a_1/Relu6" -> dense_a,
    relu6_a; Keras 3 suffixes each layer scope with "_1")."""
    owners = set()
    for segment in tensor_name.split(";"):
        for part in segment.split("/")[:-1]:
            for candidate in (re.sub(r"_\d+$", "", part), part):
                if candidate in layer_names:
                    owners.add(candidate)
                    break
    return owners


def _first_owner(tensor_name: str, layer_names) -> str | None:
    """The layer of the first op fused into a tensor (its name's first segment)."""
    owners = layer_scopes(tensor_name.split(";")[0], layer_names)
    return next(iter(sorted(owners)), None)


def _float_layers(graph, layer_names) -> set:
    """The layers that own an op computing in float (a float32 output; DEQUANTIZE excluded)."""
    layers = set()
    for op in graph.ops:
        outputs = [graph.tensors[i] for i in op.outputs]
        if op.name not in ("DEQUANTIZE", "QUANTIZE") and any(t.type == "float32" for t in outputs):
            owner = _first_owner(outputs[0].name, layer_names)
            if owner is not None:
                layers.add(owner)
    return layers


def float_ops(tflite_bytes: bytes, layer_names=()) -> list[dict]:
    """The ops of a .tflite that compute in float: [{"op", "index", "tensor", "weight_bytes",
    "type", "layer"}].

    An op computes in float when an output is float32 (DEQUANTIZE, the int8 -> float boundary
    itself, is not counted); its weight bytes are the float32 constants it reads. In an int8
    export each one belongs to a layer left in float: it runs on the CPU's float kernels, and
    its weights are stored as float32. With the model's `layer_names`, each row names its layer,
    and an int8 op of such a layer (one the converter quantized inside it) is listed too, with
    "type": "int8".
    """
    from export.device.reference import Graph

    graph = Graph(tflite_bytes)
    float_layers = _float_layers(graph, layer_names) if layer_names else set()
    rows = []
    for op in graph.ops:
        if op.name == "DEQUANTIZE":
            continue
        outputs = [graph.tensors[i] for i in op.outputs]
        owner = _first_owner(outputs[0].name, layer_names) if layer_names and outputs else None
        computes_float = any(t.type == "float32" for t in outputs)
        inside = op.name != "QUANTIZE" and owner in float_layers
        if not computes_float and not inside:
            continue
        constants = [graph.tensors[i] for i in op.inputs if i >= 0 and graph.tensors[i].data is not None]
        rows.append({"op": op.name, "index": op.index, "tensor": outputs[0].name,
                     "weight_bytes": int(sum(t.data.nbytes for t in constants if t.type == "float32")),
                     "type": "float32" if computes_float else outputs[0].type, "layer": owner})
    return rows


def run_in_float(tflite_bytes: bytes, layer_names) -> bytes:
    """The .tflite with every int8 op of a layer left in float moved to float (see the module
    docstring): an op whose only readers are DEQUANTIZE ops, whose int8 inputs each have a
    DEQUANTIZE already, reads those float tensors and writes the float tensor its first
    DEQUANTIZE wrote; the DEQUANTIZE ops go. Unchanged bytes when there is none."""
    from export.device.reference import Graph

    graph = Graph(tflite_bytes)
    float_layers = _float_layers(graph, layer_names)
    readers: dict[int, list] = {}
    for op in graph.ops:
        for index in op.inputs:
            readers.setdefault(index, []).append(op)
    dequantized = {op.inputs[0]: op.outputs[0] for op in graph.ops if op.name == "DEQUANTIZE"}
    moves = []
    for op in graph.ops:
        if op.name in ("QUANTIZE", "DEQUANTIZE") or len(op.outputs) != 1:
            continue
        output = graph.tensors[op.outputs[0]]
        if output.type != "int8" or _first_owner(output.name, layer_names) not in float_layers:
            continue
        consumers = readers.get(op.outputs[0], [])
        quantized_inputs = [i for i in op.inputs if i >= 0 and graph.tensors[i].type == "int8" and graph.tensors[i].data is None]
        if consumers and all(c.name == "DEQUANTIZE" for c in consumers) and op.outputs[0] not in graph.outputs \
                and all(i in dequantized for i in quantized_inputs):
            moves.append((op.index, {i: dequantized[i] for i in quantized_inputs}, [c.index for c in consumers]))
    if not moves:
        return tflite_bytes
    model = read_model(tflite_bytes)
    subgraph = model.subgraphs[0]
    operators = subgraph.operators
    removed = set()
    for index, float_inputs, dequantizes in moves:
        operator = operators[index]
        operator.inputs = [float_inputs.get(int(i), int(i)) for i in operator.inputs]
        kept = int(operators[dequantizes[0]].outputs[0])
        operator.outputs = [kept]
        for other in dequantizes[1:]:  # every reader of another DEQUANTIZE's output reads the kept one
            dropped = int(operators[other].outputs[0])
            for reader in operators:
                reader.inputs = [kept if int(i) == dropped else int(i) for i in reader.inputs]
            subgraph.outputs = [kept if int(i) == dropped else int(i) for i in subgraph.outputs]
        removed.update(dequantizes)
    subgraph.operators = [op for i, op in enumerate(operators) if i not in removed]
    return write_model(model)
