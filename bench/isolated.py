"""One part of a benchmark in a Python process of its own.

Every QAT run compiles its training step with XLA, and a process keeps each compiled executable
mapped: its memory maps grew by about 3,000 a minute here, and a benchmark that trains many models
in one process reached Linux's limit of 65,530 (`vm.max_map_count`): LLVM failed to allocate and
the process died with a segmentation fault. A benchmark that trains dozens of models runs each
group of them through `rows_in_own_process`, which starts `python -m MODULE ARGS --output F` and
reads back the JSON `{"rows": [...]}` the child wrote to F."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["rows_in_own_process"]

ROOT = Path(__file__).resolve().parents[1]


def rows_in_own_process(module: str, *arguments: str) -> list[dict]:
    """The rows `python -m module *arguments --output F` writes to F as {"rows": [...]}; a child
    that fails raises CalledProcessError (its output went to this process's stdout and stderr)."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "rows.json"
        subprocess.run([sys.executable, "-m", module, *arguments, "--output", str(output)], check=True, cwd=ROOT)
        return json.loads(output.read_text())["rows"]
