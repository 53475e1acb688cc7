"""`Rounding` and `PtqRounding`: the names of the rounding methods. The one list of them; the
scheme schema, the CLI's choices, the quantizers and the gradient check derive from it. Imports
nothing (the CLI reads it before TensorFlow is loaded); the functions are in `toolkit.rounding`."""

from __future__ import annotations

from enum import Enum

__all__ = ["PtqRounding", "Rounding"]


class Rounding(str, Enum):
    """How quantization-aware training rounds a weight (`toolkit.rounding` has the math)."""

    STE = "ste"          # round forward, identity gradient (straight-through)
    SOFT = "soft"        # soft round (Agustsson & Theis 2020), annealed by alpha
    SIGMOID = "sigmoid"  # floor plus a logistic step of the fraction, annealed by alpha
    HARD = "hard"        # plain rounding, zero gradient: the reference, and what export runs

    def __str__(self) -> str:
        return self.value

    @property
    def uses_alpha(self) -> bool:
        """A soft method: its sharpness alpha is annealed from smooth to hard."""
        return self in (Rounding.SOFT, Rounding.SIGMOID)

    @property
    def trainable(self) -> bool:
        """Has a useful gradient, so QAT can train with it."""
        return self is not Rounding.HARD

    @classmethod
    def training_names(cls) -> list[str]:
        return [method.value for method in cls if method.trainable]


class PtqRounding(str, Enum):
    """How post-training quantization rounds a layer's weights."""

    NEAREST = "nearest"    # round to nearest
    ADAROUND = "adaround"  # learned up/down per weight (Nagel et al. 2020), layer by layer

    def __str__(self) -> str:
        return self.value

    @classmethod
    def names(cls) -> list[str]:
        return [method.value for method in cls]
