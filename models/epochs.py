"""Seeded epochs: the batches of epoch e are a function of (seed, e) alone.

Keras' own shuffling (`fit(x, y, shuffle=True)`) draws each epoch's order from a random state
that advances as training runs, so a run resumed at epoch k would see other batches than the
run that was never interrupted. Here epoch e's sample order is the stateless permutation

    order_e = stateless_shuffle(range(n), key=(seed, e))

and the batches are order_e[0:b], order_e[b:2b], ..., the last one short when b does not
divide n. The dataset is one epoch long and Keras draws it anew each epoch; `EpochClock`, a
callback given to the same `fit`, holds the epoch fit is in (set at the epoch's start, before
its first batch is drawn), and the dataset reads it when an epoch's batches begin. (Keras'
alternative, one endless stream with `steps_per_epoch`, lets a call of `steps_per_execution`
steps run across the end of an epoch.) `models.shards.Shards.stream` keys its epochs the same
way.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EpochClock", "array_epochs", "epoch_key", "epoch_steps", "keyed_epoch"]


def epoch_steps(samples: int, batch_size: int) -> int:
    """Batches per epoch: ceil(samples / batch_size)."""
    return math.ceil(samples / batch_size)


def epoch_key(seed: int, epoch):
    """The (seed, epoch) key of a stateless random op, as an int64 tensor of shape (2,)."""
    import tensorflow as tf

    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


class EpochClock:
    """The epoch a `fit` is in, for its dataset to read; `callback()` keeps it (give it to fit)."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    def callback(self):
        import keras

        clock = self

        class SetEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock.epoch = epoch

        return SetEpoch()


def keyed_epoch(one_epoch, steps: int, clock: EpochClock):
    """A one-epoch tf.data.Dataset of `steps` batches: `one_epoch(e)` (a function of an int64
    tensor e to a dataset) for the clock's epoch e when the epoch's iteration begins."""
    import tensorflow as tf

    def now(_):
        epoch = tf.numpy_function(lambda: np.int64(clock.epoch), [], tf.int64, stateful=True)
        return tf.reshape(epoch, [])

    return (tf.data.Dataset.from_tensors(np.int64(0)).map(now).flat_map(one_epoch)
            .apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(2))


def array_epochs(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, clock: EpochClock):
    """The batches of (x, y) for the clock's epoch, each epoch in its (seed, epoch) order."""
    import tensorflow as tf

    samples = len(x)
    x_all, y_all = tf.constant(x), tf.constant(y)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(samples, dtype=tf.int64), seed=epoch_key(seed, epoch))
        return (tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
                .map(lambda rows: (tf.gather(x_all, rows), tf.gather(y_all, rows))))

    return keyed_epoch(one_epoch, epoch_steps(samples, batch_size), clock)
