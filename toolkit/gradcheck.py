"""Gradient checks for the rounding methods: analytic gradient vs central finite differences.

Finite differences of `round` itself are meaningless (0 almost everywhere, 1/eps across a
step). The honest check differentiates each method's *surrogate*, the smooth function its
backward pass claims to differentiate (`rounding.surrogate`): the identity for "ste", the
curve itself for "soft" and "sigmoid", and round away from its steps for "hard".

    numeric(x) = (f(x + eps) - f(x - eps)) / (2 eps)            error O(eps^2 f''')
    error      = max |analytic - numeric| / max(1, max |numeric|)

Gradients w.r.t. `alpha` are checked the same way for the methods that take one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from toolkit import rounding

__all__ = ["GradcheckResult", "central_difference", "default_points", "gradcheck", "gradcheck_table"]


@dataclass(frozen=True)
class GradcheckResult:
    """Max scaled error of one method at one alpha (None where the method takes no alpha)."""

    method: str
    alpha: float | None
    max_error_x: float
    max_error_alpha: float | None
    max_abs_grad_x: float

    def to_dict(self) -> dict:
        return asdict(self)


def default_points(n: int = 601, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """An even grid offset by 0.0037 so that no point is within 1e-3 of an integer or half-integer."""
    return np.linspace(low, high, n) + 0.0037


def central_difference(fn, x: np.ndarray, eps: float) -> np.ndarray:
    """(fn(x + eps) - fn(x - eps)) / (2 eps), evaluated in float64."""
    x = tf.constant(x, tf.float64)
    return ((fn(x + eps) - fn(x - eps)) / (2.0 * eps)).numpy()


def _scaled_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    return float(np.max(np.abs(analytic - numeric)) / max(1.0, float(np.max(np.abs(numeric)))))


def gradcheck(method: str, alpha: float | None = None, x: np.ndarray | None = None, eps: float = 1e-6) -> GradcheckResult:
    """Checks the analytic gradient of `method` (d/dx, and d/dalpha where used) in float64.

    Args:
        method: a rounding method name ("ste", "soft", "sigmoid", "hard").
        alpha: the sharpness, required by "soft" and "sigmoid".
        x: points to check at (default `default_points()`).
        eps: finite-difference step.

    Returns:
        A `GradcheckResult` with the max scaled errors.
    """
    uses_alpha = rounding.uses_alpha(method)
    if uses_alpha and alpha is None:
        raise rounding.ConfigError(f"Method {method!r} needs `alpha`. Received: alpha=None")
    x = default_points() if x is None else np.asarray(x, np.float64)
    forward = rounding.get(method)
    smooth = rounding.surrogate(method)
    x_tensor = tf.constant(x, tf.float64)
    alpha_var = tf.Variable(float(alpha), dtype=tf.float64) if uses_alpha else None

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x_tensor)
        y = forward(x_tensor, alpha_var) if uses_alpha else forward(x_tensor)
        total = tf.reduce_sum(y)
    grad_x = tape.gradient(y, x_tensor, unconnected_gradients=tf.UnconnectedGradients.ZERO).numpy()
    numeric_x = central_difference(lambda t: smooth(t, alpha), x, eps)
    error_alpha = None
    if uses_alpha:
        grad_alpha = float(tape.gradient(total, alpha_var, unconnected_gradients=tf.UnconnectedGradients.ZERO))
        numeric_alpha = float(
            (tf.reduce_sum(smooth(x_tensor, alpha + eps)) - tf.reduce_sum(smooth(x_tensor, max(alpha - eps, 0.0))))
            / (alpha + eps - max(alpha - eps, 0.0))
        )
        error_alpha = abs(grad_alpha - numeric_alpha) / max(1.0, abs(numeric_alpha))
    return GradcheckResult(
        method=method,
        alpha=None if alpha is None else float(alpha),
        max_error_x=_scaled_error(grad_x, numeric_x),
        max_error_alpha=error_alpha,
        max_abs_grad_x=float(np.max(np.abs(grad_x))),
    )


def gradcheck_table(alphas=(0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0), eps: float = 1e-6) -> list[GradcheckResult]:
    """`gradcheck` for every method: once for "ste"/"hard", once per alpha for the soft ones."""
    results = []
    for method in rounding.METHODS:
        for alpha in alphas if rounding.uses_alpha(method) else (None,):
            results.append(gradcheck(method, alpha, eps=eps))
    return results
