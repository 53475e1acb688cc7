"""Differentiable rounding: every rounding function softedge trains with.

Each function takes and returns a tensor of any float dtype (float16, bfloat16, float32,
float64) and works eagerly, inside `tf.function` and with `jit_compile=True`. 16-bit inputs are
computed in float32 and cast back (the tanh ratios below lose all precision in 16 bits).

`alpha` (the sharpness) may be a Python number, a tensor or a `tf.Variable` that a schedule
anneals. Values and gradients (w.r.t. `x` and `alpha`) are finite for every alpha >= 0,
including alpha == 0 given as a tensor: below `_SMALL_ALPHA` a Taylor expansion replaces the
0/0 ratio, and the exact branch is evaluated at a safe alpha so that `tf.where` never
differentiates a NaN (the usual `tf.where(alpha < eps, x, y)` does, because the untaken branch
still takes part in the backward pass).

| name      | function        | forward                                   | gradient d/dx                    |
|-----------|-----------------|-------------------------------------------|----------------------------------|
| "ste"     | `round_ste`     | round(x) (ties to even)                   | 1                                |
| "soft"    | `soft_round`    | m + tanh(a r) / (2 tanh(a/2))             | a (1 - tanh^2(a r)) / (2 tanh(a/2)) |
| "sigmoid" | `sigmoid_round` | floor(x) + (sig(a(f-1/2)) - sig(-a/2)) / (sig(a/2) - sig(-a/2)) | see `sigmoid_round` |
| "hard"    | `round_hard`    | round(x) (ties to even)                   | 0                                |

with m = floor(x) + 1/2, r = x - m, f = x - floor(x).

References:
    E. Agustsson, L. Theis. "Universally Quantized Neural Compression", NeurIPS 2020, sec. 4.1.
    Y. Bengio, N. Leonard, A. Courville. "Estimating or Propagating Gradients Through Stochastic
    Neurons for Conditional Computation", 2013 (straight-through estimator).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import tensorflow as tf

from toolkit.errors import ConfigError
from toolkit.roundings import Rounding

__all__ = [
    "HARD_ALPHA",
    "METHODS",
    "get",
    "round_hard",
    "round_ste",
    "round_to",
    "sigmoid_round",
    "soft_round",
    "soft_round_conditional_mean",
    "soft_round_inverse",
    "surrogate",
    "uses_alpha",
]

# Below this alpha the tanh ratios are replaced by their Taylor expansion to O(alpha^2); the
# first neglected term is O(alpha^4) = 1e-12, far below float32 resolution.
_SMALL_ALPHA = 1e-3

# The sharpness at which "soft" and "sigmoid" are round(x) in float32 and float64 for |x| < 2^22,
# except at the exact half-integers (which every alpha fixes): tanh(alpha r) is +-1 once
# |alpha r| > 9, and the smallest nonzero |r| = |x - floor(x) - 1/2| in float32 is 2^-25 (3e-8).
# Finite (a model holding it passes the finite-weight checks), and its gradient alpha / 2 at a
# half-integer is finite in float32. Training ends here (`models.training.Recipe.end_hard`).
HARD_ALPHA = 1e30


# ----------------------------------------------------------------------------- helpers


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    """float64 stays float64; every narrower float is computed in float32."""
    if not dtype.is_floating:
        raise TypeError(f"Expected a float tensor. Received: dtype={dtype.name}")
    return tf.float64 if dtype == tf.float64 else tf.float32


def _as_float(x) -> tuple[tf.Tensor, tf.DType]:
    """Returns (x in its compute dtype, the dtype to cast the result back to)."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return tf.cast(x, _compute_dtype(x.dtype)), x.dtype


def _check_alpha(alpha) -> None:
    """Raises ValueError for a negative or missing alpha whose value is known now.

    Python numbers and eager tensors are checked; a symbolic tensor inside `tf.function` cannot
    be, and negative values there give the formula's (meaningless but finite) result.
    """
    if alpha is None:
        raise ConfigError("Expected `alpha` >= 0 for a soft rounding method. Received: alpha=None")
    if isinstance(alpha, numbers.Real):
        value = float(alpha)
    elif tf.executing_eagerly() and not isinstance(alpha, tf.Variable):
        value = float(tf.reduce_min(tf.convert_to_tensor(alpha)))
    elif isinstance(alpha, tf.Variable) and tf.executing_eagerly():
        value = float(tf.reduce_min(alpha))
    else:
        return
    if not value >= 0.0:  # also catches NaN
        raise ConfigError(f"Expected `alpha` >= 0. Received: alpha={value}")


