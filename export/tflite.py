"""convert(model, target) -> .tflite bytes, and reading the stored integers back.

Targets:
    int8          full integer: int8 weights and activations; I/O int8 (default) or float.
                  A hard softedge model carries its own ranges (fake-quant ops), so no
                  representative dataset is used; a plain float model is quantized
                  post-training from `representative_data` (the PTQ baseline).
    int4-weights  as int8, with the weights of <= 4-bit layers stored packed as int4.
    dynamic       int8 weights, float activations (dynamic-range quantization).
    float16       float16 weights.
    float32       no quantization.
Ops are restricted to TFLite builtins (no Flex/SELECT_TF_OPS): an op a device cannot run
fails here, not on the device.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from export.float_layers import run_in_float
from export.hard_layers import HARD_LAYERS, FakeQuant
from export.preflight import check_model_finite, check_tflite
from export.targets import Target
from export.tflite_file import read_model, schema
from toolkit.errors import ConfigError
from toolkit.layer_types import layer_type_named

__all__ = ["TARGETS", "check_runnable", "convert", "convert_saved_model", "expected_weights",
           "is_hard_model", "weight_mismatches", "weight_tensors"]

TARGETS = tuple(Target.names(converter_only=True))  # what the converter is asked for


def is_hard_model(model: keras.Model) -> bool:
    """A model that carries its own quantization ranges: softedge hard, or tfmot-quantized."""
    from toolkit.tfmot_bridge import is_tfmot_model

    return any(isinstance(layer, (FakeQuant, *HARD_LAYERS)) for layer in model.layers) or is_tfmot_model(model)


def expected_weights(model) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(layer name, integers in TFLite's layout, steps) of every quantized kernel of a hard model."""
    from toolkit.tfmot_bridge import is_tfmot_model, kernel_integers

    if is_tfmot_model(model):
        return [(name, layer_type_named(kind).tflite_layout(q), steps) for name, kind, q, steps in kernel_integers(model)]
    return [(layer.name, layer.layer_type.tflite_layout_of_hard(layer.integers()),
             np.asarray(layer.kernel_scale, np.float64).reshape(-1))
            for layer in model.layers if isinstance(layer, HARD_LAYERS)]


def _rebuilt(model: keras.Model, storage_bits: int | None = None, batch_size: int | None = None) -> keras.Model:
    """The model rebuilt layer by layer with its weights: the hard kernels of <= 4 bits stored in
    `storage_bits`, and/or the input fixed at `batch_size` samples (a static shape: no
    SHAPE / STRIDED_SLICE / PACK ops for a dynamic batch, which a microcontroller does not need)."""
    def clone_layer(layer):
        config = layer.get_config()
        if storage_bits and isinstance(layer, HARD_LAYERS) and layer.weight_bits <= 4:
            config["storage_bits"] = storage_bits
        return layer.__class__.from_config(config)

    inputs = {}
    if batch_size is not None:
        if len(model.inputs) != 1:
            raise ConfigError(f"Model {model.name!r} has {len(model.inputs)} inputs; a fixed batch size needs one.")
        inputs["input_tensors"] = keras.Input(batch_shape=(batch_size, *model.inputs[0].shape[1:]))
    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, **inputs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"Model {model.name!r} cannot be rebuilt for conversion: {error}") from error
    sources = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    targets = [layer for layer in clone.layers if not isinstance(layer, keras.layers.InputLayer)]
    for source, target in zip(sources, targets, strict=True):
        if source.weights:
            target.set_weights(source.get_weights())
    return clone


def _representative(data, count: int = 200):
    x = np.asarray(data, np.float32)[:count]

    def generate():
        for row in x:
            yield [row[None]]

    return generate


def _check_target(target: str, io: str) -> None:
    if target not in TARGETS:
        raise ConfigError(f"Unknown target {target!r}. Expected one of: {', '.join(TARGETS)}.")
    if io not in ("int8", "float"):
        raise ConfigError(f"Expected io 'int8' or 'float'. Received: io={io!r}")


