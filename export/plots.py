"""PNG rendering for reports and benchmarks (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

__all__ = ["new_figure", "png_bytes"]


def new_figure(*args, **kwargs):
    """(figure, axes) from matplotlib.pyplot.subplots(*args, **kwargs) on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def png_bytes(figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()
