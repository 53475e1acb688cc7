"""Benchmarks write their README tables between markers, never by hand."""

from __future__ import annotations

from pathlib import Path

from export.atomic import write_text

README = Path(__file__).resolve().parents[1] / "README.md"


def replace_section(name: str, body: str) -> bool:
    """Rewrites README.md between `<!-- NAME:start -->` and `<!-- NAME:end -->` with `body`;
    False (and nothing written) when the markers are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    readme = README.read_text()
    if start not in readme or end not in readme:
        return False
    head, rest = readme.split(start, 1)
    write_text(README, "\n".join([head + start, "", body, "", end]) + rest.split(end, 1)[1])
    return True
