"""softedge's library core: differentiable rounding, quantizers, QAT layers, schedules.

Pure TensorFlow / Keras 3, no file I/O. Importing it never imports tfmot or tf_keras.
"""

from toolkit import gradcheck, rounding
from toolkit.errors import ArtifactError, ConfigError, SoftedgeError, UnsupportedLayerError
from toolkit.rounding import (
    round_hard,
    round_ste,
    round_to,
    sigmoid_round,
    soft_round,
    soft_round_conditional_mean,
    soft_round_inverse,
)

__all__ = [
    "ArtifactError",
    "ConfigError",
    "gradcheck",
    "SoftedgeError",
    "UnsupportedLayerError",
    "round_hard",
    "round_ste",
    "round_to",
    "rounding",
    "sigmoid_round",
    "soft_round",
    "soft_round_conditional_mean",
    "soft_round_inverse",
]
