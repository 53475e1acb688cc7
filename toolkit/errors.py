"""One exception hierarchy for softedge; the CLI maps each class to an exit code.

    SoftedgeError
    ├── ConfigError (also a ValueError): an argument or configuration value is invalid
    ├── UnsupportedLayerError: a layer softedge cannot quantize
    └── ArtifactError: a file is missing, corrupt, unsafe or cannot be written
"""

__all__ = ["ArtifactError", "ConfigError", "SoftedgeError", "UnsupportedLayerError"]


class SoftedgeError(Exception):
    """Base class of every error softedge raises on purpose."""


class ConfigError(SoftedgeError, ValueError):
    """An argument or configuration value is invalid; the message names it and its value."""


class UnsupportedLayerError(SoftedgeError, TypeError):
    """A layer that softedge cannot quantize; the message names the layer and its class."""


class ArtifactError(SoftedgeError, OSError):
    """A model, dataset or report file that is missing, corrupt, unsafe or not writable."""
