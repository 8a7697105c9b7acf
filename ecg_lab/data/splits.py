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


def check_folds(folds: int, fold: int) -> None:
    """Reject ``data.folds`` / ``data.fold`` values that do not name one of k >= 2 folds."""
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"data.folds must be an integer >= 2 (or null for no k-fold), got {folds!r}")
    if not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"data.fold must be in 0..{folds - 1} for data.folds={folds}, got {fold!r}")


def kfold_split(
    labels: np.ndarray,
    folds: int,
    fold: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
) -> np.ndarray:
    """Stratified k-fold by record: fold ``fold`` is the test set; the rest is split train/val.

    Each class's records are shuffled with ``seed`` and dealt round-robin into ``folds`` folds, so
    every fold holds each class in proportion and the folds of one seed partition the records.
    Validation takes ``fractions[1] / (fractions[0] + fractions[1])`` of the remaining records of
    each class (for early stopping); the rest trains.
    """
    check_folds(folds, fold)
    fr = np.asarray(fractions, dtype=float)
    val_share = fr[1] / (fr[0] + fr[1])
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        in_test = np.arange(len(idx)) % folds == fold
        rest = idx[~in_test]
        n_val = int(round(val_share * len(rest)))
        out[idx[in_test]] = "test"
        out[rest[:n_val]] = "val"
        out[rest[n_val:]] = "train"
    return out.astype(str)


def write_split_csv(path: Path, ids: Sequence[str], labels: Sequence[str], splits: Sequence[str]) -> None:
    """Write ``record,label,split`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["record", "label", "split"])
        w.writerows(zip(ids, labels, splits, strict=True))
