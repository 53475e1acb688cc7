"""The console: what softedge says goes to the terminal; what the libraries print goes to a log.

TensorFlow and its converter write to the process's file descriptors 1 and 2 from C++ (absl
log lines, "failed call to cuInit") and from Python (the converter's "Saved artifact at ..."
with one `TensorSpec` line per captured variable, tf.function retracing warnings). Inside
`routed_output(log_path, verbose)`:

- descriptors 1 and 2, `sys.stdout` and `sys.stderr` all write into one pipe, whose reader
  thread keeps every line and, with `verbose`, copies it to the terminal; on leaving, the lines
  are appended to `log_path` when its directory exists (a command refused before it wrote its
  run directory leaves no directory behind just for a log);
- `Console.out` / `Console.err` write to the terminal (or to whatever stream the command was
  given, e.g. click's test runner): the phases, progress and results softedge itself prints.

On leaving, the descriptors and streams are restored and the pipe is drained.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["Console", "routed_output"]


class Console:
    """The terminal's two streams, as they were when the command started."""

    def __init__(self, out=None, err=None):
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr


def _terminal_stream(stream):
    """A stream that keeps writing where `stream` writes once its descriptor is redirected: a
    duplicate of its descriptor, or `stream` itself when it has none (an in-memory stream)."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream, None
    duplicate = os.dup(descriptor)
    return io.TextIOWrapper(io.FileIO(duplicate, "w", closefd=True), encoding="utf-8", errors="replace",
                            line_buffering=True), duplicate


def _copy_lines(read_end: int, kept, echo) -> None:
    with os.fdopen(read_end, "rb", closefd=True) as pipe:
        for line in iter(pipe.readline, b""):
            kept.write(line)
            if echo is not None:
                echo.write(line.decode("utf-8", "replace"))
                echo.flush()


def _append(log_path: Path, kept) -> None:
    kept.seek(0)
    with open(log_path, "ab") as log:
        for block in iter(lambda: kept.read(1 << 20), b""):
            log.write(block)


@contextlib.contextmanager
def routed_output(log_path=None, verbose: bool = False):
    """Yields a Console on the terminal; everything else printed meanwhile goes to `log_path`
    (appended; None: nowhere) and, with `verbose`, to the terminal's stderr too."""
    kept = tempfile.TemporaryFile()
    out, out_fd = _terminal_stream(sys.stdout)
    err, err_fd = _terminal_stream(sys.stderr)
    console = Console(out, err)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_end, write_end = os.pipe()
    copier = threading.Thread(target=_copy_lines, args=(read_end, kept, err if verbose else None), daemon=True)
    copier.start()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    pipe_stream = io.TextIOWrapper(io.FileIO(os.dup(write_end), "w", closefd=True), encoding="utf-8",
                                   errors="replace", line_buffering=True)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stdout = sys.stderr = pipe_stream
    try:
        yield console
    finally:
        pipe_stream.flush()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for descriptor in saved_fds:
            os.close(descriptor)
        pipe_stream.close()            # the last write end: the copier sees the end of the pipe
        copier.join(timeout=30)
        if log_path is not None and Path(log_path).parent.is_dir():
            _append(Path(log_path), kept)
        kept.close()
        for stream, descriptor in ((out, out_fd), (err, err_fd)):
            if descriptor is not None:
                stream.flush()
                stream.close()