def _configure(converter, target: str, io: str, carries_ranges: bool, representative_data, name: str):
    """Sets a converter up for `target`: builtin ops only; for int8, either the model's own
    fake-quant ranges or post-training quantization from `representative_data`."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if target == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if target == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if not Target(target).integer:
        return
    if not carries_ranges:
        if representative_data is None:
            raise ConfigError(f"{name} is a float model: int8 post-training quantization needs representative data.")
        converter.representative_dataset = _representative(representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def _check_recurrent_layers(model: keras.Model) -> None:
    """A rolled LSTM/GRU/RNN becomes a TensorList loop that the TFLite converter refuses with an
    MLIR dump ("'tf.TensorListReserve' op requires element_shape to be static") naming no layer."""
    for layer in model.layers:
        cell_owner = getattr(layer, "forward_layer", layer)  # Bidirectional wraps two RNNs
        if isinstance(cell_owner, keras.layers.RNN) and not cell_owner.unroll:
            raise ConfigError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is a rolled recurrent layer, which the TFLite converter "
                f"cannot convert. Rebuild it with unroll=True and a fixed sequence length (keras.Input((steps, features))) "
                "and copy its weights; it then converts (in float, between int8 tensors).")


def convert(model: keras.Model, target: str = "int8", io: str = "int8", representative_data=None,
            batch_size: int | None = None) -> bytes:
    """Converts a hard softedge model (or a plain float Keras 3 model) to TFLite bytes.

    `batch_size`: None keeps the batch dimension dynamic (LiteRT resizes it); 1 fixes it, as a
    microcontroller runs it (TFLite Micro does not resize tensors)."""
    _check_target(target, io)
    _check_recurrent_layers(model)
    check_model_finite(model)
    hard = is_hard_model(model)
    if target == Target.INT4_WEIGHTS and not hard:
        raise ConfigError("Target 'int4-weights' needs a hard softedge model (export.harden).")
    if target == Target.INT4_WEIGHTS or batch_size is not None:
        model = _rebuilt(model, 4 if target == Target.INT4_WEIGHTS else None, batch_size)
    with quiet_converter():  # from_keras_model exports a SavedModel and prints about it
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    _configure(converter, target, io, hard, representative_data, f"Model {model.name!r}")
    tflite_bytes = run_converter(converter, f"{model.name!r} to {target!r}")
    if hard:  # a layer left in float computes in float entirely, as it trained (export.float_layers)
        tflite_bytes = run_in_float(tflite_bytes, {layer.name for layer in model.layers})
    check_runnable(tflite_bytes)
    return tflite_bytes


def check_runnable(tflite_bytes: bytes) -> None:
    """Raises ConfigError for a model the runtimes abort on (rather than let a later LiteRT /
    TFLite Micro call kill the process): a non-finite or non-positive scale
    (`export.preflight.check_tflite`), or a SOFTMAX whose input scale s has beta s 2^26 <= 1,
    the result of a calibrated range that collapsed to about zero."""
    from export.device.reference import softmax_input_multiplier

    graph = check_tflite(tflite_bytes, "the converted model")
    for op in graph.ops:
        if op.name != "SOFTMAX" or not graph.tensors[op.inputs[0]].quantized:
            continue
        source = graph.tensors[op.inputs[0]]
        beta = float(getattr(op.options, "beta", 1.0))
        if softmax_input_multiplier(beta, float(source.scale[0])) <= 1.0:
            raise ConfigError(
                f"The softmax input {source.name.split(';')[0]!r} has the int8 scale {float(source.scale[0]):.3g}: its "
                "calibrated range is (almost) zero, and TFLite's int8 SOFTMAX aborts the process below 2^-26. "
                "Calibrate or train on data that makes these logits vary.")


def convert_saved_model(path, target: str = "int8", io: str = "int8", representative_data=None) -> bytes:
    """Converts a SavedModel directory (a float model: int8 is post-training quantization)."""
    _check_target(target, io)
    if target == Target.INT4_WEIGHTS:
        raise ConfigError("Target 'int4-weights' needs a hard softedge model, not a SavedModel.")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
    _configure(converter, target, io, False, representative_data, f"SavedModel {path}")
    tflite_bytes = run_converter(converter, f"SavedModel {path} to {target!r}")
    check_runnable(tflite_bytes)
    return tflite_bytes


@contextlib.contextmanager
def quiet_converter():
    """Keeps the converter's chatter off stdout (which --json output owns) and silences the
    warning that a model carrying its own ranges (fake-quant ops) always triggers."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        yield


