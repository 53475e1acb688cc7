"""AdaRound's learned rounding (Nagel et al. 2020): the pieces, with their math and gradients.

Post-training, each weight w on a grid of step s is rounded down or up, as learned:

    w_soft = s (floor(w / s) + h(V)),   h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)

with zeta = 1.1 and gamma = -0.1 (the "rectified sigmoid": it reaches exactly 0 and 1 for
finite V, so a weight can settle on either neighbour). Its gradient is
dh/dV = (zeta - gamma) sigmoid(V) (1 - sigmoid(V)) where 0 < h < 1, and 0 where clipped.

V starts where h(V) equals the fractional part r = w/s - floor(w/s), so w_soft = w at first:
V = -log((zeta - gamma) / (r - gamma) - 1).

The regulariser pushes every h to 0 or 1:

    f_reg(V) = sum (1 - |2 h(V) - 1|^beta)

which is 0 when every h is 0 or 1 and n (the weight count) when every h is 1/2. beta anneals
from 20 (flat except near 0 and 1: the reconstruction loss decides) to 2 (a parabola: every h
is pushed), after a warm start without the regulariser. AIMET's cosine decay, with the warm
start ending at iteration w T of T:

    beta(t) = beta_end + (beta_start - beta_end) (1 + cos(pi (t - w T) / (T - w T))) / 2

beta(8000) = 4.636038969321072 for T = 10000, (20, 2), w = 0.2.
"""

from __future__ import annotations

import math

import keras
import numpy as np

__all__ = ["GAMMA", "ZETA", "beta_schedule", "hard_rounding", "in_warm_start", "initial_v", "rectified_sigmoid",
           "rounding_regularizer", "soft_weights"]

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v, zeta: float = ZETA, gamma: float = GAMMA):
    """h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)."""
    return keras.ops.clip(keras.ops.sigmoid(v) * (zeta - gamma) + gamma, 0.0, 1.0)


def initial_v(w, scale, zeta: float = ZETA, gamma: float = GAMMA) -> np.ndarray:
    """V with h(V) = w/s - floor(w/s) (so the soft weights start equal to w), float32.

    A fractional part of exactly 0 maps to the V where h reaches 0 (sigmoid(V) = -gamma /
    (zeta - gamma)); there is no finite V above 1, and r < 1 always."""
    ratio = np.asarray(w, np.float64) / np.asarray(scale, np.float64)
    rest = ratio - np.floor(ratio)
    return (-np.log((zeta - gamma) / (rest - gamma) - 1.0)).astype(np.float32)


def soft_weights(w_floor, v, scale):
    """s (floor(w/s) + h(V)): the weights while rounding is learned (`w_floor` = floor(w/s))."""
    return scale * (w_floor + rectified_sigmoid(v))


def hard_rounding(v) -> np.ndarray:
    """The learned decision, 1 (up) where h(V) >= 1/2 else 0 (down); after annealing, h is 0 or
    1 almost everywhere and the two agree."""
    return (np.asarray(rectified_sigmoid(v)) >= 0.5).astype(np.float32)


def rounding_regularizer(v, beta):
    """f_reg = sum (1 - |2 h(V) - 1|^beta) over every weight."""
    return keras.ops.sum(1.0 - keras.ops.power(keras.ops.abs(2.0 * rectified_sigmoid(v) - 1.0), beta))


def in_warm_start(iteration: int, iterations: int, warm_start: float = 0.2) -> bool:
    """Whether `iteration` (0-based) is in the warm start, when the regulariser is off."""
    return iteration < warm_start * iterations


def beta_schedule(iteration: int, iterations: int, beta_range: tuple[float, float] = (20.0, 2.0),
                  warm_start: float = 0.2) -> float:
    """AIMET's cosine decay of beta after the warm start (module docstring); beta_start during
    the warm start and beta_end from the last iteration on."""
    start, end = beta_range
    warm_end = warm_start * iterations
    if iterations <= warm_end:
        return float(end)
    progress = min(max((iteration - warm_end) / (iterations - warm_end), 0.0), 1.0)
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(progress * math.pi)))
