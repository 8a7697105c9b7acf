"""Stratified, recording-level train/val/test splits: no record ever has windows in two splits."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42
) -> np.ndarray:
    """Assign each record to train/val/test, class by class, in the given proportions.

    Returns an array of split names, one per record (same order as ``labels``).
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(
            f"data.split_fractions must be three non-negative numbers summing to 1, got {list(fractions)}"
        )
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_train = int(round(fr[0] * len(idx)))
        n_val = int(round(fr[1] * len(idx)))
        out[idx[:n_train]] = "train"
        out[idx[n_train : n_train + n_val]] = "val"
        out[idx[n_train + n_val :]] = "test"
    return out.astype(str)


def write_split_csv(path: Path, ids: Sequence[str], labels: Sequence[str], splits: Sequence[str]) -> None:
    """Write ``record,label,split`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["record", "label", "split"])
        w.writerows(zip(ids, labels, splits, strict=True))
