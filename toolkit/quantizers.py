"""Uniform quantizers for one tensor: the fake-quant math and the integer grid it stands on.

Fake-quant forward, for scale s > 0, zero point z and integer range [qmin, qmax]:

    q     = R(clip(x / s + z, qmin, qmax))        R: a rounding method from `toolkit.rounding`
    x_hat = (q - z) * s

Gradient: d x_hat / d x = R'(x / s) inside the range, 0 where the clip is active (for "ste",
R' = 1: the clipped straight-through estimator). With a learned step size (LSQ, Esser et al.
2019) the step receives d x_hat / d s = (q - z) - x / s inside the range and qmin - z / qmax - z
outside, multiplied by the gradient scale g = 1 / sqrt(N * qmax).

A quantizer is a small configuration object (`get_config` / `from_config`, registered with
Keras) that creates its state as weights of the layer that owns it (`build(layer, ...)`), the
tfmot `Quantizer` idea without its wrappers. Every quantizer reports its grid
(`scale`, `zero_point`, `qmin`, `qmax`) so that the exporter can bake it exactly.

Grids:
- weights: symmetric, zero point 0, narrow range qmin = -qmax = -(2^(b-1) - 1). 2 bits is
  ternary {-1, 0, 1}. Scale per output channel or per tensor: max|w| / qmax (or learned).
- activations: 8-bit int8 style, qmin = -2^(b-1), qmax = 2^(b-1) - 1. Asymmetric: the range
  [min, max] from an exponential moving average of batch extremes, widened to contain 0, with
  the zero point nudged exactly as `tf.quantization.fake_quant_with_min_max_vars` nudges it
  (so the exporter's fake-quant op reproduces the grid). Symmetric: zero point 0.

References:
    S. K. Esser et al. "Learned Step Size Quantization", ICLR 2020.
    B. Jacob et al. "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018 (ranges by moving average, zero exactly
    representable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf

from toolkit import rounding as rounding_methods
from toolkit.errors import ConfigError

__all__ = [
    "ActivationQuantizer",
    "Grid",
    "Quantizer",
    "WeightQuantizer",
    "bias_on_accumulator_grid",
    "check_bits",
    "divide",
    "exported_range",
    "fake_quant",
    "hard_integers",
    "lsq_step",
    "max_abs_step",
    "mse_steps",
    "storage_fake_quant",
    "symmetric_qmax",
]

ALPHA_WEIGHT_NAME = "rounding_alpha"
_TINY = 1e-12


def check_bits(bits, name: str = "bits") -> int:
    """Validates a bit width in 2..8 and returns it as int."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ConfigError(f"Expected `{name}` between 2 and 8. Received: {name}={bits!r}")
    return bits


def symmetric_qmax(bits: int) -> int:
    """qmax = 2^(bits-1) - 1 of a symmetric narrow-range grid [-qmax, qmax] (2 bits: 1, ternary)."""
    return 2 ** (bits - 1) - 1


def divide(x, divisor) -> tf.Tensor:
    """x / divisor, correctly rounded in a `tf.function` as eagerly. Grappler's constant folding
    rewrites a division by a constant into a multiplication by its reciprocal (ReduceDivToReciprocalMul),
    which moves the last bit for divisors that are not powers of two (127, 255): a grid step
    computed in a compiled training step then differed from the one `harden` bakes and the
    converter stores, and an output at a rounding boundary rounded the other way. DivNoNan is
    not rewritten (the divisors here are positive)."""
    x = tf.convert_to_tensor(x)
    return tf.math.divide_no_nan(x, tf.cast(divisor, x.dtype))


def max_abs_step(kernel, reduce_axes, qmax: int) -> tf.Tensor:
    """s = max|w| / qmax over `reduce_axes` (keepdims), with no gradient: the extreme weight of
    each channel lands on +-qmax."""
    max_abs = tf.reduce_max(tf.abs(kernel), axis=reduce_axes, keepdims=True)
    return tf.stop_gradient(divide(tf.maximum(max_abs, _TINY), qmax))


def hard_integers(kernel, step, qmax: int) -> tf.Tensor:
    """q = clip(round(w / s), -qmax, qmax), ties to even (as float): the integers a kernel trained
    towards as alpha -> inf, and the ones export must store."""
    return tf.clip_by_value(tf.round(kernel / step), -qmax, qmax)


