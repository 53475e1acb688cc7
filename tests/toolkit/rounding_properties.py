"""Property checks for a soft rounding curve f(x, alpha); each returns True when it holds.

Shared by the tests of softedge's functions (which must pass) and of the wrong recipes (which
must fail), so that every property is shown to be able to fail.
"""

import numpy as np
import tensorflow as tf

# Points away from every integer and half-integer by at least 0.02.
GRID = np.concatenate([np.linspace(n + 0.02, n + 0.48, 12) for n in range(-3, 3)] +
                      [np.linspace(n + 0.52, n + 0.98, 12) for n in range(-3, 3)])


def slope(fn, x, alpha):
    x = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x, alpha)
    return tape.gradient(y, x).numpy()


def tends_to_round(fn, large_alpha=1e4) -> bool:
    """f(x, large alpha) == round(x) away from the half-integers."""
    y = fn(tf.constant(GRID, tf.float64), large_alpha).numpy()
    return bool(np.allclose(y, np.round(GRID), atol=1e-6))


def is_identity_at_small_alpha(fn, small_alpha=1e-6) -> bool:
    y = fn(tf.constant(GRID, tf.float64), small_alpha).numpy()
    return bool(np.allclose(y, GRID, atol=1e-6))


def steepest_between_integers(fn, alpha=5.0) -> bool:
    """The slope at the half-integers (the rounding decision) exceeds the slope at the integers."""
    integers = np.arange(-3.0, 4.0)
    at_integers = slope(fn, integers, alpha)
    at_halves = slope(fn, integers + 0.5, alpha)
    return bool(np.all(at_halves > at_integers))


def is_monotone(fn, alpha) -> bool:
    x = np.linspace(-3.0, 3.0, 6001)
    y = fn(tf.constant(x, tf.float64), alpha).numpy()
    return bool(np.all(np.diff(y) >= -1e-12))


def is_continuous(fn, alpha, delta=1e-9) -> bool:
    """No jump at any integer or half-integer (where floor/round switch branches)."""
    points = np.arange(-3.0, 3.0, 0.5)
    below = fn(tf.constant(points - delta, tf.float64), alpha).numpy()
    above = fn(tf.constant(points + delta, tf.float64), alpha).numpy()
    return bool(np.all(np.abs(above - below) < 1e-6 * max(1.0, alpha)))


def has_fixed_points(fn, alpha) -> bool:
    """Integers and half-integers map to themselves."""
    points = np.arange(-3.0, 3.0, 0.5)
    return bool(np.allclose(fn(tf.constant(points, tf.float64), alpha).numpy(), points, atol=1e-9))
