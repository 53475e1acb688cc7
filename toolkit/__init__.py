"""softedge's library core: differentiable rounding, quantizers, QAT layers, schedules.

Pure TensorFlow / Keras 3, no file I/O. Importing it never imports tfmot or tf_keras, and imports TensorFlow only when a name that needs
it is first used (PEP 562 module `__getattr__`): the vocabularies (`toolkit.roundings`) and the
errors answer a command line's bad arguments before TensorFlow is loaded. Where softedge loads
TensorFlow first, its start-up lines stay off the terminal (`toolkit.quiet`).
"""

from __future__ import annotations

import importlib

from toolkit import quiet

quiet.install()

# name -> the module that defines it (the public API; `from toolkit import quantize` works as before).
_API = {
    "gradcheck": None, "rounding": None,  # submodules
    "fold_batch_norm": "toolkit.batchnorm_folding",
    "ArtifactError": "toolkit.errors", "ConfigError": "toolkit.errors", "SoftedgeError": "toolkit.errors",
    "UnsupportedLayerError": "toolkit.errors",
    "LAYER_TYPES": "toolkit.layer_types", "KernelLayerType": "toolkit.layer_types", "layer_type_of": "toolkit.layer_types",
    "QuantConv1D": "toolkit.qat_layers", "QuantConv2D": "toolkit.qat_layers", "QuantDense": "toolkit.qat_layers",
    "QuantDepthwiseConv2D": "toolkit.qat_layers", "QuantizeActivation": "toolkit.qat_layers",
    "calibrate": "toolkit.rewrite", "quantize": "toolkit.rewrite", "quantized_layers": "toolkit.rewrite",
    "ActivationQuantizer": "toolkit.quantizers", "Grid": "toolkit.quantizers", "Quantizer": "toolkit.quantizers",
    "WeightQuantizer": "toolkit.quantizers",
    "PtqRounding": "toolkit.roundings", "Rounding": "toolkit.roundings",
    "round_hard": "toolkit.rounding", "round_ste": "toolkit.rounding", "round_to": "toolkit.rounding",
    "sigmoid_round": "toolkit.rounding", "soft_round": "toolkit.rounding",
    "soft_round_conditional_mean": "toolkit.rounding", "soft_round_inverse": "toolkit.rounding",
    "AlphaSchedule": "toolkit.schedules", "AnnealRounding": "toolkit.schedules", "set_alpha": "toolkit.schedules",
    "QuantScheme": "toolkit.scheme",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    module = importlib.import_module(_API[name] or f"toolkit.{name}")
    value = module if _API[name] is None else getattr(module, name)
    globals()[name] = value  # also replaces a submodule bound under the same name (toolkit.rewrite's `quantize` is not a module)
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
