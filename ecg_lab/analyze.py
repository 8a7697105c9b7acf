"""Analyses of the ingested waveform data: ``python -m ecg_lab.analyze COMMAND [overrides]``.

- ``rpeaks``: where R-peaks fall in the windows: a histogram of their positions (``rpeak_histogram.csv``)
  and the median R-peak index within each temporal bin (``rpeak_bin_medians.csv``), plotted in
  ``rpeaks.png``; ``rpeak_summary.json`` has the totals.
- ``waveforms``: real (cleaned) versus analytic ECGs of a few records, ``real_vs_analytic.png``.

Both read the data config (``data=ptbxl`` etc.) through the same cache as training.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from ecg_lab.data.analytic import analytic_ecg
from ecg_lab.data.splits import SPLITS
from ecg_lab.data.waveforms import WaveformDataModule
from ecg_lab.plots import plot_real_vs_analytic, plot_rpeaks
from ecg_lab.reports import write_json
from ecg_lab.runtime import CONFIG_DIR, task_wrapper

log = logging.getLogger(__name__)
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


@task_wrapper
def analyze(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.command`` on the configured data; writes into the run folder."""
    if cfg.command not in COMMANDS:
        raise ValueError(f"unknown command {cfg.command!r}; use one of {COMMANDS}")
    dm = hydra.utils.instantiate(cfg.data)
    if not isinstance(dm, WaveformDataModule):
        raise ValueError(
            f"python -m ecg_lab.analyze needs a waveform data config (data=synthetic_normal, ptbxl, "
            f"physionet2017_normal or normal_ecg), got {type(dm).__name__}"
        )
    unknown = sorted(set(cfg.splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits: unknown {unknown}; use some of {list(SPLITS)}")
    dm.prepare_data()
    dm.setup()
    out = Path(cfg.paths.output_dir)
    result = (analyze_rpeaks if cfg.command == "rpeaks" else analyze_waveforms)(cfg, dm, out)
    log.info("%s: %s; written to %s", cfg.command, result, out)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
def _hydra_main(cfg: DictConfig) -> None:
    analyze(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    """``COMMAND [overrides]``: the command becomes the ``command=`` override."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        sys.exit(f"usage: python -m ecg_lab.analyze {{{'|'.join(COMMANDS)}}} [data=...] [overrides]")
    sys.argv = [sys.argv[0], *args[1:], f"command={args[0]}"]
    _hydra_main()


if __name__ == "__main__":
    main()
