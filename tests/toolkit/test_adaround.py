"""AdaRound's pieces: AIMET's beta schedule, the rectified sigmoid and its gradient, the
initialisation and the regulariser."""

import math

import numpy as np
import pytest
import tensorflow as tf

from toolkit import adaround
from toolkit.gradcheck import central_difference


def test_beta_schedule_matches_aimet_at_iteration_8000_of_10000():
    assert adaround.beta_schedule(8000, 10000, (20, 2), 0.2) == 4.636038969321072


def test_beta_schedule_ends_and_warm_start():
    assert adaround.beta_schedule(0, 10000) == 20.0 and adaround.beta_schedule(2000, 10000) == 20.0
    assert adaround.beta_schedule(10000, 10000) == 2.0
    assert adaround.beta_schedule(6000, 10000) == pytest.approx(11.0)   # half way after the warm start
    betas = [adaround.beta_schedule(t, 10000) for t in range(2000, 10001, 100)]
    assert all(a >= b for a, b in zip(betas[:-1], betas[1:], strict=True))   # decays monotonically
    assert adaround.in_warm_start(1999, 10000) and not adaround.in_warm_start(2000, 10000)


def test_rectified_sigmoid_reaches_0_and_1_and_is_the_stretched_sigmoid_between():
    v = np.linspace(-8, 8, 161).astype(np.float32)
    h = np.asarray(adaround.rectified_sigmoid(v))
    assert h.min() == 0.0 and h.max() == 1.0
    inside = (h > 0) & (h < 1)
    expected = 1.2 / (1 + np.exp(-v.astype(np.float64))) - 0.1
    np.testing.assert_allclose(h[inside], expected[inside], atol=1e-7)   # float32: 1.2 sigmoid - 0.1 cancels


def test_rectified_sigmoid_gradient_against_finite_differences():
    v = tf.constant(np.linspace(-4, 4, 81), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(v)
        h = adaround.rectified_sigmoid(v)
    analytic = tape.gradient(h, v).numpy()
    numeric = central_difference(adaround.rectified_sigmoid, v.numpy(), 1e-6)
    away_from_kinks = np.abs(np.asarray(h) - 0.5) < 0.49   # the clip's corners have no derivative
    np.testing.assert_allclose(analytic[away_from_kinks], numeric[away_from_kinks], atol=1e-6)
    sigmoid = 1 / (1 + np.exp(-v.numpy()))
    np.testing.assert_allclose(analytic[away_from_kinks], (1.2 * sigmoid * (1 - sigmoid))[away_from_kinks], rtol=1e-9)
    assert np.all(analytic[np.asarray(h) == 0] == 0) and np.all(analytic[np.asarray(h) == 1] == 0)


def test_initial_v_makes_the_soft_weights_the_weights():
    rng = np.random.default_rng(0)
    scale = np.float32(0.037)
    w = rng.normal(0, 0.2, size=1000).astype(np.float32)
    floor = np.floor(w / scale)
    soft = np.asarray(adaround.soft_weights(floor, adaround.initial_v(w, scale), scale))
    np.testing.assert_allclose(soft, w, atol=1e-6)
    decisions = adaround.hard_rounding(adaround.initial_v(w, scale))
    np.testing.assert_array_equal(floor + decisions, np.round(w / scale))   # at first: round to nearest


def test_regularizer_is_zero_at_decided_weights_and_n_at_one_half():
    decided = np.array([-20.0, 20.0, -9.0, 9.0], np.float32)         # h = 0, 1, 0, 1
    assert float(adaround.rounding_regularizer(decided, 2.0)) == 0.0
    undecided = np.zeros(5, np.float32)                               # h = 1/2
    for beta in (2.0, 20.0):
        assert float(adaround.rounding_regularizer(undecided, beta)) == pytest.approx(5.0)
    # A large beta leaves h = 0.8 almost unpenalised; beta = 2 penalises it 1 - 0.6^2.
    v = np.array([-math.log(1.2 / 0.9 - 1)], np.float32)            # h = 0.8
    assert float(adaround.rounding_regularizer(v, 20.0)) == pytest.approx(1 - 0.6 ** 20, rel=1e-4)
    assert float(adaround.rounding_regularizer(v, 2.0)) == pytest.approx(0.64, rel=1e-4)
