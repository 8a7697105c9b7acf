"""Figures: reconstructions over inputs, generated ECGs beside real ones, real versus analytic, R-peak
statistics. Signals share one y scale, in their unit (:func:`amplitude_unit`), over seconds; each test
figure has a ``*_figure`` function returning the :class:`Figure` and a ``plot_*`` one writing it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ecg_lab.app.figures import save_figure as _save
from ecg_lab.app.figures import subplots, titled

#: the amplitude unit of cleaned generation windows (``data.input=raw``): z-scored signals
UNIT = "z-score"


def amplitude_unit(data: Mapping[str, Any] | None) -> str:
    """The amplitude unit of the windows a data config gives: ``z-score`` for cleaned signals
    (``data.input=raw``); for analytic ones (the default), whose components have fixed amplitudes,
    ``a.u., R = <data.analytic.r_amplification>``."""
    data = data or {}
    if data.get("input", "analytic") == "raw":
        return UNIT
    return f"a.u., R = {float((data.get('analytic') or {}).get('r_amplification', 1.0)):g}"


def save_figure(fig: Figure, path: Path) -> Path:
    """Lay out and write a PNG (110 dpi)."""
    return _save(fig, path, dpi=110)


def _axes(n: int, ncols: int) -> tuple[Figure, np.ndarray]:
    """A grid of ``n`` panels sharing both axes; the unused ones hidden."""
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = subplots(
        nrows, ncols, figsize=(4.5 * ncols, 1.9 * nrows + 0.6), squeeze=False, sharex=True, sharey=True
    )
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def _label_axes(fig: Figure, unit: str, title: str) -> None:
    fig.supxlabel("time (s)", fontsize=9)
    fig.supylabel(f"amplitude ({unit})", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)


def overlays_figure(
    inputs: np.ndarray, reconstructions: np.ndarray, fs: float, n: int = 6, title: str = "", unit: str = UNIT
) -> Figure:
    """The first ``n`` inputs with their reconstructions drawn over them, on one y scale."""
    n = min(n, len(inputs))
    fig, axes = subplots(n, 1, figsize=(10, 1.8 * n + 0.6), squeeze=False, sharex=True, sharey=True)
    t = np.arange(inputs.shape[1]) / fs
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, inputs[i], color="0.3", lw=1.0, label="input")
        ax.plot(t, reconstructions[i], color="tab:red", lw=1.0, alpha=0.85, label="reconstruction")
        ax.set_ylabel(f"#{i}")
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=2)
    _label_axes(fig, unit, titled(title, "inputs and their reconstructions"))
    return fig


def plot_overlays(
    inputs: np.ndarray,
    reconstructions: np.ndarray,
    fs: float,
    path: Path,
    n: int = 6,
    title: str = "",
    unit: str = UNIT,
) -> Path:
    """:func:`overlays_figure`, written to ``path``."""
    return save_figure(overlays_figure(inputs, reconstructions, fs, n, title, unit), path)


def signal_grid_figure(
    signals: np.ndarray,
    fs: float,
    title: str = "",
    ncols: int = 4,
    real: np.ndarray | None = None,
    unit: str = UNIT,
    max_pairs: int = 8,
) -> Figure:
    """One small panel per signal, every panel on one y scale with units and seconds on x. With ``real``,
    real signals (left column) beside generated ones (right column), at most ``max_pairs`` rows."""
    if real is None:
        fig, axes = _axes(len(signals), ncols)
        columns = [(axes.flat[: len(signals)], signals, "tab:blue")]
    else:
        n = min(len(real), len(signals), max_pairs)
        fig, axes = subplots(n, 2, figsize=(11, 1.3 * n + 0.9), squeeze=False, sharex=True, sharey=True)
        columns = [(axes[:, 0], real[:n], "0.3"), (axes[:, 1], signals[:n], "tab:blue")]
        axes[0, 0].set_title("real", fontsize=9)
        axes[0, 1].set_title("generated", fontsize=9)
        title = titled(title, "real windows beside generated ECGs")
    t = np.arange(signals.shape[1]) / fs
    for column_axes, column, color in columns:
        for ax, x in zip(column_axes, column, strict=True):
            ax.plot(t, x, lw=0.8, color=color)
            ax.tick_params(labelsize=7)
    _label_axes(fig, unit, title)
    return fig


def plot_signal_grid(
    signals: np.ndarray,
    fs: float,
    path: Path,
    title: str = "",
    ncols: int = 4,
    real: np.ndarray | None = None,
    unit: str = UNIT,
) -> Path:
    """:func:`signal_grid_figure`, written to ``path``."""
    return save_figure(signal_grid_figure(signals, fs, title, ncols, real, unit), path)


def plot_real_vs_analytic(
    real: Sequence[np.ndarray],
    analytic: Sequence[np.ndarray],
    rpeaks: Sequence[np.ndarray],
    names: Sequence[str],
    fs: float,
    path: Path,
) -> Path:
    """Each record's cleaned signal above its analytic ECG, R-peaks marked."""
    fig, axes = subplots(len(real), 1, figsize=(11, 2.2 * len(real)), squeeze=False)
    for ax, x, a, p, name in zip(axes[:, 0], real, analytic, rpeaks, names, strict=True):
        t = np.arange(len(x)) / fs
        offset = float(np.max(a) - np.min(x)) + 0.5
        ax.plot(t, x + offset, color="0.3", lw=0.9, label="real (cleaned, z-scored)")
        ax.plot(t, a, color="tab:red", lw=0.9, label="analytic")
        ax.plot(p / fs, x[p] + offset, "v", color="tab:green", ms=4, label="R-peaks (NeuroKit2)")
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_yticks([])
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("time (s)")
    return save_figure(fig, path)


def plot_rpeaks(hist: Sequence[dict], medians: Sequence[dict], window: int, path: Path, title: str) -> Path:
    """R-peak positions over the window (histogram) and each temporal bin's count and median index."""
    fig, (a, b) = subplots(2, 1, figsize=(10, 6), sharex=True)
    a.bar(
        [h["start"] for h in hist],
        [h["count"] for h in hist],
        width=hist[0]["end"] - hist[0]["start"],
        align="edge",
        color="tab:blue",
        edgecolor="white",
    )
    a.set_ylabel("R-peaks")
    a.set_title(f"R-peak positions over the {window}-sample windows ({title})")
    for m in medians:
        b.axvspan(m["start"], m["end"], color="0.93" if m["bin"] % 2 else "0.85", lw=0)
        if m["n_peaks"]:
            b.plot([m["median_index"]] * 2, [0, m["n_peaks"]], color="tab:red", lw=2)
    b.set_ylabel("R-peaks in bin")
    b.set_xlabel("sample index in window (red: median R-peak index of the bin)")
    b.set_xlim(0, window)
    return save_figure(fig, path)
