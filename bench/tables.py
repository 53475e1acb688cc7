"""Benchmarks write their tables into docs/benchmarks.md between markers, never by hand; no
bench script writes any other documentation file."""

from __future__ import annotations

import platform
from pathlib import Path

from export.atomic import write_text

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    """The machine a table was measured on, in words: CPU count and ISA, and the versions the
    exports record (`export.artifacts.versions`)."""
    import os

    from export.artifacts import versions

    found = versions()
    return (f"{os.cpu_count()} cores {platform.machine()}, Python {found['python']}, "
            f"TensorFlow {found['tensorflow']}, LiteRT {found['ai-edge-litert']}")


def replace_section(name: str, body: str) -> bool:
    """Rewrites docs/benchmarks.md between `<!-- NAME:start -->` and `<!-- NAME:end -->` with
    `body` and the machine it ran on; False (and nothing written) when the markers are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    body = f"{body}\n\nMachine: {machine()}."
    write_text(BENCHMARKS, "\n".join([head + start, "", body, "", end]) + rest.split(end, 1)[1])
    return True
