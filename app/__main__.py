"""`python -m app` runs the softedge CLI."""

from app.cli import entry

entry()
