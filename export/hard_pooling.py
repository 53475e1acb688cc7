"""Average pooling in a hard model, and the device's rounding of its exact ties.

`harden` turns a `QuantAveragePooling` into FakeQuant (the input's grid) -> `HardAveragePooling`
-> FakeQuant (the same grid), which the converter turns into one int8 AVERAGE_POOL_2D keeping
its input's scale s and zero point z. On the device that op computes, over the n valid raw int8
inputs q_i of a window, round_half_away(sum q_i / n): a tie k + 1/2 goes away from zero *of the
raw value*, so down where the raw sum is negative (every window of a ReLU output, z = -128,
whose mean lies below the middle of the int8 range). The FakeQuant after the pooling rounds ties
up: on such ties hard Keras was one step above the device (the ResNet block of `make
bench-architectures`: 10.97% of its outputs more than half a step from XNNPACK's; 0.03% now).

The rounding cannot go into the converted graph: it takes ops (a sign, a floor) that the converter
would keep after the AVERAGE_POOL_2D. So the hard model converts as plain average pooling, and
inside `device_rounding(model)` (what validation measures with) `HardAveragePooling` computes the
device's result, s (round_half_away(mean(round(x / s) + z)) - z), on which the FakeQuant after it
is the identity (`toolkit.qat_layers.int8_average_pool`, which the QAT layer rounds with too).
"""

from __future__ import annotations

import contextlib
import contextvars

import keras
import tensorflow as tf

from toolkit.qat_layers import int8_average_pool
from toolkit.quantizers import nudged_grid

__all__ = ["HardAveragePooling", "device_rounding"]

_DEVICE_ROUNDING = contextvars.ContextVar("softedge_device_rounding", default=False)


@contextlib.contextmanager
def device_rounding(*models):
    """Inside: every `HardAveragePooling` rounds its ties as the device does. The models' cached
    predict functions are dropped on the way in and out (they were traced under the other rule)."""
    token = _DEVICE_ROUNDING.set(True)
    _forget_traces(models)
    try:
        yield
    finally:
        _DEVICE_ROUNDING.reset(token)
        _forget_traces(models)


def _forget_traces(models) -> None:
    for model in models:
        if hasattr(model, "predict_function"):
            model.predict_function = None


@keras.saving.register_keras_serializable(package="softedge")
class HardAveragePooling(keras.layers.Layer):
    """Average pooling (the config of a Keras AveragePooling1D/2D) whose input lies on the grid of
    [min_value, max_value] at `num_bits`; see the module docstring."""

    def __init__(self, pool: dict, min_value: float, max_value: float, num_bits: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.pool_config = dict(pool)
        self.min_value, self.max_value, self.num_bits = float(min_value), float(max_value), int(num_bits)
        config = self.pool_config.get("config", self.pool_config)
        self.pool_size, self.strides = config["pool_size"], config.get("strides") or config["pool_size"]
        self.padding, self.data_format = config.get("padding", "valid"), config.get("data_format")

    def _pool(self, values):
        return keras.ops.average_pool(values, self.pool_size, self.strides, self.padding, self.data_format)

    def call(self, inputs):
        if not _DEVICE_ROUNDING.get():
            return self._pool(inputs)
        grid = nudged_grid(tf.constant(self.min_value, tf.float32), tf.constant(self.max_value, tf.float32), self.num_bits)
        return int8_average_pool(self._pool, inputs, grid)

    def compute_output_shape(self, input_shape):
        return keras.layers.deserialize(self.pool_config).compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "pool": self.pool_config, "min_value": self.min_value,
                "max_value": self.max_value, "num_bits": self.num_bits}
