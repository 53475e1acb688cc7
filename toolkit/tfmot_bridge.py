"""softedge rounding inside a tensorflow-model-optimization (tfmot) QAT flow, on tf_keras.

With `toolkit.tfmot_bridge_classes` (its classes), the only module that imports `tf_keras` or
tfmot, and only when one of its functions is called: importing tfmot sets TF_USE_LEGACY_KERAS=1
and rebinds `tf.keras` to tf_keras.

- `SoftedgeTfmotQuantizer`: a `tfmot.quantization.keras.quantizers.Quantizer` for kernels:
  symmetric narrow-range b-bit grid, step s = max|w| / qmax (per output channel where tfmot's
  default config is per-axis), rounding by a softedge method with an annealed alpha weight.
  In hard mode (`hard_tflite_model`) it emits round(w / s) * s through an 8-bit fake-quant with
  range +-127 s, so the converter stores the trained integers with step s, at every bit width
  (tfmot's own b-bit quantizer stores a 3-bit grid on ints -7..7, re-rounding every weight).
- `SoftedgeTfmotQuantizeConfig`: tfmot's default config with that quantizer, serializable
  (tfmot's `Default8BitQuantizeConfig.get_config` drops its quantizers, so a clone or a save of a
  custom-quantized model silently reverts to tfmot's own).
- `quantize_tfmot(model, scheme)`: `quantize_annotate_model` + `quantize_apply` with a scheme
  whose registry hands out those configs. tfmot's layout transforms stay (its layer support and
  fusions); one is corrected: `LayerReLUQuantize` gives a Conv2D/DepthwiseConv2D/Dense followed
  by a ReLU *layer* a no-op config, which leaves its kernel unquantized during training; softedge
  quantizes the kernel there and, like tfmot, leaves the output to the ReLU. Conv1D, which
  tfmot's registry leaves out (commented out), gets tfmot's own mapping: kernel per tensor.
  BatchNormalization is not folded by tfmot's transforms (the converter folds it after training,
  re-rounding the kernel): fold it first (a model built without BN, `models` zoo `batch_norm=False`,
  with the folded weights of `toolkit.fold_batch_norm`), or the export check will report it.
- `AnnealRoundingTfmot`: `AnnealRounding` for tf_keras `fit` (`toolkit.set_alpha` works on
  bridge models as on Keras 3 ones).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from toolkit.errors import ConfigError
from toolkit.layer_types import layer_type_named
from toolkit.quantizers import (
    bias_on_accumulator_grid,
    hard_integers,
)
from toolkit.schedules import AlphaSchedule, AnnealingSteps
from toolkit.scheme import QuantScheme

__all__ = ["AnnealRoundingTfmot", "bridge_classes", "hard_tflite_model", "is_tfmot_model", "kernel_integers",
           "quantize_scope", "quantize_tfmot"]



@functools.cache
def bridge_classes() -> dict:
    """The tfmot-derived classes (`toolkit.tfmot_bridge_classes`, imported on first use and
    registered for deserialization)."""
    import importlib

    module = importlib.import_module("toolkit.tfmot_bridge_classes")
    return {name: getattr(module, name)
            for name in ("SoftedgeTfmotQuantizer", "SoftedgeTfmotQuantizeConfig", "SoftedgeTfmotScheme")}


def quantize_scope():
    """tfmot's quantize_scope with softedge's classes, for loading or cloning bridge models."""
    import tensorflow_model_optimization as tfmot

    classes = bridge_classes()
    return tfmot.quantization.keras.quantize_scope(
        {k: v for k, v in classes.items() if k != "SoftedgeTfmotScheme"})


def quantize_tfmot(model, scheme: QuantScheme | None = None):
    """A tfmot-quantized tf_keras model with softedge kernel rounding and bit widths.

    Args:
        model: a tf_keras Sequential or functional model (BatchNormalization folded first, see
            the module docstring).
        scheme: bit widths, rounding and overrides (activations stay tfmot's 8-bit).

    Raises:
        ConfigError: for a Keras 3 model (use `toolkit.quantize`).
    """
    import keras

    if isinstance(model, keras.Model):  # a Keras 3 model: tfmot only takes tf_keras (Keras 2) models
        raise ConfigError(
            f"Model {model.name!r} is a Keras 3 model; tfmot (and so quantize_tfmot) only takes tf_keras "
            "models. Use toolkit.quantize(model, scheme), softedge's native Keras 3 path.")
    import tensorflow_model_optimization as tfmot

    scheme = scheme or QuantScheme()
    classes = bridge_classes()
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    with quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated, scheme=classes["SoftedgeTfmotScheme"](scheme))


def is_tfmot_model(model) -> bool:
    """Whether `model` is a tfmot-quantized tf_keras model (without importing tfmot)."""
    return any(type(layer).__name__ in ("QuantizeWrapperV2", "QuantizeWrapper", "QuantizeLayer") for layer in model.layers)


def _kernel_quantizers(model):
    """(wrapper layer, kernel variable, SoftedgeTfmotQuantizer) for each softedge-quantized kernel."""
    classes = bridge_classes()
    result = []
    for layer in model.layers:
        # The wrapper keeps (variable, quantizer, quantizer weights); `layer.layer.kernel` itself
        # is replaced by the quantized tensor when the wrapper is called.
        for variable, quantizer, _ in getattr(layer, "_weight_vars", []):
            if isinstance(quantizer, classes["SoftedgeTfmotQuantizer"]):
                result.append((layer, variable, quantizer))
    return result


def kernel_integers(model) -> list[tuple[str, str, object, object]]:
    """(layer name, kernel kind, hard integers in the Keras kernel layout, steps flattened) for
    every softedge-quantized kernel; kind is the `toolkit.layer_types` description of the wrapped
    tf_keras layer (matched by class name): "dense", "conv1d", "conv2d" or "depthwise"."""
    import numpy as np

    rows = []
    for layer, kernel, quantizer in _kernel_quantizers(model):
        w = tf.convert_to_tensor(kernel)
        s = quantizer.scale(w)
        q = np.asarray(hard_integers(w, s, quantizer.qmax), np.int32)
        rows.append((layer.name, layer_type_named(type(layer.layer).__name__).name, q, np.asarray(s, np.float64).reshape(-1)))
    return rows


def _input_step(model, layer):
    """The nudged step of the int8 tensor feeding `layer`: walks back through layers without an
    output quantizer (flatten, reshape, pooling) to one that has min/max range variables."""
    import numpy as np

    current = layer
    while True:
        inbound = current.inbound_nodes[0].inbound_layers if current.inbound_nodes else []
        if isinstance(inbound, (list, tuple)):
            if len(inbound) != 1:
                return None
            inbound = inbound[0]
        # tfmot names an output range {output,post_activation,quantize_layer}_{min,max}.
        ranges = {v.name.split("/")[-1].split(":")[0]: v for v in inbound.non_trainable_weights}
        prefix = next((p for p in ("output", "post_activation", "quantize_layer") if f"{p}_min" in ranges), None)
        low, high = (ranges[f"{prefix}_min"], ranges[f"{prefix}_max"]) if prefix else (None, None)
        if low is not None and high is not None:
            lo, hi = min(float(np.asarray(low)), 0.0), max(float(np.asarray(high)), 0.0)
            return (hi - lo) / 255.0
        if type(inbound).__name__ == "InputLayer":
            return None
        current = inbound


def hard_tflite_model(model):
    """The bridge model with every softedge quantizer in hard mode (exact integers for export).

    A clone: the same weights, kernel quantizers switched to round + 8-bit fake-quant on the
    b-bit grid. tfmot's activation quantizers already are fake-quant ops on their ranges.
    """
    import tf_keras

    def harden_config(config):
        if isinstance(config, dict):
            if config.get("class_name", "").endswith("SoftedgeTfmotQuantizeConfig"):
                config["config"]["weight_quantizer"]["hard"] = True
            for value in config.values():
                harden_config(value)
        elif isinstance(config, list):
            for value in config:
                harden_config(value)
        return config

    def clone_layer(layer):
        config = layer.get_config()
        return layer.__class__.from_config(harden_config(config))

    with quantize_scope():
        hard = tf_keras.models.clone_model(model, clone_function=clone_layer)
    hard.set_weights(model.get_weights())
    # Biases onto TFLite's int32 grid s_in * s_w, as `export.harden` does for Keras 3 models.
    for layer, kernel, quantizer in _kernel_quantizers(hard):
        bias = next((w for w in layer.layer.trainable_weights if w.name.split("/")[-1].startswith("bias")), None)
        input_step = _input_step(hard, layer)
        if bias is None or input_step is None:
            continue
        kernel_step = quantizer.scale(tf.convert_to_tensor(kernel))
        bias.assign(bias_on_accumulator_grid(bias.numpy(), input_step, kernel_step).astype(bias.dtype.as_numpy_dtype))
    return hard


def AnnealRoundingTfmot(schedule: AlphaSchedule, initial_step: int = 0):  # noqa: N802 (a class factory)
    """`toolkit.AnnealRounding` for tf_keras models (a tf_keras callback, same logic)."""
    import tf_keras

    class _Anneal(AnnealingSteps, tf_keras.callbacks.Callback):
        pass

    return _Anneal(schedule, initial_step)
