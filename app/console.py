"""The console: what softedge says goes to the terminal; what the libraries print goes to a log.

TensorFlow and its converter write to the process's file descriptors 1 and 2 from C++ (absl
log lines, "failed call to cuInit") and from Python (the converter's "Saved artifact at ..."
with one `TensorSpec` line per captured variable, tf.function retracing warnings). Inside
`routed_output(log_path, verbose)`:

- descriptors 1 and 2, `sys.stdout` and `sys.stderr` all write into one pipe, whose reader
  thread appends every line to `log_path` as it arrives (flushed, so a crash leaves what was
  printed up to it) once its directory exists (a command refused before it made its run
  directory leaves no directory behind just for a log; the lines before are kept and written
  first), and with `verbose` copies it to the terminal. A run directory moved aside (replaced
  with --overwrite) is followed: the log is reopened at `log_path`;
- `Console.out` / `Console.err` write to the terminal (or to whatever stream the command was
  given, e.g. click's test runner): the phases, progress and results softedge itself prints.

On leaving, the descriptors and streams are restored and the pipe is drained.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
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


class _Log:
    """Appends this command's lines to `path` from when its directory exists; earlier lines wait
    in memory. Where the file it wrote is no longer at `path` (the run directory was moved
    aside and replaced), the file at `path` is opened anew and given every line so far."""

    def __init__(self, path):
        self.path = Path(path) if path is not None else None
        self.lines: list[bytes] = []
        self.written = 0   # lines of `self.lines` in the file at hand
        self.handle = None

    def write(self, line: bytes) -> None:
        if self.path is not None:
            self.lines.append(line)
            self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        try:
            if self.handle is not None and os.fstat(self.handle.fileno()).st_ino != _inode(self.path):
                self.handle.close()
                self.handle, self.written = None, 0
            if self.handle is None:
                if not self.path.parent.is_dir():
                    return
                self.handle = open(self.path, "ab")
            if self.written < len(self.lines):
                self.handle.write(b"".join(self.lines[self.written:]))
                self.handle.flush()
                self.written = len(self.lines)
        except OSError:
            pass   # an unwritable run directory: the command itself reports that

    def close(self) -> None:
        self.flush()
        if self.handle is not None:
            self.handle.close()


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _copy_lines(read_end: int, log: _Log, echo) -> None:
    with os.fdopen(read_end, "rb", closefd=True) as pipe:
        for line in iter(pipe.readline, b""):
            log.write(line)
            if echo is not None:
                echo.write(line.decode("utf-8", "replace"))
                echo.flush()


@contextlib.contextmanager
def routed_output(log_path=None, verbose: bool = False):
    """Yields a Console on the terminal; everything else printed meanwhile goes to `log_path`
    (appended; None: nowhere) and, with `verbose`, to the terminal's stderr too."""
    log = _Log(log_path)
    out, out_fd = _terminal_stream(sys.stdout)
    err, err_fd = _terminal_stream(sys.stderr)
    console = Console(out, err)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_end, write_end = os.pipe()
    copier = threading.Thread(target=_copy_lines, args=(read_end, log, err if verbose else None), daemon=True)
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
        log.close()
        for stream, descriptor in ((out, out_fd), (err, err_fd)):
            if descriptor is not None:
                stream.flush()
                stream.close()