def storage_fake_quant(values, step, storage_bits: int = 8) -> tf.Tensor:
    """`values` (already on the grid of step s) through the fake-quant that makes the TFLite
    converter store them as they are: range +-(2^(storage_bits-1) - 1) s, narrow.

    With storage_bits 8 (int8) any grid of up to 8 bits is stored exactly with step s; with 4
    (packed int4) any grid of up to 4 bits. One step gives a per-tensor op, several a
    per-channel one on the last axis. (A b-bit fake-quant with +-qmax s instead makes the
    converter re-round a 3-bit grid onto ints -7..7: docs/design/weight-storage.md.)
    """
    limit = float(symmetric_qmax(storage_bits))
    step = tf.reshape(tf.convert_to_tensor(step), [-1])
    if step.shape[0] == 1:
        return tf.quantization.fake_quant_with_min_max_vars(values, -limit * step[0], limit * step[0],
                                                            num_bits=storage_bits, narrow_range=True)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(values, -limit * step, limit * step,
                                                                    num_bits=storage_bits, narrow_range=True)


def bias_on_accumulator_grid(bias, input_step: float, kernel_step):
    """b on the int32 grid that TFLite stores biases on: round(b / (s_in s_w)) s_in s_w, per output
    channel (s_in the step of the layer's int8 input, s_w the kernel step), in float64."""
    grid = np.float64(input_step) * np.asarray(kernel_step, np.float64).reshape(-1)
    return np.round(np.asarray(bias, np.float64) / grid) * grid