def _alpha_tensor(alpha, dtype: tf.DType) -> tf.Tensor:
    _check_alpha(alpha)
    # dtype_hint: a Python float becomes `dtype` directly (via float32 it would lose digits).
    return tf.cast(tf.convert_to_tensor(alpha, dtype_hint=dtype), dtype)


def _tanh_ramp(r: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """tanh(alpha r) / (2 tanh(alpha / 2)) for r in [-1/2, 1/2], finite for every alpha >= 0.

    It maps [-1/2, 1/2] onto itself, fixing -1/2, 0 and 1/2. For alpha < _SMALL_ALPHA the
    Taylor expansion r + alpha^2 r (1/12 - r^2/3) is used instead (the exact ratio is 0/0 at
    alpha = 0); its derivative in alpha, 2 alpha r (1/12 - r^2/3), is the exact one to O(alpha^3).
    """
    small = alpha < _SMALL_ALPHA
    safe_alpha = tf.where(small, tf.ones_like(alpha), alpha)
    exact = tf.tanh(safe_alpha * r) / (2.0 * tf.tanh(safe_alpha / 2.0))
    small_alpha = tf.where(small, alpha, tf.zeros_like(alpha))   # alpha^2 would overflow at HARD_ALPHA
    taylor = r + tf.square(small_alpha) * r * (1.0 / 12.0 - tf.square(r) / 3.0)
    return tf.where(small, taylor, exact)


def _tanh_ramp_inverse(r: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """The inverse of `_tanh_ramp` in r: atanh(2 tanh(alpha/2) r) / alpha, clipped to [-1/2, 1/2].

    Small alpha: r + alpha^2 r (r^2/3 - 1/12). The atanh argument is kept inside
    (-1 + eps, 1 - eps): at large alpha, 2 tanh(alpha/2) r reaches +-1 exactly at r = +-1/2 and
    atanh would give inf there and NaN gradients through the clip.
    """
    small = alpha < _SMALL_ALPHA
    safe_alpha = tf.where(small, tf.ones_like(alpha), alpha)
    bound = 1.0 - tf.constant(1e-7 if r.dtype == tf.float32 else 1e-15, r.dtype)
    z = tf.clip_by_value(2.0 * tf.tanh(safe_alpha / 2.0) * r, -bound, bound)
    exact = tf.clip_by_value(tf.atanh(z) / safe_alpha, -0.5, 0.5)
    small_alpha = tf.where(small, alpha, tf.zeros_like(alpha))
    taylor = r + tf.square(small_alpha) * r * (tf.square(r) / 3.0 - 1.0 / 12.0)
    return tf.where(small, taylor, exact)


# ----------------------------------------------------------------------------- methods


def round_ste(x):
    """Round to the nearest integer with a straight-through gradient.

    Forward:  round(x), ties to even (`tf.round`).
    Gradient: d/dx = 1 everywhere (the identity's), i.e. the surrogate is f(x) = x.
    Computed as x + stop_gradient(round(x) - x), which is exact in floating point
    (x - round(x) is representable, so the sum is round(x) bit for bit).
    """
    x = tf.convert_to_tensor(x)
    return x + tf.stop_gradient(tf.round(x) - x)


@tf.custom_gradient
def _round_zero_grad(x):
    def grad(upstream):
        return tf.zeros_like(upstream)

    return tf.round(x), grad


def round_hard(x):
    """Plain rounding, for reference: forward round(x) (ties to even), gradient exactly 0.

    (`tf.round` alone has no registered gradient and makes `tape.gradient` return None; this
    returns zeros so that it can stand wherever the other methods do.)
    """
    return _round_zero_grad(tf.convert_to_tensor(x))


def soft_round(x, alpha):
    """Soft rounding (Agustsson & Theis 2020, sec. 4.1).

        s_alpha(x) = m + tanh(alpha r) / (2 tanh(alpha / 2)),   m = floor(x) + 1/2,  r = x - m.

    Gradient: d s / dx = alpha (1 - tanh^2(alpha r)) / (2 tanh(alpha / 2)): largest at the
    half-integers (the rounding decision), smallest at the integers; continuous everywhere
    (s is C^1, its pieces meet with equal slope at the integers).
    Limits: alpha -> 0 gives the identity (slope 1); alpha -> inf gives round(x) (except at
    exact half-integers, which stay fixed). Fixed points for every alpha: integers and
    half-integers. Monotone increasing for every alpha >= 0.

    Args:
        x: float tensor.
        alpha: sharpness >= 0 (Python number, tensor or `tf.Variable`).
    """
    x, out_dtype = _as_float(x)
    alpha = _alpha_tensor(alpha, x.dtype)
    m = tf.floor(x) + 0.5
    return tf.cast(m + _tanh_ramp(x - m, alpha), out_dtype)


def soft_round_inverse(y, alpha):
    """Inverse of `soft_round` (Agustsson & Theis 2020, sec. 4.1).

        s_alpha^-1(y) = m + atanh(2 tanh(alpha / 2) r) / alpha,   m = floor(y) + 1/2,  r = y - m.

    Gradient: d/dy = 2 tanh(alpha/2) / (alpha (1 - (2 tanh(alpha/2) r)^2)), the reciprocal of
    soft_round's slope; it grows without bound near the integers as alpha -> inf, and is kept
    finite there by clipping the atanh argument just inside (-1, 1).
    Limits: alpha -> 0 is the identity; alpha -> inf maps (n, n+1) to n + 1/2.
    """
    y, out_dtype = _as_float(y)
    alpha = _alpha_tensor(alpha, y.dtype)
    m = tf.floor(y) + 0.5
    return tf.cast(m + _tanh_ramp_inverse(y - m, alpha), out_dtype)


def soft_round_conditional_mean(y, alpha):
    """E[X | s_alpha(X) + U = y] for U ~ Uniform(-1/2, 1/2) and X uniform on [y - 1/2, y + 1/2].

        g_alpha(y) = s_alpha^-1(y - 1/2) + 1/2          (Agustsson & Theis 2020, sec. 4.1)

    Use it to decode a soft-rounded value with additive uniform noise. Limits: alpha -> 0 is
    the identity; alpha -> inf is round(y) (the noise is then fully removed).
    Gradient: that of `soft_round_inverse`, shifted by 1/2.
    """
    y, out_dtype = _as_float(y)
    return tf.cast(soft_round_inverse(y - 0.5, alpha) + 0.5, out_dtype)


def sigmoid_round(x, alpha):
    """Sigmoid rounding: floor(x) plus a logistic step of the fractional part, rescaled.

        f = x - floor(x),   sig(t) = 1 / (1 + exp(-t))
        g_alpha(x) = floor(x) + (sig(alpha (f - 1/2)) - sig(-alpha/2)) / (sig(alpha/2) - sig(-alpha/2))

    The rescaling makes g continuous at the integers (g = n at f = 0 and f = 1), fixes every
    n + 1/2, and keeps it monotone. Since sig(t) - 1/2 = tanh(t/2) / 2 it is computed as
        g_alpha(x) = floor(x) + 1/2 + tanh(alpha (f - 1/2) / 2) / (2 tanh(alpha / 4)),
    (the sigmoid differences cancel catastrophically at small alpha), which shows that
    sigmoid_round(x, alpha) == soft_round(x, alpha / 2): the same curve family, parameterized by
    the logistic's own sharpness.
    Gradient: d g / dx = alpha sig'(alpha (f - 1/2)) / (sig(alpha/2) - sig(-alpha/2))
                       = alpha (1 - tanh^2(alpha (f - 1/2) / 2)) / (4 tanh(alpha / 4)).
    Limits: alpha -> 0 is the identity, alpha -> inf is round(x) (half-integers stay fixed).

    Not to be confused with the common recipe sigmoid(k (x - round(x))) + round(x) - 1/2,
    which is steepest at the integers and flat between them (the opposite of rounding).
    """
    x, out_dtype = _as_float(x)
    alpha = _alpha_tensor(alpha, x.dtype)
    m = tf.floor(x) + 0.5
    return tf.cast(m + _tanh_ramp(x - m, alpha / 2.0), out_dtype)


# ----------------------------------------------------------------------------- registry

METHODS: dict[str, Callable] = {
    Rounding.STE.value: round_ste,
    Rounding.SOFT.value: soft_round,
    Rounding.SIGMOID.value: sigmoid_round,
    Rounding.HARD.value: round_hard,
}


def get(name: str) -> Callable:
    """The rounding function registered under `name` ("ste", "soft", "sigmoid", "hard").

    "soft" and "sigmoid" take (x, alpha); "ste" and "hard" take (x). A callable is returned
    unchanged, so that configs may hold either a name or a function.
    """
    if callable(name):
        return name
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in METHODS)
        raise ConfigError(f"Unknown rounding method {name!r}. Expected one of: {valid}.") from None


def uses_alpha(name: str) -> bool:
    """Whether the method `name` takes a sharpness `alpha`."""
    get(name)
    return not callable(name) and Rounding(name).uses_alpha


def apply(name: str, x, alpha=None):
    """Rounds `x` with the method `name`; `alpha` is required by the soft methods, ignored by the rest."""
    fn = get(name)
    return fn(x, alpha) if uses_alpha(name) else fn(x)


def surrogate(name: str) -> Callable:
    """The smooth function whose derivative each method's backward pass computes.

    "ste": the identity; "soft"/"sigmoid": the method itself; "hard": round (its derivative is
    0 wherever it is differentiable). `gradcheck` differentiates these numerically.
    """
    get(name)
    if name == "ste":
        return lambda x, alpha=None: tf.identity(x)
    if name == "hard":
        return lambda x, alpha=None: tf.round(x)
    return METHODS[name]


def round_to(x, step=None, decimals=None, method: str = "ste", alpha=None):
    """Round `x` to the grid {k * step} with any rounding method, keeping its gradient.

        round_to(x, step) = step * R(x / step),   R = get(method)
        round_to(x, decimals=d) = R(x * 10^d) / 10^d   (10^d is exact; 10^-d is not)

    With method="ste" the forward is exact rounding to the grid and d/dx = 1; with "soft" or
    "sigmoid" it is the smooth curve on the scaled grid, with slope R'(x / step).

    Args:
        x: float tensor.
        step: grid spacing > 0. Mutually exclusive with `decimals`.
        decimals: integer number of decimals (may be negative: -2 rounds to hundreds).
        method: "ste", "soft", "sigmoid" or "hard".
        alpha: sharpness for "soft" and "sigmoid" (required there).

    Raises:
        ValueError: both or neither of step/decimals, step <= 0, non-integer decimals, an
            unknown method, or a missing/negative alpha.
    """
    get(method)
    if (step is None) == (decimals is None):
        raise ConfigError(
            f"Expected exactly one of `step` or `decimals`. Received: step={step}, decimals={decimals}"
        )
    if uses_alpha(method):
        _check_alpha(alpha)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if decimals is not None:
        if isinstance(decimals, bool) or not isinstance(decimals, numbers.Integral):
            raise ConfigError(f"Expected an integer `decimals`. Received: decimals={decimals!r}")
        if decimals >= 0:
            factor = tf.constant(10.0 ** int(decimals), x.dtype)
            return apply(method, x * factor, alpha) / factor
        step = 10.0 ** (-int(decimals))
    if isinstance(step, numbers.Real) and not step > 0:
        raise ConfigError(f"Expected `step` > 0. Received: step={step}")
    if not isinstance(step, numbers.Real) and tf.executing_eagerly():
        if not float(tf.reduce_min(tf.convert_to_tensor(step))) > 0:
            raise ConfigError(f"Expected `step` > 0. Received: step={step}")
    step = tf.cast(step, x.dtype)
    return apply(method, x / step, alpha) * step
