"""Shards: memory-mapped .npz members, one array across shards, a seeded streamed epoch."""

import json

import numpy as np
import pytest

from models.epochs import EpochClock
from models.shards import ShardedArray, Shards, member_memmap
from tests.seeds import seeded
from toolkit.errors import ArtifactError, ConfigError


def _write_shards(directory, sizes, seed=0):
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    start = 0
    for i, size in enumerate(sizes):
        x = rng.normal(size=(size, 3, 2)).astype(np.float32)
        x[:, 0, 0] = np.arange(start, start + size)   # each sample's id
        np.savez(directory / f"part-{i:02d}.npz", x_train=x, y_train=np.arange(start, start + size) % 5)
        start += size
    return directory


def test_member_memmap_is_the_stored_array_and_refuses_what_it_cannot_map(tmp_path):
    arrays = {"a": np.arange(24, dtype=np.int16).reshape(2, 3, 4), "b": np.asfortranarray(np.ones((5, 2))),
              "c": np.array([1.5, -2.0], np.float32)}
    np.savez(tmp_path / "plain.npz", **arrays)
    for name, value in arrays.items():
        mapped = member_memmap(tmp_path / "plain.npz", name)
        assert isinstance(mapped, np.memmap) and mapped.dtype == value.dtype
        np.testing.assert_array_equal(mapped, value)
    np.savez_compressed(tmp_path / "packed.npz", a=arrays["a"])
    with pytest.raises(ConfigError, match="np.savez, not np.savez_compressed"):
        member_memmap(tmp_path / "packed.npz", "a")
    with pytest.raises(ArtifactError, match="no array 'x_train'"):
        member_memmap(tmp_path / "plain.npz", "x_train")


def test_a_sharded_array_reads_rows_across_shard_boundaries(tmp_path):
    shards = Shards.open(_write_shards(tmp_path / "s", [5, 3, 7]))
    whole = np.concatenate([np.load(p)["x_train"] for p in shards.paths])
    assert isinstance(shards.x, ShardedArray) and shards.x.shape == whole.shape and len(shards) == 15
    np.testing.assert_array_equal(shards.x[3:11], whole[3:11])
    np.testing.assert_array_equal(shards.x[[14, 0, 5, 7, -1]], whole[[14, 0, 5, 7, -1]])
    with pytest.raises(IndexError):
        shards.x[[15]]


def test_open_accepts_a_glob_and_names_bad_shards(tmp_path):
    _write_shards(tmp_path / "s", [4, 4])
    assert len(Shards.open(str(tmp_path / "s" / "part-01.npz"))) == 4
    with pytest.raises(ArtifactError, match="No .npz shards"):
        Shards.open(tmp_path / "nothing-here")
    np.savez(tmp_path / "s" / "part-02.npz", x_train=np.zeros((2, 4, 2), np.float32), y_train=np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match="part-02.npz"):
        Shards.open(tmp_path / "s")


def test_a_streamed_epoch_visits_every_sample_once_in_an_order_keyed_by_seed_and_epoch(tmp_path):
    shards = Shards.open(_write_shards(tmp_path / "s", [40, 25, 33, 50, 12]))

    def epochs(seed, count=2, first=0):
        clock = EpochClock()
        dataset = shards.stream(batch_size=16, seed=seed, clock=clock, cycle=3)
        orders = []
        for epoch in range(first, first + count):
            clock.epoch = epoch
            orders.append(np.concatenate([x[:, 0, 0] for x, _ in dataset.as_numpy_iterator()]).astype(int))
        return orders

    first, second = epochs(seed=0)
    for order in (first, second):
        assert sorted(order) == list(range(160))
    assert list(first) != list(second)                      # a new order each epoch
    again = epochs(seed=0)
    assert list(again[0]) == list(first) and list(again[1]) == list(second)   # the same seed, the same orders
    assert list(epochs(seed=1, count=1)[0]) != list(first)
    assert list(epochs(seed=0, count=1, first=1)[0]) == list(second)   # epoch 1 is epoch 1, whatever came before
    # Labels travel with their samples; batches of 16, the epoch's last one short (160 = 10 x 16 here).
    batches = list(shards.stream(batch_size=16, seed=0).as_numpy_iterator())
    for x, y in batches:
        np.testing.assert_array_equal(y, x[:, 0, 0].astype(int) % 5)
    assert [len(x) for x, _ in batches] == [16] * 10
    assert [len(x) for x, _ in Shards.open(_write_shards(tmp_path / "t", [7, 30])).stream(16).as_numpy_iterator()] == [16, 16, 5]


def _digits_as_shards(directory, parts=4):
    from models import datasets

    digits = datasets.load("digits")
    directory.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(digits.x_train)), parts)):
        np.savez(directory / f"train-{i}.npz", x_train=digits.x_train[rows], y_train=digits.y_train[rows])
    np.savez(directory / "test.npz", x_test=digits.x_test, y_test=digits.y_test)
    return digits


def test_a_directory_of_shards_is_a_dataset_that_trains_and_exports(tmp_path):
    from app.runs import ExportOptions, RunConfig, export_run, train_run
    from models import datasets
    from models.training import Recipe
    from toolkit import QuantScheme

    digits = _digits_as_shards(tmp_path / "shards")
    data = datasets.load(str(tmp_path / "shards"))
    assert data.shards is not None and len(data.x_train) == len(digits.x_train)
    assert data.input_shape == digits.input_shape and data.num_classes == 10
    np.testing.assert_array_equal(data.y_train, digits.y_train)
    assert len(datasets.load(str(tmp_path / "shards" / "train-*.npz")).x_train) == len(digits.x_train)   # a glob
    with pytest.raises(ConfigError, match="sharded"):
        datasets.training_pairs(data, "anomaly")

    summary = train_run(RunConfig("digits_cnn", str(tmp_path / "shards"), QuantScheme(weight_bits=4),
                                  Recipe(float_epochs=2, qat_epochs=1), seed=seeded(0)), tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["float"]["loss"]) == 2 and len(history["qat"]["alpha"]) == 1
    assert 0.0 <= summary["smooth_accuracy"] <= 1.0
    report, failures = export_run(tmp_path / "run", ExportOptions(device_check=False))
    assert report["weights_exact"] is True and report["samples"] == len(digits.x_test)


def test_a_sharded_dataset_needs_its_test_split(tmp_path):
    from models import datasets

    _write_shards(tmp_path / "s", [4])
    with pytest.raises(ArtifactError, match="test.npz"):
        datasets.load(str(tmp_path / "s"))


def test_read_whole_is_the_stored_array_in_either_order(tmp_path):
    c_order = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    np.savez(tmp_path / "a.npz", x_train=c_order, y_train=np.asfortranarray(c_order.reshape(4, 6)))
    from models.shards import read_whole

    np.testing.assert_array_equal(read_whole(member_memmap(tmp_path / "a.npz", "x_train")), c_order)
    np.testing.assert_array_equal(read_whole(member_memmap(tmp_path / "a.npz", "y_train")), c_order.reshape(4, 6))