@dataclass(frozen=True)
class Grid:
    """The integer grid of a quantized tensor: x = (q - zero_point) * scale, q in [qmin, qmax]."""

    scale: tf.Tensor
    zero_point: tf.Tensor
    qmin: int
    qmax: int

    def min_max(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The range ((qmin - z) s, (qmax - z) s). TF's fake_quant_with_min_max_vars and the
        converter turn it back into this grid up to an ulp of the step (the roundings of the
        products and of (max - min) / levels); `exported_range` is the range that gives the
        grid back bit for bit, which `export.harden` bakes."""
        return (self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale


@runtime_checkable
class Quantizer(Protocol):
    """What every softedge quantizer is (weights: `WeightQuantizer`; activations:
    `ActivationQuantizer`): a Keras-serializable configuration whose state lives as weights of
    the layer that owns it, a fake-quant forward with a differentiable rounding, and the integer
    grid it stands on, which export bakes exactly.

    bits, qmin, qmax: the integer range; rounding: a `toolkit.roundings.Rounding` name.
    build(layer, ...): creates the state on `layer`. __call__(x, ...): the fake-quant forward
    x_hat = (R(clip(x / s + z, qmin, qmax)) - z) s. grid(...): the `Grid` (s, z, qmin, qmax).
    """

    bits: int
    qmin: int
    qmax: int
    rounding: str

    def build(self, layer, *args, **kwargs) -> None: ...

    def __call__(self, x, *args, **kwargs): ...

    def grid(self, *args) -> Grid: ...

    def get_config(self) -> dict: ...

    @classmethod
    def from_config(cls, config: dict): ...


def fake_quant(x, scale, zero_point, qmin: int, qmax: int, method: str = "ste", alpha=None):
    """x_hat = (R(clip(x / s + z, qmin, qmax)) - z) * s with R = rounding.get(method).

    `scale` and `zero_point` broadcast against `x`. Gradients as in the module docstring.
    """
    # Clip the real value, then round: the same forward as clipping the integers (the bounds
    # are integers, and R(v + n) = R(v) + n for integer n), but the gradient is cut exactly
    # outside [qmin, qmax] as in LSQ and in TF's fake_quant ops, not half a step further out.
    v = tf.clip_by_value(x / scale + zero_point, tf.cast(qmin, x.dtype), tf.cast(qmax, x.dtype))
    return (rounding_methods.apply(method, v, alpha) - zero_point) * scale


def _scale_gradient(value, factor: float):
    """Forward `value`, backward `factor * gradient` (LSQ's gradient scaling)."""
    scaled = value * factor
    return scaled + tf.stop_gradient(value - scaled)


def _add_alpha(layer: keras.layers.Layer, method: str, alpha: float):
    """The layer's rounding sharpness, a non-trainable weight that `AnnealRounding` sets."""
    if not rounding_methods.uses_alpha(method) or hasattr(layer, ALPHA_WEIGHT_NAME):
        return getattr(layer, ALPHA_WEIGHT_NAME, None)
    variable = layer.add_weight(
        name=ALPHA_WEIGHT_NAME,
        shape=(),
        initializer=keras.initializers.Constant(alpha),
        trainable=False,
        aggregation="only_first_replica",
    )
    setattr(layer, ALPHA_WEIGHT_NAME, variable)
    return variable


STEP_FRACTIONS = np.round(np.arange(0.30, 1.0001, 0.01), 2)


def lsq_step(kernel, reduce_axes: tuple[int, ...], qmax: int) -> tf.Tensor:
    """LSQ's initial step 2 mean|w| / sqrt(qmax) over `reduce_axes` (keepdims; Esser et al.)."""
    mean_abs = tf.reduce_mean(tf.abs(tf.convert_to_tensor(kernel)), axis=reduce_axes, keepdims=True)
    return tf.maximum(2.0 * mean_abs / math.sqrt(qmax), _TINY)


def mse_steps(kernel: np.ndarray, reduce_axes: tuple[int, ...], qmax: int) -> np.ndarray:
    """Per channel (keepdims over `reduce_axes`), the step s = f max|w| / qmax, f in
    STEP_FRACTIONS = {0.30, 0.31, ..., 1.00}, with the least squared rounding error
    ||w - s clip(round(w / s), -qmax, qmax)||^2: below 4 bits clipping a few large weights beats
    a grid too coarse for the rest. The start of a learned step, and PTQ's step."""
    kernel = np.asarray(kernel, np.float64)
    max_abs = np.maximum(np.max(np.abs(kernel), axis=reduce_axes, keepdims=True), 1e-12)
    best_error, best_step = None, None
    for fraction in STEP_FRACTIONS:
        step = fraction * max_abs / qmax
        error = np.sum((kernel - step * np.clip(np.round(kernel / step), -qmax, qmax)) ** 2, axis=reduce_axes,
                       keepdims=True)
        if best_error is None:
            best_error, best_step = error, step
        else:
            better = error < best_error
            best_error, best_step = np.where(better, error, best_error), np.where(better, step, best_step)
    return best_step.astype(np.float32)


@keras.saving.register_keras_serializable(package="softedge")
class WeightQuantizer:
    """Symmetric narrow-range quantizer for a kernel (zero point 0, ints in [-qmax, qmax]).

    Args:
        bits: 2..8. qmax = 2^(bits-1) - 1 (2 bits: ternary).
        rounding: "ste", "soft" or "sigmoid" (or "hard" for reference).
        per_channel: one scale per output channel (the kernel's `channel_axes`) or one in all.
        learned_step: LSQ: the step is a trainable weight, started at the kernel's MSE step
            (`mse_steps`), instead of being max|w| / qmax of the current kernel. LSQ's own
            start, 2 mean|w| / sqrt(qmax), trains worse: `make bench-recipe` (MNIST-1D CNN,
            hard accuracy, mean of 3 seeds) 83.2% vs 90.5% at 2 bits, 92.9% vs 94.5% at 3.
        alpha: the initial rounding sharpness (annealed by `AnnealRounding`).
    """

    def __init__(self, bits: int = 8, rounding: str = "soft", per_channel: bool = True,
                 learned_step: bool = False, alpha: float = 1.0):
        self.bits = check_bits(bits)
        rounding_methods.get(rounding)
        self.rounding = rounding
        self.per_channel = bool(per_channel)
        self.learned_step = bool(learned_step)
        self.alpha = float(alpha)
        self.qmax = symmetric_qmax(self.bits)
        self.qmin = -self.qmax
        self._alpha_variable = None
        self._step = None
        self._reduce_axes = None

    def get_config(self) -> dict:
        return {"bits": self.bits, "rounding": self.rounding, "per_channel": self.per_channel,
                "learned_step": self.learned_step, "alpha": self.alpha}

    @classmethod
    def from_config(cls, config: dict) -> WeightQuantizer:
        return cls(**config)

    def build(self, layer: keras.layers.Layer, kernel: keras.Variable, channel_axes: tuple[int, ...]) -> None:
        """Creates the quantizer's weights on `layer`.

        `channel_axes`: the kernel axes that index output channels (kept by per-channel scales).
        """
        rank = len(kernel.shape)
        channel_axes = tuple(a % rank for a in channel_axes) if self.per_channel else ()
        self._reduce_axes = tuple(a for a in range(rank) if a not in channel_axes)
        self._alpha_variable = _add_alpha(layer, self.rounding, self.alpha)
        if self.learned_step:
            initial = self._initial_step(kernel)
            self._step = layer.add_weight(name="kernel_step", shape=initial.shape,
                                          initializer=keras.initializers.Constant(initial.numpy()), trainable=True)
            per_step = math.prod(kernel.shape[a] for a in self._reduce_axes)
            self._gradient_factor = 1.0 / math.sqrt(per_step * self.qmax)

    @property
    def reduce_axes(self) -> tuple[int, ...]:
        """The kernel axes one step spans (all but the output-channel axes where per-channel);
        known once built."""
        if self._reduce_axes is None:
            raise ValueError("The weight quantizer is not built yet: its kernel axes are unknown.")
        return self._reduce_axes

    @property
    def step_variable(self):
        """The learned step (LSQ) weight, or None with max-abs scaling."""
        return self._step

    def _initial_step(self, kernel) -> tf.Tensor:
        """The MSE step of `kernel` (`mse_steps`, keepdims over the reduced axes). A kernel
        without a value yet (a layer built while tracing a graph, before its weights are
        loaded) starts at LSQ's 2 mean|w| / sqrt(qmax)."""
        if tf.executing_eagerly():
            return tf.constant(mse_steps(np.asarray(kernel), self._reduce_axes, self.qmax))
        return lsq_step(kernel, self._reduce_axes, self.qmax)

    def reset_step(self, kernel) -> None:
        """Re-initializes a learned step from `kernel` (after weights were copied in)."""
        if self._step is not None:
            self._step.assign(self._initial_step(kernel))

    def scale(self, kernel) -> tf.Tensor:
        """The step s, broadcastable against the kernel (keepdims over the reduced axes)."""
        if self._step is not None:
            return tf.abs(tf.convert_to_tensor(self._step)) + _TINY
        return max_abs_step(kernel, self._reduce_axes, self.qmax)

    def __call__(self, kernel) -> tf.Tensor:
        kernel = tf.convert_to_tensor(kernel)
        s = self.scale(kernel)
        if self._step is not None:
            s = _scale_gradient(s, self._gradient_factor)
        return fake_quant(kernel, s, tf.zeros((), kernel.dtype), self.qmin, self.qmax,
                          self.rounding, self._alpha_variable)

    def integers(self, kernel) -> tf.Tensor:
        """The hard integers q = clip(round(w / s), qmin, qmax), ties to even, as int32."""
        kernel = tf.convert_to_tensor(kernel)
        return tf.cast(hard_integers(kernel, self.scale(kernel), self.qmax), tf.int32)

    def grid(self, kernel) -> Grid:
        s = self.scale(tf.convert_to_tensor(kernel))
        return Grid(scale=s, zero_point=tf.zeros_like(s), qmin=self.qmin, qmax=self.qmax)


def nudged_grid(lo, hi, bits: int = 8) -> Grid:
    """The asymmetric grid TF's fake_quant_with_min_max_vars puts on [lo, hi] (lo <= 0 <= hi):
    s = (hi - lo) / (2^b - 1) and, in the unsigned domain, z_u = floor(-lo / s + 1/2) clipped to
    [0, 2^b - 1]; the signed zero point is z_u - 2^(b-1). The one definition of an activation
    grid: QAT quantizes on it, harden bakes it, and `FakeQuant.grid` reads it back (in float64)."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    levels = qmax - qmin
    s = divide(tf.maximum(hi - lo, _TINY), levels)
    zero_unsigned = tf.clip_by_value(tf.floor(-lo / s + 0.5), 0.0, float(levels))
    return Grid(scale=s, zero_point=zero_unsigned + qmin, qmin=qmin, qmax=qmax)


def exported_range(grid: Grid) -> tuple[float, float]:
    """A float32 range [lo, hi] that TF's fake_quant op and the TFLite converter both turn back
    into exactly `grid`'s scale s and zero point z (an activation grid, 2^b - 1 levels): harden
    bakes it, so the exported model computes on the steps it trained on.

    Both read a range as `nudged_grid` does, the op in float32 and the converter in float64 (then
    storing the scale as float32). `grid.min_max()`, ((qmin - z) s, (qmax - z) s) rounded to
    float32, does not always give s back: the roundings of the products and of (hi - lo) / levels
    can leave either an ulp off (seen: an input grid of step 0.031114843 stored as 0.031114845;
    its integers then differ from the trained model's on inputs near a rounding boundary, and
    every layer after it inherits them; about 7% of random grids). This keeps `min_max()` where
    both give s and z, else takes the nearest pair of float32 neighbours (up to 8 ulps each way)
    for which both do, else one for which the converter does (the device computes on the trained
    steps; the hard Keras model's op then steps an ulp off: about 4% of random 8-bit grids with
    lo < 0 have no range for the op, 255 s falling between two float32 differences); where none
    does, `min_max()`. ConfigError for a grid that is not finite."""
    scale, zero_point = np.float32(grid.scale), np.float32(grid.zero_point)
    lo0, hi0 = (np.float32(np.asarray(bound)) for bound in grid.min_max())
    if not np.all(np.isfinite([scale, zero_point, lo0, hi0])):
        raise ConfigError(f"Cannot export a non-finite activation grid (scale {scale}, zero point {zero_point}).")
    bits = (grid.qmax - grid.qmin + 1).bit_length() - 1
    offsets = sorted(((a, b) for a in range(-8, 9) for b in range(-8, 9)), key=lambda ab: (abs(ab[0]) + abs(ab[1]), ab))
    lo = np.array([_ulps(np.minimum(lo0, np.float32(0)), a) for a, _ in offsets], np.float32)
    hi = np.array([_ulps(np.maximum(hi0, np.float32(0)), b) for _, b in offsets], np.float32)
    recovered = {}
    for dtype in (tf.float64, tf.float32):   # the converter's reading, fake_quant's
        read = nudged_grid(tf.constant(lo, dtype), tf.constant(hi, dtype), bits)
        recovered[dtype] = ((np.asarray(read.scale).astype(np.float32) == scale)
                            & (np.asarray(read.zero_point).astype(np.float32) == zero_point) & (lo <= 0) & (hi >= 0))
    for found in (recovered[tf.float64] & recovered[tf.float32], recovered[tf.float64]):
        if found.any():
            first = int(np.argmax(found))
            return float(lo[first]), float(hi[first])
    return float(lo[0]), float(hi[0])


def _ulps(value: np.float32, steps: int) -> np.float32:
    """`value` moved `steps` float32 ulps (toward +inf for steps > 0)."""
    direction = np.float32(np.inf if steps > 0 else -np.inf)
    for _ in range(abs(steps)):
        value = np.nextafter(value, direction, dtype=np.float32)
    return value


def constant_range(values) -> tuple[tf.Tensor, tf.Tensor]:
    """[min(0, min v), max(0, max v)]: the range the converter quantizes a constant tensor on."""
    values = tf.convert_to_tensor(values)
    return tf.minimum(tf.reduce_min(values), 0.0), tf.maximum(tf.reduce_max(values), 0.0)


def constant_fake_quant(values) -> tf.Tensor:
    """A constant operand (of a MUL or ADD) on the int8 grid of its own range, per tensor,
    nudged as TF's FakeQuant: the integers the converter stores for it. Straight-through."""
    lo, hi = constant_range(values)
    g = nudged_grid(lo, hi, 8)
    scale, zero_point = tf.stop_gradient(g.scale), tf.stop_gradient(g.zero_point)
    return fake_quant(values, scale, zero_point, g.qmin, g.qmax, "ste")


@keras.saving.register_keras_serializable(package="softedge")
class ActivationQuantizer:
    """Quantizer for an activation tensor with a moving-average range, frozen in inference.

    Training: batch min/max update min_ema <- d min_ema + (1 - d) min(x) (the first batch sets
    it), likewise max; the updated range quantizes the batch. Inference: the stored range.
    `fixed_range=(lo, hi)` pins the range instead (e.g. softmax outputs [0, 1), as TFLite's
    int8 softmax requires scale 1/256, zero point -128).

    Args:
        bits: 2..8 (the exporter needs 8 for int8 tensors).
        symmetric: zero point 0 and range [-m, m], m = max(|min|, |max|).
        rounding: rounding method of the fake quant ("ste" by default).
        ema_decay: d in the moving averages.
        fixed_range: optional (lo, hi) that replaces the moving average.
        alpha: initial sharpness for a soft rounding method.
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, rounding: str = "ste",
                 ema_decay: float = 0.99, fixed_range: tuple[float, float] | None = None, alpha: float = 1.0):
        self.bits = check_bits(bits, "activation_bits")
        rounding_methods.get(rounding)
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"Expected `ema_decay` in [0, 1). Received: ema_decay={ema_decay}")
        if fixed_range is not None and not fixed_range[0] < fixed_range[1]:
            raise ConfigError(f"Expected `fixed_range` (lo, hi) with lo < hi. Received: fixed_range={fixed_range}")
        self.symmetric = bool(symmetric)
        self.rounding = rounding
        self.ema_decay = float(ema_decay)
        self.fixed_range = None if fixed_range is None else (float(fixed_range[0]), float(fixed_range[1]))
        self.alpha = float(alpha)
        self.qmin = -(2 ** (self.bits - 1))
        self.qmax = 2 ** (self.bits - 1) - 1
        self._alpha_variable = None

    def get_config(self) -> dict:
        return {"bits": self.bits, "symmetric": self.symmetric, "rounding": self.rounding,
                "ema_decay": self.ema_decay, "fixed_range": self.fixed_range, "alpha": self.alpha}

    @classmethod
    def from_config(cls, config: dict) -> ActivationQuantizer:
        config = dict(config)
        if config.get("fixed_range") is not None:
            config["fixed_range"] = tuple(config["fixed_range"])
        return cls(**config)

    def build(self, layer: keras.layers.Layer) -> None:
        lo, hi = self.fixed_range or (0.0, 0.0)
        self.range_min = layer.add_weight(name="range_min", shape=(), initializer=keras.initializers.Constant(lo),
                                          trainable=False, aggregation="mean")
        self.range_max = layer.add_weight(name="range_max", shape=(), initializer=keras.initializers.Constant(hi),
                                          trainable=False, aggregation="mean")
        self.range_initialized = layer.add_weight(
            name="range_initialized", shape=(), trainable=False, aggregation="only_first_replica",
            initializer=keras.initializers.Constant(1.0 if self.fixed_range else 0.0))
        self._alpha_variable = _add_alpha(layer, self.rounding, self.alpha)

    def update_range(self, x) -> None:
        """One moving-average step from the batch `x` (no-op with a fixed range). Under a
        distribution strategy the batch is the global one: the replicas' minima and maxima are
        gathered, so every replica steps with the global batch's min and max, as one device
        would (averaging the replicas' ranges would give the mean of their maxima instead)."""
        if self.fixed_range is not None:
            return
        batch_min = tf.cast(tf.reduce_min(x), self.range_min.dtype)
        batch_max = tf.cast(tf.reduce_max(x), self.range_max.dtype)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            extremes = replica.all_gather(tf.stack([-batch_min, batch_max])[tf.newaxis], axis=0)
            batch_min, batch_max = -tf.reduce_max(extremes[:, 0]), tf.reduce_max(extremes[:, 1])
        seen = tf.convert_to_tensor(self.range_initialized) > 0.5
        d = self.ema_decay
        self.range_min.assign(tf.where(seen, d * self.range_min + (1 - d) * batch_min, batch_min))
        self.range_max.assign(tf.where(seen, d * self.range_max + (1 - d) * batch_max, batch_max))
        self.range_initialized.assign(tf.ones_like(self.range_initialized))

    def grid(self) -> Grid:
        """Scale and zero point from the stored range, nudged as TF's fake_quant nudges them.

        The range is widened to contain 0. Asymmetric: s = (max - min) / (2^b - 1) and, in the
        unsigned domain [0, 2^b - 1], z_u = floor(-min / s + 1/2) clipped (the op's half-up
        rounding); the signed zero point is z_u - 2^(b-1). Symmetric: s = max(|min|, |max|) /
        qmax, zero point 0.
        """
        lo = tf.minimum(tf.convert_to_tensor(self.range_min), 0.0)
        hi = tf.maximum(tf.convert_to_tensor(self.range_max), 0.0)
        if self.symmetric:
            s = divide(tf.maximum(tf.maximum(-lo, hi), _TINY), self.qmax)
            return Grid(scale=s, zero_point=tf.zeros_like(s), qmin=self.qmin, qmax=self.qmax)
        return nudged_grid(lo, hi, self.bits)

    def min_max(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The nudged range ((qmin - z) s, (qmax - z) s) of the grid (`Grid.min_max`; export bakes
        `exported_range(self.grid())`)."""
        return self.grid().min_max()

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        if training:
            self.update_range(x)
        g = self.grid()
        scale = tf.cast(tf.stop_gradient(g.scale), x.dtype)
        zero_point = tf.cast(tf.stop_gradient(g.zero_point), x.dtype)
        return fake_quant(x, scale, zero_point, g.qmin, g.qmax, self.rounding, self._alpha_variable)

