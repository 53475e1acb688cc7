"""Runs are owned and replaced whole: what a run directory is, who writes it, and how.

- `identity(config)`: what a run is, as data: the entries of its config.json that name the
  model, data, scheme, recipe, seed, task, PTQ settings and `data_fingerprint` (sha256 over the
  data set's shapes and bytes; for shards, the labels, the test split and the training shape).
- `claim_run(run_dir, identity, overwrite)`: `train` / `ptq` into an existing directory is
  refused (ConfigError, exit 2, nothing touched) when it holds anything but the same run,
  unless `overwrite`; then the old directory is moved aside, and restored whole if the new run
  fails or is interrupted, deleted when it finishes. Its exports go with it.
- `run_lock(run_dir, what)`: one softedge command writes a run at a time (an advisory `flock`
  on RUN/.softedge.lock); a second exits with ArtifactError (exit 3) naming the holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from export.atomic import signals_deferred
from toolkit.errors import ArtifactError, ConfigError

__all__ = ["LOCK_NAME", "claim_run", "data_fingerprint", "ensure_writable", "identity", "run_lock"]

LOCK_NAME = ".softedge.lock"
_IDENTITY_KEYS = ("model", "data", "data_sha256", "scheme", "recipe", "seed", "task", "ptq")


def data_fingerprint(data) -> str:
    """sha256 of a data set's arrays (shapes, dtypes, bytes); shards: labels, test split, shape."""
    digest = hashlib.sha256()
    arrays = [data.y_train, data.x_test, data.y_test]
    if data.shards is None:
        arrays.insert(0, data.x_train)
    else:
        digest.update(repr(tuple(data.x_train.shape)).encode())
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def identity(config: dict) -> dict:
    """The parts of a run's config.json that say what it is (the task as resolved)."""
    return {key: config.get(key) for key in _IDENTITY_KEYS}


def _describe(config: dict) -> str:
    scheme = config.get("scheme") if isinstance(config.get("scheme"), dict) else {}
    ptq = config.get("ptq")
    method = f"ptq {ptq.get('rounding')}" if isinstance(ptq, dict) else "QAT"
    return (f"model {config.get('model')!r} on data {config.get('data')!r}, {method}, W{scheme.get('weight_bits')}"
            f"A{scheme.get('activation_bits')}, seed {config.get('seed')}")


def ensure_writable(directory: Path) -> None:
    """Creates `directory` (and its parents) and proves a file can be written in it, now rather
    than after an epoch of training. ArtifactError otherwise."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise ArtifactError(f"Cannot write in {directory}: {error.strerror or error}") from None


@contextlib.contextmanager
def claim_run(run_dir, wanted: dict, overwrite: bool = False):
    """Yields once `run_dir` may be written for the run `wanted` (a config dict; see the module
    docstring). An interrupted or failed run leaves the directory as it was before."""
    run_dir = Path(run_dir)
    existing = [entry.name for entry in run_dir.iterdir()] if run_dir.is_dir() else []
    # The log records every command (refused ones too); worker-<i>/ is another worker's copy of
    # this same run, made while the chief starts (multi-worker training).
    existing = [name for name in existing if name not in (LOCK_NAME, "softedge.log") and not name.startswith("worker-")]
    aside = None
    if existing:
        config_path = run_dir / "config.json"
        try:
            held = json.loads(config_path.read_text()) if config_path.is_file() else None
        except (OSError, ValueError):
            held = None
        same = isinstance(held, dict) and identity(held) == identity(wanted)
        if not same and not overwrite:
            what = f"a run of {_describe(held)}" if isinstance(held, dict) else f"{len(existing)} other file(s) ({', '.join(sorted(existing)[:3])})"
            raise ConfigError(f"--run {run_dir} already holds {what}; refusing to mix another run into it. "
                              f"Give another --run, or --overwrite to replace it (its exports too).")
        if not same:
            aside = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.replaced.", dir=run_dir.parent))
            with signals_deferred():
                os.replace(run_dir, aside / run_dir.name)
    try:
        ensure_writable(run_dir)
        yield run_dir
    except BaseException:
        if aside is not None:  # the new run did not finish: the old one comes back whole
            with signals_deferred():
                failed = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.failed.", dir=run_dir.parent))
                os.replace(run_dir, failed / run_dir.name)
                os.replace(aside / run_dir.name, run_dir)
            shutil.rmtree(failed, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def run_lock(run_dir, what: str):
    """Holds RUN/.softedge.lock for the block; ArtifactError when another command holds it."""
    run_dir = Path(run_dir)
    ensure_writable(run_dir)
    path = run_dir / LOCK_NAME
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another softedge command"
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise ArtifactError(f"{run_dir} is being written by {holder}; wait for it to finish, then run "
                                    f"{what} again.") from None
            raise ArtifactError(f"Cannot lock {path}: {error.strerror or error}") from None
        try:  # the file may have been unlinked by the holder that just released it: lock the new one
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"softedge {what} (pid {os.getpid()})")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        handle.close()
