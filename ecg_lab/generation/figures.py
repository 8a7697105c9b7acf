"""Figures: reconstructions over inputs, generated ECGs, real versus analytic, R-peak statistics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ecg_lab.app.figures import save_figure as _save
from ecg_lab.app.figures import subplots


def save_figure(fig: Figure, path: Path) -> Path:
    """Lay out and write a PNG (110 dpi)."""
    return _save(fig, path, dpi=110)


def _axes(n: int, ncols: int) -> tuple[Figure, np.ndarray]:
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = subplots(nrows, ncols, figsize=(4.5 * ncols, 1.9 * nrows), squeeze=False, sharex=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def plot_overlays(inputs: np.ndarray, reconstructions: np.ndarray, fs: float, path: Path, n: int = 6) -> Path:
    """The first ``n`` inputs with their reconstructions drawn over them."""
    n = min(n, len(inputs))
    fig, axes = subplots(n, 1, figsize=(10, 1.8 * n), squeeze=False, sharex=True)
    t = np.arange(inputs.shape[1]) / fs
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, inputs[i], color="0.3", lw=1.0, label="input")
        ax.plot(t, reconstructions[i], color="tab:red", lw=1.0, alpha=0.85, label="reconstruction")
        ax.set_ylabel(f"#{i}")
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=2)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("test inputs and their reconstructions")
    return save_figure(fig, path)


def plot_signal_grid(signals: np.ndarray, fs: float, path: Path, title: str = "", ncols: int = 4) -> Path:
    """One small panel per signal."""
    fig, axes = _axes(len(signals), ncols)
    t = np.arange(signals.shape[1]) / fs
    for ax, x in zip(axes.flat, signals, strict=False):
        ax.plot(t, x, lw=0.8, color="tab:blue")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


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
