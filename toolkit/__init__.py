"""softedge's library core: differentiable rounding, quantizers, QAT layers, schedules.

Pure TensorFlow / Keras 3, no file I/O. Importing it never imports tfmot or tf_keras.
"""

from toolkit import gradcheck, rounding
from toolkit.batchnorm_folding import fold_batch_norm
from toolkit.errors import ArtifactError, ConfigError, SoftedgeError, UnsupportedLayerError
from toolkit.layer_types import LAYER_TYPES, KernelLayerType, layer_type_of
from toolkit.qat_layers import (
    QuantConv1D,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantizeActivation,
)
from toolkit.quantize import calibrate, quantize, quantized_layers
from toolkit.quantizers import ActivationQuantizer, Grid, WeightQuantizer
from toolkit.rounding import (
    round_hard,
    round_ste,
    round_to,
    sigmoid_round,
    soft_round,
    soft_round_conditional_mean,
    soft_round_inverse,
)
from toolkit.schedules import AlphaSchedule, AnnealRounding, set_alpha
from toolkit.scheme import QuantScheme

__all__ = [
    "LAYER_TYPES",
    "KernelLayerType",
    "layer_type_of",
    "ActivationQuantizer",
    "AlphaSchedule",
    "AnnealRounding",
    "Grid",
    "QuantConv1D",
    "QuantConv2D",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantScheme",
    "QuantizeActivation",
    "WeightQuantizer",
    "calibrate",
    "fold_batch_norm",
    "quantize",
    "quantized_layers",
    "set_alpha",
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
