"""Quantization-aware Keras 3 layers: the ordinary layers with a fake-quantized kernel.

`QuantDense`, `QuantConv1D`, `QuantConv2D` and `QuantDepthwiseConv2D` subclass the Keras layer
of the same name and change one thing: `call` uses `weight_quantizer(kernel)` instead of the
float kernel (which stays the trained, latent weight). `QuantizeActivation` fake-quantizes a
tensor where the converted TFLite model will hold an int8 tensor. `QuantAdd` is Keras's Add,
which can follow the device's ADD (`toolkit.device_arithmetic`). `QuantAveragePooling` and
`QuantChannelAffine` (a BatchNormalization with nothing to fold into) train as TFLite's int8
AVERAGE_POOL_2D and MUL/ADD run.

Every layer saves all of its variables (kernel, bias, rounding alpha, ranges, learned steps)
through the generic `Layer` variable store, and is registered for `safe_mode` loading.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from toolkit.device_arithmetic import (
    accumulator_dtype,
    add_xnnpack,
    output_quantizer,
    quantize_host,
    requantize_xnnpack,
)
from toolkit.device_families import check_family
from toolkit.errors import ConfigError
from toolkit.layer_types import LAYER_TYPES, grid_layer_classes, register_qat
from toolkit.quantizers import ActivationQuantizer, WeightQuantizer, constant_fake_quant

__all__ = [
    "QUANT_KERNEL_LAYERS",
    "QUANT_LAYERS",
    "QuantAdd",
    "QuantAveragePooling",
    "QuantChannelAffine",
    "QuantConv1D",
    "QuantConv2D",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantizeActivation",
    "activation_behind",
    "int8_average_pool",
    "straight_through",
]


def straight_through(value, forward):
    """`forward` in the forward pass with the gradient of `value`: value + stop_gradient(forward
    - value), `forward` cast to value's dtype. How every layer here puts the device's (or the
    grid's) numbers into a trainable path."""
    return value + ops.stop_gradient(ops.cast(forward, value.dtype) - value)


def int8_average_pool(pool, on_grid, grid):
    """TFLite's int8 AVERAGE_POOL_2D of `on_grid` (a tensor on `grid`, a `quantizers.Grid`), with
    `pool` a Keras average pooling (layer or function): the raw integers q = round(x / s) + z are
    pooled (exact in float32, so a tie sum/n = k + 1/2 is exactly a tie) and the mean is rounded
    half away from zero, y = s (clip(round_half_away(mean q), qmin, qmax) - z). No gradient."""
    scale = ops.stop_gradient(ops.cast(grid.scale, on_grid.dtype))
    zero_point = ops.stop_gradient(ops.cast(grid.zero_point, on_grid.dtype))
    raw_mean = pool(ops.round(on_grid / scale) + zero_point)
    rounded = ops.clip(ops.sign(raw_mean) * ops.floor(ops.abs(raw_mean) + 0.5), grid.qmin, grid.qmax)
    return ops.stop_gradient(scale * (rounded - zero_point))


def _parent_nodes(layer):
    """The nodes that produce `layer`'s inputs (in its call's argument order), where the layer is
    called once in its model; else None."""
    nodes = getattr(layer, "_inbound_nodes", [])
    return nodes[0].parent_nodes if len(nodes) == 1 else None


def activation_behind(node):
    """The `QuantizeActivation` whose int8 tensor the functional-graph `node` outputs, through
    layers that keep their input's grid (pooling, reshapes, ...); None where there is none."""
    while True:
        operation = node.operation
        if isinstance(operation, QuantizeActivation):
            return operation
        if not isinstance(operation, grid_layer_classes("input")) or isinstance(operation, keras.layers.InputLayer):
            return None
        parents = node.parent_nodes
        if len(parents) != 1:
            return None
        node = parents[0]


class _QuantKernel:
    """Mixin: a `weight_quantizer` built on the layer's kernel, and generic variable storage.

    The layer's `layer_type` (toolkit.layer_types, set by `register_qat`) names the kernel axes
    that index output channels; subclasses name `kernel_attr` (the attribute holding the float
    kernel variable in the Keras base class).
    """

    kernel_attr: str = "_kernel"

    def _init_quantizer(self, weight_quantizer, device_arithmetic=None):
        if isinstance(weight_quantizer, WeightQuantizer):
            weight_quantizer = weight_quantizer.get_config()
        self.weight_quantizer = WeightQuantizer.from_config(weight_quantizer or {})
        self.device_arithmetic = check_family(device_arithmetic)

    @property
    def float_kernel(self) -> keras.Variable:
        """The latent float kernel that training updates."""
        return getattr(self, self.kernel_attr)

    def build(self, input_shape):
        super().build(input_shape)
        self.weight_quantizer.build(self, self.float_kernel, self.layer_type.channel_axes)

    def quantized_kernel(self):
        """The fake-quantized kernel (q * s) that `call` uses."""
        return self.weight_quantizer(self.float_kernel)

    def grid_bias(self):
        """The bias `call` adds. Where the layer's input is an int8 tensor of its model (a
        `QuantizeActivation`, through layers that keep its grid), the bias on TFLite's int32
        accumulator grid g = s_in s_w per output channel, b_q = round(b / g) g with a
        straight-through gradient, as `harden` bakes it and the device stores it; elsewhere the
        float bias.

        The grid is coarse against the output step where weights have few bits (g / s_out =
        s_in max|w| / (qmax s_out)): a bias trained in float and baked at export moves output
        roundings (`make bench-recipe`, MNIST-1D W3: the baked hard model agrees with the
        quantized model at alpha = inf on 100% of inputs, the unbaked one on 99.8%)."""
        source = self.input_activation()
        if self.bias is None or source is None:
            return self.bias
        kernel_steps = ops.reshape(self.weight_quantizer.scale(self.float_kernel), [-1])
        grid = ops.cast(source.quantizer.grid().scale, self.bias.dtype) * ops.cast(kernel_steps, self.bias.dtype)
        return straight_through(self.bias, ops.round(self.bias / grid) * grid)

    def input_activation(self):
        """The `QuantizeActivation` whose int8 tensor this layer reads (through pass-through
        layers), from the layer's one inbound node; None where there is none (a layer called
        alone, or used at several places). Found once, then kept."""
        found = self.__dict__.get("_input_activation_layer")
        if found is not None:
            return found
        parents = _parent_nodes(self)
        found = activation_behind(parents[0]) if parents is not None and len(parents) == 1 else None
        if found is not None:
            self.__dict__["_input_activation_layer"] = found   # not tracked: not the layer's state
        return found

    def follows_device(self) -> bool:
        """Whether `device_output` applies: the layer reads an int8 tensor of its model and its
        output is quantized (through fused activations) by a `QuantizeActivation`."""
        return self.input_activation() is not None and output_quantizer(self) is not None

    def _linear(self, inputs, kernel):
        """The layer's linear map without bias (its Keras base class's op)."""
        raise NotImplementedError

    def _add_bias(self, outputs, bias):
        """outputs + bias (one per output channel) on the channel axis: the last one, or axis 1
        where a convolution is channels_first."""
        if getattr(self, "data_format", "channels_last") == "channels_last":
            return ops.add(outputs, bias)
        return ops.add(outputs, ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2)))

    def _pre_activation(self, inputs):
        """linear(x, Q(W)) + b, in the device's arithmetic where `device_arithmetic` is set and
        the layer `follows_device` (`toolkit.device_arithmetic`), else the float simulation."""
        outputs = self._linear(inputs, self.quantized_kernel())
        if self.bias is not None:
            outputs = self._add_bias(outputs, self.grid_bias())
        if self.device_arithmetic is None or not self.follows_device():
            return outputs
        return straight_through(outputs, self.device_output(inputs))

    def device_output(self, inputs):
        """s_out rint(float32(acc) ((float32(s_in) s_w) / s_out)), acc the exact int32 accumulator
        of the int8 input, the hard weight integers and the int32 bias (`device_arithmetic`)."""
        input_step = ops.cast(self.input_activation().quantizer.grid().scale, "float32")
        output_step = ops.cast(output_quantizer(self).grid().scale, "float32")
        kernel_steps = ops.reshape(ops.cast(self.weight_quantizer.scale(self.float_kernel), "float32"), [-1])
        integers = self.weight_quantizer.integers(self.float_kernel)
        shape = tuple(self.float_kernel.shape)   # products summed per output: the kernel's non-channel axes
        channel_axes = {axis % len(shape) for axis in self.layer_type.channel_axes}
        terms = int(np.prod([n for axis, n in enumerate(shape) if axis not in channel_axes]))
        dtype = accumulator_dtype(terms, self.weight_quantizer.qmax)
        centered = ops.cast(ops.round(ops.cast(inputs, "float32") / input_step), dtype)     # q_in - z_in
        # Rounded: a graph may compute the convolution with a transform (Winograd) whose float
        # error leaves an integer sum a hair off (seen: 11511.99 for 11512 in a tf.function).
        acc = ops.round(self._linear(centered, ops.cast(integers, dtype)))
        if self.bias is not None:   # int32 sums: exact in float64
            bias = ops.round(ops.cast(self.grid_bias(), "float32") / (input_step * kernel_steps))
            acc = self._add_bias(ops.cast(acc, "float64"), ops.cast(bias, "float64"))
        return output_step * requantize_xnnpack(acc, input_step, kernel_steps, output_step)   # (no gradient: `straight_through`)

    def _quant_config(self, config: dict) -> dict:
        config["weight_quantizer"] = self.weight_quantizer.get_config()
        config["device_arithmetic"] = self.device_arithmetic
        return config

    # The Keras base classes save `self.kernel` and a fixed list of variables; the generic
    # store keeps every variable of the layer, quantizer state included.
    save_own_variables = keras.layers.Layer.save_own_variables
    load_own_variables = keras.layers.Layer.load_own_variables


