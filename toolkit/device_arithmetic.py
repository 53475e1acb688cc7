"""Training on the device's arithmetic: a kernel layer's forward pass computed as the runtime
computes it, with a straight-through gradient.

The float simulation (fake quants in float32) and the device differ in two places: the device
sums int8 x int8 products in an int32 accumulator (the simulation sums float32 products of real
values, in another order), and it requantizes that accumulator with its own multiplier and
rounding. For a kernel layer (Dense, Conv1D/2D, DepthwiseConv2D) that reads an int8 tensor of
its model and whose output, through ReLU/ReLU6/linear activations, is quantized by a
`QuantizeActivation`, `device_output` computes the layer's pre-activation output as XNNPACK
does (`export/device/reference/rules.py`, family "xnnpack", int8 weight containers):

    acc = sum (q_in - z_in) q_w + round(b / (s_in s_w))        exact (float32 below 2^24, else float64;
                                                                the bias added in float64)
    k   = rint(float32(acc) * ((float32(s_in) s_w) / s_out))   float32 product, ties to even
    y   = s_out k                                              then the activation; the output
                                                                quantizer adds z_out and clips

and the layer returns y_float + stop_gradient(y - y_float): the forward value is the device's,
the gradient the float path's. The output quantizer's clip and the fused ReLU bounds are those
of the device (ReLU's lower bound is the zero point, the quantizer's range starting at 0).
While activation ranges move (training), `s_out` is the range before this batch's update, and
the quantizer rounds on the updated one: exact once ranges are fixed (inference).

Two more places where the float simulation and the device part, covered the same way:

- The model input (`QuantizeActivation` reading an `Input`): an int8-input export receives the
  integers the host computes, q = clip(floor(x / s + 1/2) + z) in float64
  (`export.device.check.quantize_input`, the fake-quant op's half-up rounding); the float
  simulation computes x / s in float32 and rounds ties to even (`quantize_host`).
- ADD of two int8 tensors (`QuantAdd`, the rewrite's Add): XNNPACK rescales both operands with
  20-bit integer multipliers and one arithmetic shift (`add_xnnpack`, the integer reference's
  `elementwise._xnnpack_add`), not the exact real sum the simulation rounds.

`python -m bench.device_tensors` (MobileNetV2-0.35 W4, the bench-zoo recipe, 250 synthetic test
inputs, every tensor of the trained model against the exact simulation of XNNPACK): with the
float simulation 5,574,663 of 142,467,000 elements off the device, up to 51 steps (layers' own
differences: the input quantizer 24 elements, kernel layers 1-74 each); with the last QAT epoch
on the device's arithmetic, none.

Not covered (the float simulation stays): weights stored as packed int4 (XNNPACK hands those
convolutions to the builtin kernels), layers whose input or output is not an int8 tensor of the
model, an Add of more than two tensors, and the other ops (MUL, MEAN, SOFTMAX, ...), which the
float simulation computes as the device does except at exact ties.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from toolkit.device_families import check_family

__all__ = ["DeviceArithmeticFrom", "accumulator_dtype", "add_xnnpack", "output_quantizer", "power_of_two", "quantize_host",
           "requantize_xnnpack", "set_device_arithmetic"]

# Activations between a kernel layer and its output quantizer that the device fuses as bounds.
_FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


def accumulator_dtype(terms: int, qmax_weight: int) -> tf.DType:
    """float32 where every partial sum of `terms` products |q_in - z_in| <= 255 by |q_w| <= qmax
    is an integer below 2^24 (exact in float32), else float64."""
    return tf.float32 if terms * 255 * qmax_weight < 2 ** 24 else tf.float64


def requantize_xnnpack(acc, input_scale, kernel_scales, output_scale):
    """XNNPACK's requantization of int8 accumulators (channels last): rint(float32(acc) *
    ((float32(s_in) s_w[c]) / s_out)) in float32, ties to even, without the zero point or clip."""
    multiplier = (tf.cast(input_scale, tf.float32) * tf.cast(kernel_scales, tf.float32)) / tf.cast(output_scale, tf.float32)
    return tf.round(tf.cast(acc, tf.float32) * multiplier)


def power_of_two(exponent, dtype=tf.float32):
    """2^exponent (an integer tensor) exactly, built from its IEEE bits (tf.pow goes through
    exp/log); normal numbers only (|exponent| < 127 in float32, < 1023 in float64)."""
    exponent = tf.cast(exponent, tf.int64)
    if dtype == tf.float64:
        return tf.bitcast(tf.bitwise.left_shift(exponent + 1023, 52), tf.float64)
    return tf.bitcast(tf.cast(tf.bitwise.left_shift(exponent + 127, 23), tf.int32), tf.float32)


def quantize_host(x, grid):
    """The model input as the host hands it to an int8-input export, on `grid` (a
    `quantizers.Grid`): s (clip(floor(x / s + 1/2) + z, qmin, qmax) - z) with x / s in float64
    (`export.device.check.quantize_input`)."""
    scale = tf.cast(tf.cast(grid.scale, tf.float32), tf.float64)
    zero_point = tf.cast(grid.zero_point, tf.float64)
    q = tf.clip_by_value(tf.floor(tf.cast(x, tf.float64) / scale + 0.5) + zero_point, grid.qmin, grid.qmax)
    return tf.cast(q - zero_point, tf.float32) * tf.cast(grid.scale, tf.float32)


def add_xnnpack(a, grid_a, b, grid_b, grid_out):
    """XNNPACK's int8 ADD of a and b (on `grid_a`, `grid_b`) onto `grid_out`, without the output
    zero point and clip (the output quantizer adds them):

        r_a = float32(s_a) / float32(s_out), r_b likewise      float32 ratios
        n   = 20 - floor(log2(max(r_a, r_b)))                  the shift
        m_a = rint(r_a 2^n), m_b = rint(r_b 2^n)               20-bit multipliers (ties to even)
        k   = floor((2^(n-1) + (q_a - z_a) m_a + (q_b - z_b) m_b) / 2^n)    an arithmetic shift
        y   = s_out k

    (the integer reference's `elementwise._xnnpack_add`); every sum is an integer below 2^31,
    exact in float64."""
    s_a, s_b, s_out = (tf.cast(g.scale, tf.float32) for g in (grid_a, grid_b, grid_out))
    r_a, r_b = s_a / s_out, s_b / s_out
    biased = tf.bitwise.bitwise_and(tf.bitwise.right_shift(tf.bitcast(tf.maximum(r_a, r_b), tf.int32), 23), 0xFF)
    shift = 20 - (tf.cast(biased, tf.int64) - 127)
    m_a = tf.cast(tf.round(r_a * power_of_two(shift)), tf.float64)
    m_b = tf.cast(tf.round(r_b * power_of_two(shift)), tf.float64)
    centered_a = tf.cast(tf.round(tf.cast(a, tf.float32) / s_a), tf.float64)
    centered_b = tf.cast(tf.round(tf.cast(b, tf.float32) / s_b), tf.float64)
    total = power_of_two(shift - 1, tf.float64) + centered_a * m_a + centered_b * m_b
    return tf.cast(tf.floor(total * power_of_two(-shift, tf.float64)), tf.float32) * s_out


def _fused(layer) -> bool:
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") in _FUSED_ACTIVATIONS
    if isinstance(layer, keras.layers.ReLU):
        return layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6.0)
    return False


def output_quantizer(layer):
    """The activation quantizer of the int8 tensor `layer`'s output becomes on the device (through
    fused ReLU/ReLU6/linear activations), or None where there is none."""
    from toolkit.qat_layers import QuantizeActivation  # qat_layers imports this module

    current = layer
    while True:
        nodes = getattr(current, "_outbound_nodes", [])
        if len(nodes) != 1:
            return None
        current = nodes[0].operation
        if isinstance(current, QuantizeActivation):
            return current.quantizer
        if not _fused(current):
            return None


def set_device_arithmetic(model: keras.Model, family: str | None) -> int:
    """Sets every quantized kernel layer, `QuantAdd` and `QuantizeActivation` of `model` to
    compute its forward pass in `family`'s arithmetic (None: the float simulation); returns how
    many layers can (the others keep the float simulation). Compiled functions are rebuilt on
    their next use."""
    from toolkit.qat_layers import QUANT_KERNEL_LAYERS, QuantAdd, QuantizeActivation

    check_family(family)
    covered = 0
    for layer in model.layers:
        if isinstance(layer, (*QUANT_KERNEL_LAYERS, QuantAdd, QuantizeActivation)):
            layer.device_arithmetic = family
            covered += layer.follows_device() if family else 0
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)
    return covered


class DeviceArithmeticFrom(keras.callbacks.Callback):
    """From epoch `first_epoch` on (counted as `fit` counts, so a resumed run agrees), the model
    trains on `family`'s arithmetic (`set_device_arithmetic`): its compiled training step is
    rebuilt once, at that epoch's start, around whatever `train_step` is in force (the annealing's)."""

    def __init__(self, family: str, first_epoch: int):
        super().__init__()
        self.family = check_family(family)
        self.first_epoch = int(first_epoch)
        self.switched = False

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.first_epoch and not self.switched:
            set_device_arithmetic(self.model, self.family)
            self.model.make_train_function(force=True)
            self.switched = True
