"""Properties of every rounding function, and the wrong recipes shown to fail the same checks."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from tests.toolkit import rounding_properties as props
from tests.toolkit import wrong_rounding
from toolkit import rounding
from toolkit.errors import ConfigError

SMOOTH = {"soft_round": rounding.soft_round, "sigmoid_round": rounding.sigmoid_round}
ALPHAS_FINITE = [0.0, 1e-6, 1e-2, 5.0, 1e6]
FLOAT_DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]

finite_arrays = hnp.arrays(
    np.float64,
    st.integers(1, 64),
    elements=st.floats(-1000, 1000, allow_nan=False, allow_infinity=False),
)


def as_alpha(kind, value):
    if kind == "float":
        return value
    if kind == "tensor":
        return tf.constant(value, tf.float32)
    return tf.Variable(value, dtype=tf.float32)


# ----------------------------------------------------------------- straight-through and hard


def test_round_ste_forward_is_round_half_to_even_and_gradient_is_one():
    x = tf.constant([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, 0.51, -0.51], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = rounding.round_ste(x)
    np.testing.assert_array_equal(y.numpy(), [-2, -2, 0, 0, 2, 2, 0, 1, -1])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), np.ones(9))


@given(finite_arrays)
def test_round_ste_equals_tf_round_bit_for_bit(x):
    for dtype in FLOAT_DTYPES:
        xt = tf.cast(x, dtype)
        np.testing.assert_array_equal(rounding.round_ste(xt).numpy(), tf.round(xt).numpy())


def test_round_hard_has_zero_gradient_not_none():
    x = tf.constant([0.2, 0.7, 1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = rounding.round_hard(x)
    np.testing.assert_array_equal(y.numpy(), [0, 1, 2])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), np.zeros(3))


# ----------------------------------------------------------------- soft curves: properties


@pytest.mark.parametrize("name", SMOOTH)
def test_small_alpha_is_identity(name):
    assert props.is_identity_at_small_alpha(SMOOTH[name])


@pytest.mark.parametrize("name", SMOOTH)
def test_large_alpha_is_round(name):
    assert props.tends_to_round(SMOOTH[name])


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_alpha_is_round_except_at_half_integers(name, dtype):
    """At HARD_ALPHA the curve is round(x) at every x but the half-integers it fixes: the grid of
    halves, up to 4 ulps either side of each, and random points; the gradient is finite (0 off the
    half-integers)."""
    grid = np.arange(-130, 130.5, 0.5).astype(dtype)
    near = [grid]
    up, down = grid, grid
    for _ in range(4):
        up, down = np.nextafter(up, dtype(np.inf)), np.nextafter(down, dtype(-np.inf))
        near += [up, down]
    x = np.concatenate([*near, np.random.default_rng(0).uniform(-130, 130, 10_000).astype(dtype)])
    half = (np.round(2 * x) == 2 * x) & (np.round(x) != x)   # 2x exact here: odd multiples of 1/2
    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        y = SMOOTH[name](x_tensor, rounding.HARD_ALPHA)
    gradient = tape.gradient(y, x_tensor).numpy()
    y = y.numpy()
    np.testing.assert_array_equal(y[~half], np.round(x[~half]))
    np.testing.assert_array_equal(y[half], x[half])
    assert np.all(np.isfinite(gradient)) and np.all(gradient[~half] == 0)


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0, 20.0])
def test_steepest_at_half_integers(name, alpha):
    assert props.steepest_between_integers(SMOOTH[name], alpha)


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0, 5.0, 50.0])
def test_monotone_continuous_with_fixed_points(name, alpha):
    fn = SMOOTH[name]
    assert props.is_monotone(fn, alpha)
    assert props.is_continuous(fn, alpha)
    assert props.has_fixed_points(fn, alpha)


@pytest.mark.parametrize("name", SMOOTH)
def test_slope_is_continuous_at_the_integers(name):
    # Pieces meet at the integers with equal slope (C^1): compare the slope on both sides.
    n = np.arange(-3.0, 4.0)
    left = props.slope(SMOOTH[name], n - 1e-9, 5.0)
    right = props.slope(SMOOTH[name], n + 1e-9, 5.0)
    np.testing.assert_allclose(left, right, rtol=1e-6)


@given(finite_arrays, st.sampled_from([0.3, 1.0, 4.0, 15.0]))
def test_soft_round_matches_the_paper_formula(x, alpha):
    m = np.floor(x) + 0.5
    expected = m + np.tanh(alpha * (x - m)) / (2 * np.tanh(alpha / 2))
    np.testing.assert_allclose(rounding.soft_round(tf.constant(x), alpha).numpy(), expected, atol=1e-9)


@given(finite_arrays, st.sampled_from([0.3, 1.0, 4.0, 15.0]))
def test_sigmoid_round_matches_the_rescaled_logistic(x, alpha):
    def sig(t):
        return 1 / (1 + np.exp(-t))

    f = x - np.floor(x)
    expected = np.floor(x) + (sig(alpha * (f - 0.5)) - sig(-alpha / 2)) / (sig(alpha / 2) - sig(-alpha / 2))
    np.testing.assert_allclose(rounding.sigmoid_round(tf.constant(x), alpha).numpy(), expected, atol=1e-9)
    # ... which is soft rounding with half the sharpness.
    np.testing.assert_allclose(
        rounding.sigmoid_round(tf.constant(x), alpha).numpy(),
        rounding.soft_round(tf.constant(x), alpha / 2).numpy(),
        atol=1e-12,
    )


# ----------------------------------------------------------------- inverse and conditional mean


@given(finite_arrays, st.sampled_from([0.0, 1e-2, 1.0, 5.0]))
def test_soft_round_inverse_round_trips(x, alpha):
    x = tf.constant(x)
    forward = rounding.soft_round(x, alpha)
    np.testing.assert_allclose(rounding.soft_round_inverse(forward, alpha).numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(rounding.soft_round(rounding.soft_round_inverse(x, alpha), alpha).numpy(), x.numpy(), atol=1e-9)


def test_soft_round_inverse_and_conditional_mean_limits():
    y = tf.constant(props.GRID, tf.float64)
    np.testing.assert_allclose(rounding.soft_round_inverse(y, 1e-6).numpy(), props.GRID, atol=1e-9)
    np.testing.assert_allclose(rounding.soft_round_conditional_mean(y, 1e-6).numpy(), props.GRID, atol=1e-9)
    # alpha -> inf: the inverse maps (n, n+1) to n + 1/2; the conditional mean becomes round.
    np.testing.assert_allclose(rounding.soft_round_inverse(y, 1e4).numpy(), np.floor(props.GRID) + 0.5, atol=1e-3)
    np.testing.assert_allclose(rounding.soft_round_conditional_mean(y, 1e4).numpy(), np.round(props.GRID), atol=1e-3)


# ----------------------------------------------------------------- finiteness, dtypes, XLA

ALL_ALPHA_FUNCTIONS = {
    "soft_round": rounding.soft_round,
    "sigmoid_round": rounding.sigmoid_round,
    "soft_round_inverse": rounding.soft_round_inverse,
    "soft_round_conditional_mean": rounding.soft_round_conditional_mean,
}


@pytest.mark.parametrize("name", ALL_ALPHA_FUNCTIONS)
@pytest.mark.parametrize("alpha", ALPHAS_FINITE)
@pytest.mark.parametrize("kind", ["float", "tensor", "variable"])
def test_values_and_gradients_finite(name, alpha, kind):
    fn = ALL_ALPHA_FUNCTIONS[name]
    # Integers, half-integers and points next to them: where the branches and atanh bite.
    x = tf.constant(np.concatenate([np.arange(-3, 3.5, 0.5), np.arange(-3, 3.5, 0.5) + 1e-7, [0.1, 0.9]]), tf.float32)
    alpha_value = as_alpha(kind, alpha)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if kind == "tensor":
            tape.watch(alpha_value)
        y = fn(x, alpha_value)
    assert np.all(np.isfinite(y.numpy()))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))
    if kind != "float":
        assert np.isfinite(tape.gradient(y, alpha_value).numpy())


def test_naive_where_gives_nan_gradient_at_zero_alpha():
    # The pitfall the implementation avoids: both branches of tf.where are differentiated.
    x = tf.constant([0.3])
    alpha = tf.Variable(0.0)
    with tf.GradientTape() as tape:
        m = tf.floor(x) + 0.5
        exact = m + tf.tanh(alpha * (x - m)) / (2 * tf.tanh(alpha / 2))
        y = tf.where(alpha < 1e-3, x, exact)
    assert np.isnan(tape.gradient(y, alpha).numpy())


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("method", ["ste", "soft", "sigmoid", "hard"])
def test_dtypes_are_preserved_and_accurate(dtype, method):
    x64 = np.linspace(-4.0, 4.0, 97) + 0.013
    x = tf.cast(x64, dtype)
    x_exact = tf.cast(x, tf.float64)  # the input as the dtype holds it
    y = rounding.apply(method, x, 3.0)
    assert y.dtype == dtype
    reference = rounding.apply(method, x_exact, 3.0).numpy()
    tolerance = {tf.float16: 1e-2, tf.bfloat16: 4e-2, tf.float32: 1e-6, tf.float64: 1e-12}[dtype]
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), reference, atol=tolerance * 4)


@pytest.mark.parametrize("method", ["ste", "soft", "sigmoid", "hard"])
@pytest.mark.parametrize("alpha", [0.0, 5.0])
def test_graph_and_xla_equal_eager(method, alpha):
    x = tf.constant(np.linspace(-3, 3, 61) + 0.01, tf.float32)
    alpha_var = tf.Variable(alpha)

    def value_and_grads(x, a):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = rounding.apply(method, x, a)
        return y, tape.gradient(y, x), tape.gradient(y, a, unconnected_gradients="zero")

    eager = value_and_grads(x, alpha_var)
    for compiled in (tf.function(value_and_grads), tf.function(value_and_grads, jit_compile=True)):
        for got, want in zip(compiled(x, alpha_var), eager, strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- round_to, get, errors


@given(finite_arrays)
def test_round_to_decimals_matches_numpy_and_keeps_the_gradient(x):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = rounding.round_to(xt, decimals=2)
    np.testing.assert_allclose(y.numpy(), np.round(x * 100) / 100, atol=1e-12)
    np.testing.assert_array_equal(tape.gradient(y, xt).numpy(), np.ones_like(x))


def test_round_to_step_and_soft_method():
    x = tf.constant([0.1, 0.3, 0.62, -0.88], tf.float64)
    np.testing.assert_allclose(rounding.round_to(x, step=0.25).numpy(), [0.0, 0.25, 0.5, -1.0])
    np.testing.assert_allclose(rounding.round_to(x, decimals=-1).numpy(), [0.0, 0.0, 0.0, 0.0])
    soft = rounding.round_to(x, step=0.25, method="soft", alpha=1e5).numpy()
    np.testing.assert_allclose(soft, [0.0, 0.25, 0.5, -1.0], atol=1e-9)
    np.testing.assert_allclose(rounding.round_to(x, step=0.25, method="soft", alpha=0.0).numpy(), x.numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 0.0}, "step"),
        ({"step": -1.0}, "step"),
        ({"step": 0.1, "decimals": 2}, "exactly one"),
        ({}, "exactly one"),
        ({"decimals": 1.5}, "decimals"),
        ({"step": 0.1, "method": "soft", "alpha": -1.0}, "alpha"),
        ({"step": 0.1, "method": "soft"}, "alpha"),
        ({"step": 0.1, "method": "bogus"}, "bogus"),
    ],
)
def test_round_to_rejects_invalid_arguments_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rounding.round_to(tf.constant([1.0]), **kwargs)


@pytest.mark.parametrize("alpha", [-1.0, tf.constant(-0.5), tf.Variable(-2.0), float("nan")])
def test_negative_alpha_is_rejected(alpha):
    with pytest.raises(ConfigError, match="alpha"):
        rounding.soft_round(tf.constant([0.2]), alpha)


def test_get_knows_every_method_and_lists_them_on_error():
    for name in ("ste", "soft", "sigmoid", "hard"):
        assert rounding.get(name) is rounding.METHODS[name]
    with pytest.raises(ValueError, match="'ste', 'soft', 'sigmoid', 'hard'"):
        rounding.get("round")


# ----------------------------------------------------------------- the wrong recipes fail


def test_blog_sigmoid_round_fails_the_rounding_properties():
    fn = wrong_rounding.blog_sigmoid_round
    assert not props.steepest_between_integers(fn, 5.0)  # steep at the integers instead
    assert not props.tends_to_round(fn)  # tends to floor(x) + 1/2, a staircase off by half
    assert not props.is_continuous(fn, 5.0)  # jumps at the half-integers
    assert not props.has_fixed_points(fn, 5.0)


def test_far_softmax_round_weights_the_far_integer():
    fn = wrong_rounding.far_softmax_round
    assert not props.tends_to_round(fn)
    y = fn(tf.constant([0.1], tf.float64), 50.0).numpy()
    assert y[0] > 0.9  # 0.1 "rounds" to 1


def test_finite_differences_of_round_are_zero_or_one_over_eps():
    x = tf.constant(props.GRID, tf.float64)
    fd = wrong_rounding.finite_difference_round_gradient(x, eps=1e-3).numpy()
    assert set(np.unique(np.round(fd, 6))) <= {0.0, 1000.0}
    # ... whereas the gradcheck differentiates a smooth surrogate and agrees with the analytic slope.
    from toolkit.gradcheck import gradcheck

    assert gradcheck("soft", 5.0).max_error_x < 1e-6
