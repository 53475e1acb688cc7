"""TensorFlow's start-up lines kept off the terminal when softedge is imported before it.

TF 2.21 prints, whatever TF_CPP_MIN_LOG_LEVEL says, a few C++ lines while it loads ("WARNING: All
log messages before absl::InitializeLog() ...", INFO lines on oneDNN and on CUDA drivers, the CPU
instruction notice), and on a machine without a GPU an error line ("failed call to cuInit") the
first time it looks for devices. None is about the user's work.

`install()` (called when `toolkit`, `models`, `export` or `app` is imported) puts a finder first
on `sys.meta_path` that, the first time anything imports `tensorflow`, loads it and looks for
its devices with descriptor 2 redirected, then writes back every line that is not one of those.
It does nothing when TensorFlow is already imported, or with SOFTEDGE_TF_STARTUP=show. (The
command line also routes TensorFlow's later output to the run's log: `app.console`.)
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

__all__ = ["STARTUP_NOISE", "install"]

STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ (port|cudart_stub|cpu_feature_guard|cuda_\w+)\.cc:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)")


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with descriptor 2 captured and its start-up lines dropped."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
                module.config.list_physical_devices()  # the device search, and its cuInit line, now
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                        if not STARTUP_NOISE.match(line)]
                if kept:
                    print("\n".join(kept), file=sys.stderr)


class _QuietTensorflowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once: the real finders find it
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiets TensorFlow's start-up when it is imported after this (see the module docstring)."""
    if "tensorflow" in sys.modules or os.environ.get("SOFTEDGE_TF_STARTUP") == "show":
        return
    if not any(isinstance(finder, _QuietTensorflowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorflowFinder())
