"""Figures without pyplot: ``matplotlib.figure.Figure`` draws and saves with no backend and no global
state, so drawing a report never switches the plotting backend of the user's session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def subplots(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8), dpi: int = 100, **kwargs: Any
) -> tuple[Figure, Any]:
    """Like ``plt.subplots``, but the figure belongs to no pyplot state machine."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: Path, dpi: int | None = None) -> Path:
    """Lay out and write ``fig`` as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi if dpi is not None else "figure")
    return path