def run_converter(converter, what: str) -> bytes:
    """converter.convert(), quietly; failures name `what`."""
    try:
        with quiet_converter():
            return bytes(converter.convert())
    except Exception as error:  # the converter raises many types; name the model and target
        raise ConfigError(f"TFLite conversion of {what} failed: {error}") from error


def weight_tensors(tflite_bytes: bytes) -> list[dict]:
    """The weight input of every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op, in op order.

    Each: {"op", "name", "ints" (as stored), "scales", "dtype" (int8 / int4 per the flatbuffer)}.
    """
    from export.device.check import load_interpreter

    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as handle:
        handle.write(tflite_bytes)
        path = handle.name
    try:
        interpreter = load_interpreter(path, "builtin")  # weights are constants: readable without running
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        stored_types = _flatbuffer_tensor_types(tflite_bytes)
        result = []
        for op in interpreter._get_ops_details():
            if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                continue
            index = int(op["inputs"][1])
            detail = details[index]
            result.append({
                "op": op["op_name"],
                "name": detail["name"],
                "ints": np.array(interpreter.get_tensor(index)),
                "scales": np.array(detail["quantization_parameters"]["scales"]),
                "dtype": stored_types.get(index, str(detail["dtype"])),
            })
        return result
    finally:
        os.unlink(path)


def _flatbuffer_tensor_types(tflite_bytes: bytes) -> dict[int, str]:
    """tensor index -> the stored type name (INT4 shows only here; the interpreter says int8)."""
    model = read_model(tflite_bytes)
    names = {value: name for name, value in vars(schema().TensorType).items() if not name.startswith("_")}
    return {i: names.get(t.type, str(t.type)).lower() for i, t in enumerate(model.subgraphs[0].tensors)}


def weight_mismatches(hard_model: keras.Model, tflite_bytes: bytes) -> list[str]:
    """Every hard kernel layer whose trained integers and steps are not stored as-is.

    For each layer, some CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weight tensor must hold
    exactly its integers (in TFLite's layout) with its steps (relative 1e-6). Empty: exact.
    """
    stored = weight_tensors(tflite_bytes)
    expected_rows = expected_weights(hard_model)
    if not expected_rows:
        return [f"model {hard_model.name!r} has no softedge-quantized kernel: nothing to compare, exactness unproven"]
    problems = []
    for name, expected, scale in expected_rows:
        same_ints = [t for t in stored if t["ints"].shape == expected.shape and np.array_equal(t["ints"], expected)]
        if not same_ints:
            near = [t for t in stored if t["ints"].shape == expected.shape]
            detail = (f"closest stored tensor differs in {int(np.sum(near[0]['ints'] != expected))} of {expected.size} ints"
                      if near else "no stored weight tensor has its shape")
            problems.append(f"layer {name!r}: integers not stored as trained ({detail})")
            continue
        # A per-tensor step may be stored once per output channel, all equal.
        if not any(np.allclose(t["scales"].reshape(-1), scale, rtol=1e-6)
                   for t in same_ints if t["scales"].size == scale.size or scale.size == 1):
            problems.append(f"layer {name!r}: steps stored as {same_ints[0]['scales'][:4]}..., trained {scale[:4]}...")
    return problems
