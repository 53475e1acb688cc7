"""The layers of a hard (exported) model: fixed integer grids, no training state.

A hard kernel layer holds its kernel already on its grid, W = q * s (q the integers the model
trained with, s the per-channel or per-tensor step), and passes it through a weight fake-quant
whose grid is exactly s, so the converter stores q and s and has nothing left to round:

    storage 8 bits: fake_quant(W, min = -127 s, max = 127 s, num_bits=8, narrow_range=True)
    storage 4 bits: fake_quant(W, min =   -7 s, max =   7 s, num_bits=4, narrow_range=True)

(a b-bit grid has |q| <= 2^(b-1) - 1 <= 127, resp. <= 7 for b <= 4, so both hold it exactly;
see docs/design/weight-storage.md: a 3-bit fake-quant with +-3s makes the converter re-round
onto ints -7..7). Activations pass through `FakeQuant`, TF's fake_quant_with_min_max_vars on the nudged
range (qmin - z) s .. (qmax - z) s, which the converter turns into int8 tensors with scale s and
zero point z.

Each hard kernel layer is the hard form of one `toolkit.layer_types` description (registered
with `register_hard`) and stores its kernel in that description's `hard_layout`: Conv1D is
computed as a Conv2D on an expanded input with a 4-D kernel (1, k, c_in, c_out) (a per-channel
fake-quant on a 3-D kernel does not convert: the quantized axis moves), and depthwise kernels
are fake-quantized on a (kh, kw, 1, c_in * multiplier) view, the layout of TFLite's
DEPTHWISE_CONV_2D weights, so the quantized axis is their last one.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from toolkit.layer_types import LAYER_TYPES, register_hard
from toolkit.quantizers import nudged_grid, storage_fake_quant

__all__ = ["HARD_LAYERS", "FakeQuant", "HardConstantOp", "HardConv1D", "HardConv2D", "HardDense", "HardDepthwiseConv2D"]


@keras.saving.register_keras_serializable(package="softedge")
class FakeQuant(keras.layers.Layer):
    """y = fake_quant_with_min_max_vars(x, min_value, max_value, num_bits) (half-up rounding)."""

    def __init__(self, min_value: float, max_value: float, num_bits: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.num_bits = int(num_bits)

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, self.min_value, self.max_value, num_bits=self.num_bits, narrow_range=False)

    def compute_output_shape(self, input_shape):
        return input_shape

    def grid(self) -> tuple[float, int]:
        """(scale, signed zero point) of the nudged range, as the converter will store them
        (`toolkit.quantizers.nudged_grid`, in float64)."""
        grid = nudged_grid(tf.constant(self.min_value, tf.float64), tf.constant(self.max_value, tf.float64), self.num_bits)
        return float(grid.scale), int(grid.zero_point)

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value, "max_value": self.max_value,
                "num_bits": self.num_bits}


@keras.saving.register_keras_serializable(package="softedge")
class HardConstantOp(keras.layers.Layer):
    """y = x * c or x + c (`op` "mul" / "add"), c a per-channel constant on the int8 grid of
    [min_value, max_value] and passed through fake_quant_with_min_max_vars on that range, so the
    converter stores exactly its integers (the hard form of `QuantChannelAffine`)."""

    def __init__(self, op: str, values, min_value: float, max_value: float, **kwargs):
        super().__init__(**kwargs)
        if op not in ("mul", "add"):
            raise ValueError(f"HardConstantOp op must be 'mul' or 'add'; got {op!r}.")
        self.op = op
        self.values = [float(v) for v in np.asarray(values, np.float32).ravel()]
        self.min_value, self.max_value = float(min_value), float(max_value)

    def call(self, inputs):
        constant = tf.quantization.fake_quant_with_min_max_vars(
            tf.constant(self.values, inputs.dtype), self.min_value, self.max_value, num_bits=8, narrow_range=False)
        return inputs * constant if self.op == "mul" else inputs + constant

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "op": self.op, "values": self.values, "min_value": self.min_value,
                "max_value": self.max_value}


class _HardKernel(keras.layers.Layer):
    """Common part: kernel (on its grid), optional bias, step `kernel_scale`, fused activation."""

    def __init__(self, kernel_shape, scale_shape, weight_bits: int, storage_bits: int = 8, use_bias: bool = True,
                 activation=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_shape = tuple(int(d) for d in kernel_shape)
        self.scale_shape = tuple(int(d) for d in scale_shape)
        self.weight_bits = int(weight_bits)
        self.storage_bits = int(storage_bits)
        if self.storage_bits not in (4, 8) or (self.storage_bits == 4 and self.weight_bits > 4):
            raise ValueError(
                f"Expected storage_bits 8, or 4 for weight_bits <= 4. Received: storage_bits={storage_bits}, "
                f"weight_bits={weight_bits} (layer {self.name!r})")
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_shape, initializer="zeros", trainable=False)
        self.kernel_scale = self.add_weight(name="kernel_scale", shape=self.scale_shape, initializer="ones",
                                            trainable=False)
        channels = self.kernel_shape[-1]
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros", trainable=False) if self.use_bias else None

    def stored_kernel(self):
        """The kernel through the weight fake-quant the converter reads (see module docstring)."""
        return storage_fake_quant(self.kernel, self.kernel_scale, self.storage_bits)

    def integers(self) -> np.ndarray:
        """q = W / s as int32 (exact: W was baked as q * s), in the stored (hard) layout."""
        scale = np.asarray(self.kernel_scale).reshape(self._scale_broadcast_shape())
        return np.rint(np.asarray(self.kernel) / scale).astype(np.int32)

    def _scale_broadcast_shape(self):
        if len(self.scale_shape) == 0 or self.scale_shape == (1,):
            return (1,) * len(self.kernel_shape)
        return (1,) * (len(self.kernel_shape) - 1) + (self.kernel_shape[-1],)

    def _finish(self, outputs):
        if self.bias is not None:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
        return {**super().get_config(), "kernel_shape": list(self.kernel_shape), "scale_shape": list(self.scale_shape),
                "weight_bits": self.weight_bits, "storage_bits": self.storage_bits, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


@register_hard("dense")
@keras.saving.register_keras_serializable(package="softedge")
class HardDense(_HardKernel):
    """y = act(x @ FQ(W) + b), W (in, out) with one step for the whole kernel."""

    def call(self, inputs):
        return self._finish(tf.matmul(inputs, self.stored_kernel()) if len(inputs.shape) == 2
                            else tf.tensordot(inputs, self.stored_kernel(), axes=1))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.kernel_shape[-1])


class _HardConvBase(_HardKernel):
    def __init__(self, *args, strides=(1, 1), padding="valid", dilation_rate=(1, 1), **kwargs):
        super().__init__(*args, **kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.padding = str(padding).lower()
        self.dilation_rate = tuple(int(d) for d in dilation_rate)

    def get_config(self):
        return {**super().get_config(), "strides": list(self.strides), "padding": self.padding,
                "dilation_rate": list(self.dilation_rate)}


@register_hard("conv2d")
@keras.saving.register_keras_serializable(package="softedge")
class HardConv2D(_HardConvBase):
    """Conv2D (channels last), kernel (kh, kw, c_in, c_out), one step per output channel."""

    def call(self, inputs):
        outputs = tf.nn.conv2d(inputs, self.stored_kernel(), strides=[1, *self.strides, 1],
                               padding=self.padding.upper(), dilations=[1, *self.dilation_rate, 1])
        return self._finish(outputs)


@register_hard("conv1d")
@keras.saving.register_keras_serializable(package="softedge")
class HardConv1D(_HardConvBase):
    """Conv1D (channels last) as Conv2D over (batch, 1, length, c_in), kernel (1, k, c_in, c_out)."""

    def call(self, inputs):
        outputs = tf.nn.conv2d(tf.expand_dims(inputs, 1), self.stored_kernel(), strides=[1, 1, *self.strides, 1],
                               padding=self.padding.upper(), dilations=[1, 1, *self.dilation_rate, 1])
        return self._finish(tf.squeeze(outputs, axis=1))


@register_hard("depthwise")
@keras.saving.register_keras_serializable(package="softedge")
class HardDepthwiseConv2D(_HardConvBase):
    """DepthwiseConv2D (channels last). The kernel is stored as (kh, kw, 1, c_in * multiplier),
    TFLite's own layout, with one step per output channel; `depth_multiplier` restores the
    (kh, kw, c_in, multiplier) filter for the op."""

    def __init__(self, *args, depth_multiplier: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.depth_multiplier = int(depth_multiplier)

    def call(self, inputs):
        kh, kw, _, channels = self.kernel_shape
        kernel = tf.reshape(self.stored_kernel(), [kh, kw, channels // self.depth_multiplier, self.depth_multiplier])
        outputs = tf.nn.depthwise_conv2d(inputs, kernel, strides=[1, *self.strides, 1], padding=self.padding.upper(),
                                         dilations=list(self.dilation_rate))
        return self._finish(outputs)

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier}


HARD_LAYERS = tuple(description.hard_class for description in LAYER_TYPES.values())
