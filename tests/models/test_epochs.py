"""Seeded epochs: epoch e's batches depend on (seed, e) alone, and fit runs whole epochs."""

import keras
import numpy as np

from models.epochs import EpochClock, array_epochs, epoch_key, epoch_steps
from tests.seeds import seeded


def _epoch(dataset, clock, epoch):
    clock.epoch = epoch
    return [(x.copy(), y.copy()) for x, y in dataset.as_numpy_iterator()]


def test_an_epoch_is_every_sample_once_in_an_order_keyed_by_seed_and_epoch():
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100) % 7
    clock = EpochClock()
    dataset = array_epochs(x, y, batch_size=32, seed=5, clock=clock)
    first = _epoch(dataset, clock, 0)
    assert [len(batch_x) for batch_x, _ in first] == [32, 32, 32, 4]   # the last batch short
    order = np.concatenate([batch_x[:, 0] for batch_x, _ in first]).astype(int)
    assert sorted(order) == list(range(100)) and list(order) != list(range(100))
    for batch_x, batch_y in first:
        np.testing.assert_array_equal(batch_y, batch_x[:, 0].astype(int) % 7)   # labels travel with samples
    third = np.concatenate([b[:, 0] for b, _ in _epoch(dataset, clock, 2)])
    again = np.concatenate([b[:, 0] for b, _ in _epoch(dataset, clock, 0)])
    np.testing.assert_array_equal(again, order)            # epoch 0 again: the same order, after epoch 2
    assert list(third) != list(order)
    fresh_clock = EpochClock(2)
    fresh = array_epochs(x, y, batch_size=32, seed=5, clock=fresh_clock)
    np.testing.assert_array_equal(np.concatenate([b[:, 0] for b, _ in _epoch(fresh, fresh_clock, 2)]), third)
    other_seed = array_epochs(x, y, batch_size=32, seed=6, clock=clock)
    assert list(np.concatenate([b[:, 0] for b, _ in _epoch(other_seed, clock, 0)])) != list(order)


def test_the_batches_are_the_documented_order_cut_in_batch_size_rows():
    """order_e = stateless_shuffle(range(n), key(seed, e)); batches order_e[0:b], order_e[b:2b], ..."""
    import tensorflow as tf

    x = np.arange(70, dtype=np.float32)[:, None] * 10.0
    y = np.arange(70)
    clock = EpochClock(3)
    dataset = array_epochs(x, y, batch_size=16, seed=seeded(4), clock=clock)
    for epoch in (3, 0, 7):
        order = tf.random.experimental.stateless_shuffle(tf.range(70, dtype=tf.int64), seed=epoch_key(seeded(4), epoch)).numpy()
        batches = _epoch(dataset, clock, epoch)
        assert [len(batch_y) for _, batch_y in batches] == [16, 16, 16, 16, 6]
        for number, (batch_x, batch_y) in enumerate(batches):
            np.testing.assert_array_equal(batch_y, order[number * 16:(number + 1) * 16])
            np.testing.assert_array_equal(batch_x[:, 0], x[batch_y, 0])


def test_a_clock_tells_its_listeners_now_and_on_each_setting():
    clock, heard = EpochClock(2), []
    clock.on_change(heard.append)
    clock.epoch = 5
    clock.callback().on_epoch_begin(6)
    assert heard == [2, 5, 6] and clock.epoch == 6


def test_fit_runs_whole_epochs_when_a_call_runs_more_steps_than_are_left():
    """23 steps an epoch at 16 steps per call: each epoch is 16 + 7 steps, none runs across its end."""
    keras.utils.set_random_seed(seeded(0))
    x = np.random.default_rng(0).normal(size=(1437, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 1437)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=16)
    seen = []

    class Epochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((clock.epoch, int(model.optimizer.iterations.numpy())))

    clock = EpochClock(1)
    model.fit(array_epochs(x, y, 64, seed=0, clock=clock), epochs=3, initial_epoch=1, verbose=0,
              callbacks=[clock.callback(), Epochs()])
    assert epoch_steps(1437, 64) == 23
    assert seen == [(1, 23), (2, 46)]
