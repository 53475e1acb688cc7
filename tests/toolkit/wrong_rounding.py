"""Three widely copied, wrong recipes for differentiable rounding (kept only to test the tests).

Each is run through the same property checks as softedge's functions, and must fail them.
"""

import tensorflow as tf


def blog_sigmoid_round(x, k):
    """sigmoid(k (x - round(x))) + round(x) - 1/2: steep at the integers, flat between them."""
    n = tf.round(x)
    return tf.sigmoid(k * (x - n)) + n - 0.5


def far_softmax_round(x, k):
    """Softmax over floor/ceil with logits +k * distance: weights the *far* integer."""
    lo, hi = tf.floor(x), tf.floor(x) + 1.0
    logits = tf.stack([k * (x - lo), k * (hi - x)], axis=-1)
    weights = tf.nn.softmax(logits, axis=-1)
    return weights[..., 0] * lo + weights[..., 1] * hi


def finite_difference_round_gradient(x, eps=1e-3):
    """(round(x + eps) - round(x)) / eps: 0 almost everywhere and 1/eps across a step."""
    return (tf.round(x + eps) - tf.round(x)) / eps
