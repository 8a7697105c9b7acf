"""Figures without pyplot: ``matplotlib.figure.Figure`` draws and saves with no backend and no global
state, so drawing a report never switches the plotting backend of the user's session.

Besides the two helpers every figure uses (:func:`subplots`, :func:`save_figure`), this module holds
what figures of every task share: the title naming what a figure shows (:func:`run_title`) and the
training curves (:func:`training_curves_figure`). Each drawing has a ``*_figure`` function that
returns the :class:`Figure` (what tests read back) and a ``plot_*`` one that saves it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

#: metric names (or their beginnings) that are shares, drawn on [0, 1]
SHARES = (
    "f1",
    "acc",
    "auroc",
    "official_f1",
    "F1_",
    "sensitivity",
    "specificity",
    "rpeak_recall",
    "rhythm_plausible",
)

#: one colour per curve, whichever panel it is in
STAGE_COLOURS = {"train": "tab:blue", "val": "tab:orange", "val, real inputs": "tab:green"}


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


# -- titles ------------------------------------------------------------------------------------------
def join_title(*parts: Any) -> str:
    """The non-empty ``parts`` joined by `` · ``."""
    return " · ".join(str(p) for p in parts if p not in (None, ""))


def checkpoint_label(checkpoint: str | Path | Sequence[str | Path] | None) -> str:
    """A checkpoint's file stem (``best-epoch012``), ``ensemble of N`` for several, ``current weights``
    for none."""
    if isinstance(checkpoint, (list, tuple)):
        if len(checkpoint) != 1:
            return f"ensemble of {len(checkpoint)}" if checkpoint else "current weights"
        checkpoint = checkpoint[0]
    return Path(checkpoint).stem if checkpoint else "current weights"


def run_title(
    model: Any, data: Mapping[str, Any] | None, checkpoint: str | Path | Sequence[str | Path] | None
) -> str:
    """What a test figure shows, from the model name, the data config tested on and the checkpoint(s):
    ``cnn_lstm · physionet2017 · test split · best-epoch012`` (``data.split=all``: ``all records``; k-fold:
    ``test split (fold 2)``)."""
    data = data or {}
    if data.get("split") == "all":
        where = "all records"
    else:
        where = "test split" + (f" (fold {data.get('fold')})" if data.get("folds") else "")
    return join_title(model, data.get("name"), where, checkpoint_label(checkpoint))


def titled(run: str, what: str) -> str:
    """A figure's title: the run it shows (:func:`run_title`) above what it shows."""
    return f"{run}\n{what}" if run else what


# -- training curves ---------------------------------------------------------------------------------
def is_share(name: str) -> bool:
    """Whether metric ``name`` (without its stage) is a share, drawn on [0, 1]."""
    return name.startswith(SHARES)


def bound_y(ax: Axes, name: str, values: Sequence[float]) -> None:
    """Sensible y limits for metric ``name``: [0, 1] for shares; from 0 (or the lowest value, if below)
    to a little above the highest value otherwise, 1 included for ratios (1 = faithful, dotted)."""
    finite = [v for v in values if math.isfinite(v)]
    if is_share(name):
        ax.set_ylim(0.0, 1.0)
        return
    if "ratio" in name:
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        finite.append(1.0)
    if not finite:
        return
    low, high = min(0.0, min(finite)), max(finite)
    pad = 0.06 * (high - low) if high > low else 1.0
    ax.set_ylim(low - (pad if low < 0 else 0.0), high + pad)


def _curve_axes(n: int, title: str) -> tuple[Figure, list[Axes]]:
    """A grid of at most three panels a row, one per curve; the unused panels hidden."""
    ncols = min(3, max(n, 1))
    nrows = math.ceil(max(n, 1) / ncols)
    fig, axes = subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows + (0.4 if title else 0)), dpi=120, squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def training_curves_figure(
    rows: Sequence[dict[str, float]],
    curves: Sequence[str] = ("loss", "f1"),
    best_epoch: int | None = None,
    title: str = "",
) -> Figure:
    """One panel per metric (at most three a row): train and validation per epoch, on integer epoch
    ticks counted from 1 (``rows`` carry Lightning's 0-based ``epoch``), the validation's value on the
    real inputs (``val/<name>_input``) dashed where logged, and the best epoch (1-based, the checkpoint
    callback's) as a dashed vertical line."""
    fig, axes = _curve_axes(len(curves), title)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, name in zip(axes, curves, strict=True):
        values: list[float] = []
        for key, label, style in ((f"train/{name}", "train", "-"), (f"val/{name}", "val", "-"),
                                  (f"val/{name}_input", "val, real inputs", "--")):  # fmt: skip
            pts = [(e, r[key]) for e, r in zip(epochs, rows, strict=True) if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=STAGE_COLOURS[label], ls=style, marker="o", ms=3,
                        label=label, clip_on=False)  # fmt: skip
                values += [v for _, v in pts]
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.35", ls="--", lw=1, label=f"best: epoch {best_epoch}", gid="best")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        bound_y(ax, name, values)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_training_curves(
    rows: Sequence[dict[str, float]],
    path: Path,
    curves: Sequence[str] = ("loss", "f1"),
    best_epoch: int | None = None,
    title: str = "",
) -> Path:
    """:func:`training_curves_figure`, written to ``path``."""
    return save_figure(training_curves_figure(rows, curves, best_epoch, title), path)
