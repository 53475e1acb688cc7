"""Benchmarks' epoch times leave out the epochs that compile: the first, and a QAT run's switch to
the device's arithmetic (the default recipe's last epoch)."""

from bench import qat
from models.training import Recipe


def test_the_epoch_time_is_the_median_of_the_epochs_that_compile_nothing(monkeypatch):
    recipe = Recipe(qat_epochs=4)   # the last epoch switches to the device's arithmetic
    timer = qat.qat_timer(recipe)
    clock = iter([0.0, 9.0, 10.0, 11.0, 20.0, 22.0, 30.0, 38.0])   # epochs of 9, 1, 2 and 8 s
    monkeypatch.setattr(qat.time, "perf_counter", lambda: next(clock))
    timer.on_train_begin()
    for epoch in range(4):
        timer.on_epoch_begin(epoch)
        timer.on_epoch_end(epoch)
    assert timer.times == [9.0, 1.0, 2.0, 8.0]
    assert timer.seconds == 1.5   # epochs 1 and 2; the plain timer would take the median of 1, 2 and 8
    without_switch = qat.qat_timer(Recipe(qat_epochs=4, device_arithmetic=None)).compiling
    assert qat.EpochTimer().compiling == {0} and not without_switch & {1, 2, 3}   # every later epoch counts