@register_qat("dense")
@keras.saving.register_keras_serializable(package="softedge")
class QuantDense(_QuantKernel, keras.layers.Dense):
    """`keras.layers.Dense` with a fake-quantized kernel: y = act(x @ Q(W) + b)."""

    def __init__(self, units, weight_quantizer=None, device_arithmetic=None, **kwargs):
        super().__init__(units, **kwargs)
        self._init_quantizer(weight_quantizer, device_arithmetic)

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def call(self, inputs, training=None):
        x = self._pre_activation(inputs)
        return self.activation(x) if self.activation is not None else x

    def get_config(self):
        return self._quant_config(super().get_config())


class _QuantConvCall:
    """`BaseConv.call` with the quantized kernel."""

    def _linear(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def call(self, inputs):
        outputs = self._pre_activation(inputs)
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        return self._quant_config(super().get_config())


@register_qat("conv1d")
@keras.saving.register_keras_serializable(package="softedge")
class QuantConv1D(_QuantConvCall, _QuantKernel, keras.layers.Conv1D):
    """`keras.layers.Conv1D` with a fake-quantized kernel (k, c_in, c_out), per output channel."""

    def __init__(self, filters, kernel_size, weight_quantizer=None, device_arithmetic=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_quantizer(weight_quantizer, device_arithmetic)


@register_qat("conv2d")
@keras.saving.register_keras_serializable(package="softedge")
class QuantConv2D(_QuantConvCall, _QuantKernel, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a fake-quantized kernel (kh, kw, c_in, c_out), per output channel."""

    def __init__(self, filters, kernel_size, weight_quantizer=None, device_arithmetic=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_quantizer(weight_quantizer, device_arithmetic)


@register_qat("depthwise")
@keras.saving.register_keras_serializable(package="softedge")
class QuantDepthwiseConv2D(_QuantKernel, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a fake-quantized kernel (kh, kw, c_in, multiplier).

    Per-channel scales are per output channel c_in * multiplier (TFLite's axis 3).
    """

    kernel_attr = "kernel"

    def __init__(self, kernel_size, weight_quantizer=None, device_arithmetic=None, **kwargs):
        super().__init__(kernel_size, **kwargs)
        self._init_quantizer(weight_quantizer, device_arithmetic)

    def _linear(self, inputs, kernel):
        return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                  dilation_rate=self.dilation_rate, data_format=self.data_format)

    def call(self, inputs):
        outputs = self._pre_activation(inputs)
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        return self._quant_config(super().get_config())


@keras.saving.register_keras_serializable(package="softedge")
class QuantizeActivation(keras.layers.Layer):
    """Fake-quantizes its input on a moving-average (or fixed) range; identity in shape.

    With `device_arithmetic` set, the quantizer of a model input rounds as the host hands an
    int8-input export its integers (`toolkit.device_arithmetic.quantize_host`: floor(x / s + 1/2)
    in float64), with a straight-through gradient; any other quantizer is unchanged by it."""

    def __init__(self, quantizer=None, device_arithmetic=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(quantizer, ActivationQuantizer):
            quantizer = quantizer.get_config()
        self.quantizer = ActivationQuantizer.from_config(quantizer or {})
        self.device_arithmetic = check_family(device_arithmetic)

    def build(self, input_shape):
        self.quantizer.build(self)

    def follows_device(self) -> bool:
        """Whether the device mode applies: this quantizer reads a model input."""
        parents = _parent_nodes(self)
        return parents is not None and len(parents) == 1 and isinstance(parents[0].operation, keras.layers.InputLayer)

    def call(self, inputs, training=False):
        outputs = self.quantizer(inputs, training=bool(training))
        if self.device_arithmetic is None or not self.follows_device():
            return outputs
        return straight_through(outputs, quantize_host(inputs, self.quantizer.grid()))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "quantizer": self.quantizer.get_config(),
                "device_arithmetic": self.device_arithmetic}


@keras.saving.register_keras_serializable(package="softedge")
class QuantAdd(keras.layers.Add):
    """Keras's Add (the rewrite's form of it), and with `device_arithmetic` set, where both
    operands are int8 tensors of the model and a `QuantizeActivation` quantizes the sum (through
    fused activations), the device's ADD with a straight-through gradient
    (`toolkit.device_arithmetic.add_xnnpack`). `export.harden` makes it a plain Add."""

    def __init__(self, device_arithmetic=None, **kwargs):
        super().__init__(**kwargs)
        self.device_arithmetic = check_family(device_arithmetic)

    def operand_activations(self):
        """The two `QuantizeActivation`s whose int8 tensors are the operands, or None."""
        parents = _parent_nodes(self)
        if parents is None or len(parents) != 2:
            return None
        found = [activation_behind(node) for node in parents]
        return None if None in found else found

    def follows_device(self) -> bool:
        return self.operand_activations() is not None and output_quantizer(self) is not None

    def call(self, inputs):
        outputs = super().call(inputs)
        if self.device_arithmetic is None or not self.follows_device():
            return outputs
        (a, b), (quant_a, quant_b) = inputs, self.operand_activations()
        device = add_xnnpack(a, quant_a.quantizer.grid(), b, quant_b.quantizer.grid(), output_quantizer(self).grid())
        return straight_through(outputs, device)

    def get_config(self):
        return {**super().get_config(), "device_arithmetic": self.device_arithmetic}


@keras.saving.register_keras_serializable(package="softedge")
class QuantAveragePooling(QuantizeActivation):
    """Average pooling on its input's int8 grid, as TFLite's int8 AVERAGE_POOL_2D computes it.

    TFLite keeps the input's scale s and zero point z for the pooled tensor and computes, over
    the n valid inputs q_i (raw int8) of each window, q = round_half_away(sum q_i / n). This
    layer quantizes its input with `quantizer` (the activation quantizer of the layer feeding
    it, whose name it keeps as `input_quant_name`: x_q = s (q_i - z)), pools with the Keras
    layer described by `pool` (AveragePooling1D/2D config) and puts the average back on the
    same grid the same way, y = s (round_half_away(mean q_i) - z); the gradient of that last
    rounding is straight-through. `export.harden` expands it into FakeQuant (input grid) ->
    pooling -> FakeQuant (the same grid): AVERAGE_POOL_2D with no QUANTIZE after it.

    `between`: layers that stood between the input's producer and the pooling and are the
    identity at inference (Dropout, SpatialDropout, Identity; serialized). They run after the
    input quantizer, so its range sees the tensor as inference does (not scaled by dropout's
    1 / (1 - rate)), and are left out of the hard model.
    """

    def __init__(self, pool: dict, input_quant_name: str, quantizer=None, between=(), **kwargs):
        super().__init__(quantizer, **kwargs)
        self.pool_config = dict(pool)
        self.input_quant_name = str(input_quant_name)
        self.pool = keras.layers.deserialize(self.pool_config)
        self.between_configs = [dict(config) for config in between]
        self.between = [keras.layers.deserialize(config) for config in self.between_configs]

    def call(self, inputs, training=False):
        quantized = self.quantizer(inputs, training=bool(training))
        for layer in self.between:
            quantized = layer(quantized, training=bool(training))
        average = self.pool(quantized)
        return straight_through(average, int8_average_pool(self.pool, quantized, self.quantizer.grid()))

    def compute_output_shape(self, input_shape):
        return self.pool.compute_output_shape(input_shape)

    def follows_device(self) -> bool:
        """False: the pooling computes TFLite's integers already (`int8_average_pool`)."""
        return False

    def get_config(self):
        return {**super().get_config(), "pool": self.pool_config, "input_quant_name": self.input_quant_name,
                "between": self.between_configs}


@keras.saving.register_keras_serializable(package="softedge")
class QuantChannelAffine(keras.layers.Layer):
    """A BatchNormalization that no linear layer precedes, as TFLite's int8 graph runs it.

    The converter turns the inference-time BatchNormalization y = a x + b (a = gamma /
    sqrt(var + eps), b = beta - mean a, per channel on the last axis) into MUL by the constant
    a, then ADD of the constant b, each constant stored as int8 per tensor on its own range
    [min(0, min v), max(0, max v)] and the product held as an int8 tensor. This layer computes
    exactly that: y = Q_p(x C(a)) + C(b), where C fake-quantizes a constant on that grid
    (`constant_fake_quant`) and Q_p is the product's activation quantizer; the output's own
    quantizer follows the layer, as after an Add. a and b are trainable (straight-through).
    `export.harden` expands it into MUL -> FakeQuant -> ADD with the constants on their grids.
    """

    def __init__(self, channels: int, product_quantizer=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        if isinstance(product_quantizer, ActivationQuantizer):
            product_quantizer = product_quantizer.get_config()
        self.product_quantizer = ActivationQuantizer.from_config(product_quantizer or {})

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ConfigError(f"Layer {self.name!r} expects {self.channels} channels on its last axis; got {input_shape}.")
        self.scale = self.add_weight(name="scale", shape=(self.channels,), initializer="ones")
        self.offset = self.add_weight(name="offset", shape=(self.channels,), initializer="zeros")
        self.product_quantizer.build(self)

    def set_from_batch_norm(self, batch_norm: keras.layers.BatchNormalization) -> None:
        """a = gamma / sqrt(moving_variance + epsilon), b = beta - moving_mean a."""
        variance = np.asarray(batch_norm.moving_variance, np.float64)
        gamma = np.asarray(batch_norm.gamma, np.float64) if batch_norm.scale else 1.0
        beta = np.asarray(batch_norm.beta, np.float64) if batch_norm.center else 0.0
        a = gamma / np.sqrt(variance + batch_norm.epsilon)
        self.scale.assign(a.astype(np.float32))
        self.offset.assign((beta - np.asarray(batch_norm.moving_mean, np.float64) * a).astype(np.float32))

    def call(self, inputs, training=False, mask=None):  # `mask`: BatchNormalization's signature
        product = self.product_quantizer(inputs * constant_fake_quant(self.scale), training=bool(training))
        return product + constant_fake_quant(self.offset)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "product_quantizer": self.product_quantizer.get_config()}


# Keras float layer class -> its quantization-aware replacement, from the layer descriptions.
QUANT_LAYERS = {description.keras_class: description.qat_class for description in LAYER_TYPES.values()}
QUANT_KERNEL_LAYERS = tuple(QUANT_LAYERS.values())
