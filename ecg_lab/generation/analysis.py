"""Analyses of the generation data: where R-peaks fall in the windows (histogram and per-bin medians)
and real (cleaned) versus analytic ECGs. ``python -m ecg_lab.analyze`` runs them."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ecg_lab.app.outputs import write_json
from ecg_lab.generation.analytic import analytic_ecg
from ecg_lab.generation.datamodule import WaveformDataModule
from ecg_lab.generation.figures import plot_real_vs_analytic, plot_rpeaks

COMMANDS = ("rpeaks", "waveforms")


def rpeak_positions(rpeaks: np.ndarray) -> np.ndarray:
    """The within-window index of every R-peak in a (windows, samples) mask."""
    return np.nonzero(rpeaks)[1]


def rpeak_histogram(positions: np.ndarray, window: int, bins: int) -> list[dict[str, Any]]:
    """Counts of R-peak positions in ``bins`` equal bins over ``[0, window)``."""
    counts, edges = np.histogram(positions, bins=bins, range=(0, window))
    return [
        {"bin": i, "start": float(edges[i]), "end": float(edges[i + 1]), "count": int(c)}
        for i, c in enumerate(counts)
    ]


def bin_medians(positions: np.ndarray, window: int, bins: int) -> list[dict[str, Any]]:
    """The median R-peak index (and count) within each of ``bins`` equal temporal bins."""
    edges = np.linspace(0, window, bins + 1)
    rows = []
    for i in range(bins):
        inside = positions[(positions >= edges[i]) & (positions < edges[i + 1])]
        rows.append(
            {
                "bin": i,
                "start": float(edges[i]),
                "end": float(edges[i + 1]),
                "n_peaks": int(inside.size),
                "median_index": float(np.median(inside)) if inside.size else float("nan"),
            }
        )
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def analyze_rpeaks(cfg: DictConfig, dm: WaveformDataModule, out: Path) -> dict[str, Any]:
    masks = np.concatenate([dm.datasets[s].windows.rpeaks for s in cfg.splits])
    positions = rpeak_positions(masks)
    hist = rpeak_histogram(positions, dm.window, int(cfg.hist_bins))
    medians = bin_medians(positions, dm.window, int(cfg.median_bins))
    write_csv(out / "rpeak_histogram.csv", hist)
    write_csv(out / "rpeak_bin_medians.csv", medians)
    plot_rpeaks(hist, medians, dm.window, out / "rpeaks.png", f"{dm.name}, {len(masks)} windows")
    summary = {
        "data": dm.name,
        "splits": list(cfg.splits),
        "n_windows": int(len(masks)),
        "n_rpeaks": int(positions.size),
        "rpeaks_per_window": float(positions.size / max(len(masks), 1)),
        "median_rpeak_index": float(np.median(positions)) if positions.size else float("nan"),
    }
    write_json(out / "rpeak_summary.json", summary)
    return summary


def analyze_waveforms(cfg: DictConfig, dm: WaveformDataModule, out: Path) -> dict[str, Any]:
    r = dm.records
    assert r is not None
    usable = np.flatnonzero(r.lengths >= dm.window)
    rng = np.random.default_rng(int(cfg.seed))
    chosen = np.sort(rng.choice(usable, size=min(int(cfg.n_records), usable.size), replace=False))
    real, analytic, peaks, names = [], [], [], []
    for i in chosen:
        x = r.signal(i)[: dm.window]
        p = r.rpeaks(i)
        real.append(x)
        analytic.append(analytic_ecg(p, int(r.lengths[i]), r.fs, dm.analytic)[0][: dm.window])
        peaks.append(p[p < dm.window])
        names.append(f"{r.sources[i]} {r.ids[i]} ({r.labels[i] or 'no label'})")
    plot_real_vs_analytic(real, analytic, peaks, names, r.fs, out / "real_vs_analytic.png")
    return {"records": names}
