"""The canvas every molpipe chart is drawn on: matplotlib's Agg canvas directly (no pyplot,
no global backend switch), saved as PNGs of ``SIZE`` pixels."""

from __future__ import annotations

from pathlib import Path


SIZE = (1200, 700)          # pixels
DPI = 100


def figure():
    """A Figure of ``SIZE`` pixels on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(SIZE[0] / DPI, SIZE[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` to the PNG ``path`` (its directory made), laid out tight."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
