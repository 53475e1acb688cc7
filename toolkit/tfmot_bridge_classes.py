"""The tfmot bridge's classes (see `toolkit.tfmot_bridge`), built on tfmot's and tf_keras's.

Imports tf_keras and tensorflow-model-optimization at its top, so it is imported only when the
bridge is first used (`tfmot_bridge.bridge_classes`): importing tfmot sets TF_USE_LEGACY_KERAS=1
and rebinds `tf.keras`. With `tfmot_bridge`, the only module of softedge that imports them.

- `SoftedgeTfmotQuantizer`: the kernel quantizer (softedge rounding; hard: the trained integers
  through an 8-bit fake-quant of step s, so the converter stores them as trained).
- `SoftedgeTfmotQuantizeConfig`: tfmot's default config with that quantizer, serializable.
- `SoftedgeTfmotRegistry`: tfmot's registry handing out those configs (and Conv1D's mapping).
- `SoftedgeTfmotLayoutTransform`: tfmot's transforms, with the kernel of a Conv/Dense fused with
  a ReLU layer quantized (tfmot's no-op config leaves it in float).
- `SoftedgeTfmotScheme`: the scheme `quantize_apply` takes.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras
from tensorflow_model_optimization.python.core.quantization.keras import quantizers
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs,
    default_8bit_quantize_layout_transform,
    default_8bit_quantize_registry,
    default_8bit_quantize_scheme,
)

from toolkit import rounding as rounding_methods
from toolkit.quantizers import (
    ALPHA_WEIGHT_NAME,
    check_bits,
    fake_quant,
    hard_integers,
    max_abs_step,
    storage_fake_quant,
    symmetric_qmax,
)
from toolkit.scheme import QuantScheme

__all__ = ["SoftedgeTfmotLayoutTransform", "SoftedgeTfmotQuantizeConfig", "SoftedgeTfmotQuantizer",
           "SoftedgeTfmotRegistry", "SoftedgeTfmotScheme"]


@tf_keras.utils.register_keras_serializable(package="softedge")
class SoftedgeTfmotQuantizer(quantizers.Quantizer):
    """Kernel quantizer with softedge rounding (see the module docstring)."""

    def __init__(self, bits=8, rounding="soft", per_axis=False, alpha=1.0, hard=False):
        self.bits = check_bits(bits)
        rounding_methods.get(rounding)
        self.rounding = rounding
        self.per_axis = bool(per_axis)
        self.alpha = float(alpha)
        self.hard = bool(hard)
        self.qmax = symmetric_qmax(self.bits)

    def build(self, tensor_shape, name, layer):
        if not rounding_methods.uses_alpha(self.rounding):
            return {}
        alpha = layer.add_weight(f"{name}_{ALPHA_WEIGHT_NAME}", shape=(), trainable=False,
                                 initializer=tf_keras.initializers.Constant(self.alpha))
        return {"alpha": alpha}

    def scale(self, inputs):
        """Max-abs step, per output channel (tfmot's per_axis: the last axis) or per tensor."""
        rank = len(inputs.shape)
        return max_abs_step(inputs, list(range(rank - 1 if self.per_axis else rank)), self.qmax)

    def __call__(self, inputs, training, weights, **kwargs):
        s = self.scale(inputs)
        if self.hard:
            return storage_fake_quant(hard_integers(inputs, s, self.qmax) * s, s)
        return fake_quant(inputs, s, tf.zeros((), inputs.dtype), -self.qmax, self.qmax, self.rounding,
                          weights.get("alpha"))

    def get_config(self):
        return {"bits": self.bits, "rounding": self.rounding, "per_axis": self.per_axis, "alpha": self.alpha,
                "hard": self.hard}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, SoftedgeTfmotQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self == other

@tf_keras.utils.register_keras_serializable(package="softedge")
class SoftedgeTfmotQuantizeConfig(default_8bit_quantize_registry.Default8BitQuantizeConfig):
    """tfmot's default config with a softedge kernel quantizer that survives serialization."""

    def __init__(self, weight_attrs, activation_attrs, quantize_output, weight_quantizer=None):
        super().__init__(weight_attrs, activation_attrs, quantize_output)
        if isinstance(weight_quantizer, dict):
            weight_quantizer = SoftedgeTfmotQuantizer.from_config(weight_quantizer)
        self.weight_quantizer = weight_quantizer or SoftedgeTfmotQuantizer()

    def get_config(self):
        return {**super().get_config(), "weight_quantizer": self.weight_quantizer.get_config()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

class SoftedgeTfmotRegistry(default_8bit_quantize_registry.Default8BitQuantizeRegistry):
    def __init__(self, scheme: QuantScheme):
        super().__init__()
        self.scheme = scheme

    def supports(self, layer):
        return isinstance(layer, tf_keras.layers.Conv1D) or super().supports(layer)

    def default_config(self, layer):
        """tfmot's config for the layer; Conv1D gets the mapping tfmot has commented out
        (kernel quantized per tensor, activation quantized)."""
        if type(layer) is tf_keras.layers.Conv1D:
            return default_8bit_quantize_registry.Default8BitQuantizeConfig(["kernel"], ["activation"], False)
        return super().get_quantize_config(layer)

    def softedge_config(self, layer, default):
        settings = self.scheme.for_layer(layer.name)
        per_axis = bool(getattr(default.weight_quantizer, "per_axis", False)) and settings.per_channel
        quantizer = SoftedgeTfmotQuantizer(settings.weight_bits, settings.rounding, per_axis, self.scheme.alpha)
        return SoftedgeTfmotQuantizeConfig(default.weight_attrs, default.activation_attrs,
                                           default.quantize_output, quantizer.get_config())

    def get_quantize_config(self, layer):
        default = self.default_config(layer)
        if isinstance(default, default_8bit_quantize_registry.Default8BitQuantizeConfig) and default.weight_attrs:
            return self.softedge_config(layer, default)
        return default

class SoftedgeTfmotLayoutTransform(default_8bit_quantize_layout_transform.Default8BitQuantizeLayoutTransform):
    def __init__(self, registry):
        self.registry = registry

    def apply(self, model, layer_quantize_map):
        transformed, layer_quantize_map = super().apply(model, layer_quantize_map)
        for layer in transformed.layers:
            config = layer_quantize_map.get(layer.name, {}).get("quantize_config")
            if isinstance(config, default_8bit_quantize_configs.NoOpQuantizeConfig) and self.registry.supports(layer):
                default = self.registry.default_config(layer)
                if getattr(default, "weight_attrs", None):
                    # Keep tfmot's fusion (no output quantizer before the ReLU), but quantize
                    # the kernel, which the no-op config would leave in float.
                    kernel_only = self.registry.softedge_config(layer, default)
                    kernel_only.activation_attrs, kernel_only.quantize_output = [], False
                    layer_quantize_map[layer.name]["quantize_config"] = kernel_only
        return transformed, layer_quantize_map

class SoftedgeTfmotScheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):
    def __init__(self, scheme: QuantScheme):
        super().__init__()
        self.scheme = scheme

    def get_quantize_registry(self):
        return SoftedgeTfmotRegistry(self.scheme)

    def get_layout_transformer(self):
        return SoftedgeTfmotLayoutTransform(self.get_quantize_registry())
