"""`python -m export` runs the softedge CLI."""

from export.cli import entry

entry()
