"""Training data larger than memory: .npz shards, memory-mapped and streamed through tf.data.

    shards = Shards.open("data/kws/")          # a directory of .npz files, or a glob
    len(shards), shards.sample_shape           # rows, and the shape of one sample
    shards.x[:1024]                             # rows read from disk as asked (calibration)
    clock = EpochClock()                        # models.epochs: fit(..., callbacks=[clock.callback()])
    dataset = shards.stream(batch_size=64, seed=0, clock=clock)   # the clock's epoch, in its order

Each shard is an uncompressed .npz (`np.savez`, not `savez_compressed`) holding `x_train` and
`y_train`. An uncompressed member of the zip is the .npy file's bytes at a known offset, so its
array is memory-mapped straight out of the shard (`member_memmap`): nothing is read until rows
are asked for. The stream reads a whole shard at a time with a plain file read (`read_whole`),
into memory that is freed after it, rather than through the mapping.

`stream` visits the shards in an order drawn anew each epoch, reads `cycle` of them at a time
and permutes their samples together; peak memory is `cycle` shards' rows (twice, while they
are permuted) and the batches, whatever the number of shards. Every draw of epoch e is keyed by (seed, e) alone (as `models.epochs`), so a
resumed run sees the batches the uninterrupted run saw.
"""

from __future__ import annotations

import glob
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ArtifactError, ConfigError

__all__ = ["ShardedArray", "Shards", "member_memmap", "read_whole"]

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field


def member_memmap(path, name: str) -> np.memmap:
    """The array `name` of the .npz at `path`, memory-mapped (read-only) where it is stored."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{name}.npy")
    except (OSError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"Shard {path} is not a readable .npz: {error}") from error
    except KeyError:
        raise ArtifactError(f"Shard {path} has no array {name!r}.") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise ConfigError(f"Shard {path} is compressed ({name}.npy): write shards with np.savez, not "
                          "np.savez_compressed, so they can be memory-mapped.")
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(_LOCAL_HEADER)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        handle.seek(info.header_offset + _LOCAL_HEADER + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
        offset = handle.tell()
    if dtype.hasobject:
        raise ConfigError(f"Shard {path} stores {name} as Python objects; it must hold numbers.")
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran_order else "C")


def read_whole(part: np.memmap) -> np.ndarray:
    """A memory-mapped member's whole array, read with one plain file read into memory of its
    own (freed with it). Reading through the mapping would leave its pages mapped into the
    process, so that the resident size grew with every shard read, up to the data set's size."""
    with open(part.filename, "rb") as handle:
        handle.seek(part.offset)
        flat = np.fromfile(handle, dtype=part.dtype, count=part.size)
    return flat.reshape(part.shape, order="F" if part.flags.f_contiguous and not part.flags.c_contiguous else "C")


class ShardedArray:
    """The shards' arrays of one name, seen as one array along axis 0; slicing reads only the
    rows asked for (a contiguous slice, or an integer index array)."""

    def __init__(self, parts: list[np.memmap]):
        self.parts = parts
        self.bounds = np.cumsum([0] + [len(part) for part in parts])
        self.shape = (int(self.bounds[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.where(index < 0, index + len(self), index)
        if np.any((index < 0) | (index >= len(self))):
            raise IndexError(f"index out of range for {len(self)} rows")
        shard = np.searchsorted(self.bounds, index, side="right") - 1
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        for part in np.unique(shard):
            rows = shard == part
            out[rows] = self.parts[part][index[rows] - self.bounds[part]]
        return out


@dataclass
class Shards:
    paths: list[Path]
    x: ShardedArray
    y: ShardedArray

    @classmethod
    def open(cls, location, exclude: tuple[str, ...] = ()) -> Shards:
        """A directory of .npz shards, or a glob pattern; at least one, in sorted name order;
        files named in `exclude` are not shards."""
        location = os.fspath(location)
        paths = sorted(Path(p) for p in (glob.glob(os.path.join(location, "*.npz")) if os.path.isdir(location)
                                          else glob.glob(location)) if Path(p).name not in exclude)
        if not paths:
            raise ArtifactError(f"No .npz shards at {location!r} (a directory of .npz files, or a glob).")
        xs, ys = [member_memmap(p, "x_train") for p in paths], [member_memmap(p, "y_train") for p in paths]
        for path, x, y in zip(paths, xs, ys, strict=True):
            if len(x) != len(y):
                raise ConfigError(f"Shard {path}: x_train has {len(x)} rows, y_train {len(y)}.")
            if x.shape[1:] != xs[0].shape[1:] or x.dtype != xs[0].dtype or y.dtype != ys[0].dtype:
                raise ConfigError(f"Shard {path}: x_train is {x.dtype}{x.shape[1:]}, y_train {y.dtype}; the first "
                                  f"shard's are {xs[0].dtype}{xs[0].shape[1:]}, {ys[0].dtype}.")
        return cls(paths, ShardedArray(xs), ShardedArray(ys))

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple:
        return self.x.shape[1:]

    def stream(self, batch_size: int, seed: int = 0, clock=None, cycle: int = 4):
        """A one-epoch tf.data.Dataset of (x, y) batches for the `clock`'s epoch (a
        `models.epochs.EpochClock`; default: epoch 0): every sample once. The shards are taken
        in an order drawn for the epoch, `cycle` at a time; each group's samples are read whole
        and permuted together, then cut into batches (a batch may span two groups; only the
        epoch's last batch is short). Every draw is keyed by (seed, epoch)."""
        import tensorflow as tf

        from models.epochs import EpochClock, epoch_steps, keyed_epoch

        count = len(self.x.parts)
        x_parts, y_parts = self.x.parts, self.y.parts

        def group_rows(group, epoch):
            epoch_order = np.random.default_rng([seed, int(epoch)]).permutation(count)
            shards = epoch_order[int(group) * cycle:(int(group) + 1) * cycle]
            x = np.concatenate([read_whole(x_parts[shard]) for shard in shards])
            y = np.concatenate([read_whole(y_parts[shard]) for shard in shards])
            order = np.random.default_rng([seed, int(epoch), int(group) + 1]).permutation(len(x))
            return x[order].astype(np.float32), y[order]

        def group_batch(group, epoch):
            x, y = tf.numpy_function(group_rows, [group, epoch], [tf.float32, tf.as_dtype(self.y.dtype)])
            return tf.ensure_shape(x, (None, *self.sample_shape)), tf.ensure_shape(y, (None, *self.y.shape[1:]))

        def one_epoch(epoch):
            return (tf.data.Dataset.range(-(-count // cycle))
                    .map(lambda group: group_batch(group, epoch))
                    .rebatch(batch_size))

        return keyed_epoch(one_epoch, epoch_steps(len(self), batch_size), clock or EpochClock())
