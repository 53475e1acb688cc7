"""Atomic artifact writes: everything goes to a temporary name in the target folder, then
`os.replace` moves it into place, so a reader never sees a half-written file and a failure
leaves the previous file (or nothing) behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path

from toolkit.errors import ArtifactError

__all__ = ["atomic_directory", "atomic_path", "json_text", "replace_directory", "staging_directory", "strict_json", "write_bytes",
           "write_json", "write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yields a temporary path beside `path`; on success renames it to `path`, else deletes it.

    `suffix` defaults to `path`'s own (Keras and matplotlib pick the format from it).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as error:
        raise ArtifactError(f"Cannot write {path}: {error.strerror or error}") from error
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def staging_directory(path: str | os.PathLike) -> Path:
    """A new empty temporary directory beside `path`, to build it in (`replace_directory`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as error:
        raise ArtifactError(f"Cannot write {path}: {error.strerror or error}") from error


def replace_directory(staged: Path, path: str | os.PathLike) -> Path:
    """Moves the finished directory `staged` to `path`, replacing what was there whole: the old
    directory is renamed aside first, then deleted, so `path` is always one or the other."""
    path = Path(path)
    os.chmod(staged, 0o777 & ~_umask())
    old = None
    with signals_deferred():   # an interrupt between the two renames would leave neither in place
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(staged, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


@contextlib.contextmanager
def signals_deferred():
    """SIGINT and SIGTERM wait (pending) until the block is done, then arrive as usual."""
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (AttributeError, ValueError, OSError):  # no signal masks here: run the block as is
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
    """Yields a temporary directory beside `path`; on success it replaces `path` whole."""
    tmp = staging_directory(path)
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def strict_json(obj, path: str = "") -> tuple[object, list[str]]:
    """(`obj` with every NaN / inf float replaced by None, the paths of those values), so that
    the file written is strict JSON (RFC 8259 has no NaN) and a reader can say what was lost."""
    if isinstance(obj, Mapping):  # a dict, or a record read as one (DriftReport)
        pairs = [(key, strict_json(value, f"{path}.{key}" if path else str(key))) for key, value in obj.items()]
        return {key: clean for key, (clean, _) in pairs}, [bad for _, (_, paths) in pairs for bad in paths]
    if isinstance(obj, (list, tuple)):
        parts = [strict_json(value, f"{path}[{index}]") for index, value in enumerate(obj)]
        return [clean for clean, _ in parts], [bad for _, paths in parts for bad in paths]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [path]
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # a numpy scalar
        return strict_json(obj.item(), path)
    return obj, []


def json_text(obj) -> str:
    """Strict JSON text, indented (`strict_json`: a non-finite float is written as null)."""
    return json.dumps(strict_json(obj)[0], indent=2, sort_keys=False, allow_nan=False, default=float)


def write_json(path, obj) -> Path:
    return write_text(path, json_text(obj) + "\n")
