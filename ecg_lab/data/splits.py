"""Record-level splits, assigned once and written down.

:func:`assign_splits` gives each record its split (train/val/test), stratified by class, from a seeded
hash of its own id: within a class, records are ordered by ``sha256(seed:record)`` and cut at the
split fractions. Adding, removing or skipping one record therefore moves no record of another class,
and within its own class at most the record at each cut. (The earlier rule, one random permutation per
class from one generator, reshuffled every class when one record changed.) With ``folds=k`` the
class's ordered records are cut into k contiguous folds; fold ``fold`` is the test set, and the rest
is cut into train and val the same way.

:class:`SplitManifest` is the written-down result: record, label, split (plus source and fold where
they apply). Training writes it to ``split.csv`` and stores it in every checkpoint; evaluation of a
checkpoint on its own split reads it back and never splits again.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("source", "record", "label", "split", "fold")


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    """``data.split_fractions`` as an array; three non-negative numbers summing to 1."""
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(
            f"data.split_fractions must be three non-negative numbers summing to 1, got {list(fractions)}"
        )
    return fr


def check_folds(folds: int, fold: int) -> None:
    """Reject ``data.folds`` / ``data.fold`` values that do not name one of k >= 2 folds."""
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"data.folds must be an integer >= 2 (or null for no k-fold), got {folds!r}")
    if not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"data.fold must be in 0..{folds - 1} for data.folds={folds}, got {fold!r}")


def record_order(records: Sequence[str], seed: int) -> np.ndarray:
    """Indices of ``records`` sorted by a seeded hash of each id (ties, i.e. repeated ids, by position)."""
    keys = [hashlib.sha256(f"{seed}:{r}".encode()).digest() for r in records]
    return np.asarray(sorted(range(len(records)), key=lambda i: (keys[i], i)), dtype=np.int64)


def _cut(n: int, share: float) -> int:
    """How many of ``n`` ordered records fall before a cut at ``share`` (rounded half up)."""
    return int(math.floor(share * n + 0.5))


def assign_splits(
    records: Sequence[str],
    labels: Sequence[Any],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    folds: int | None = None,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each record's split (and, with ``folds``, its fold), stratified by ``labels``.

    Returns ``(splits, record_folds)``: arrays of split names and fold numbers (None without k-fold),
    in the order of ``records``.
    """
    fr = check_fractions(fractions)
    if folds is not None:
        check_folds(folds, fold)
    labels_arr = np.asarray(labels)
    out = np.empty(len(records), dtype=object)
    fold_of = np.full(len(records), -1, dtype=np.int64) if folds is not None else None
    for cls in np.unique(labels_arr) if len(labels_arr) else []:
        members = np.flatnonzero(labels_arr == cls)
        ordered = members[record_order([records[i] for i in members], seed)]
        n = len(ordered)
        if folds is None:
            n_train, n_val = _cut(n, fr[0]), _cut(n, fr[0] + fr[1])
            out[ordered[:n_train]] = "train"
            out[ordered[n_train:n_val]] = "val"
            out[ordered[n_val:]] = "test"
            continue
        assert fold_of is not None
        fold_of[ordered] = np.arange(n) * folds // max(n, 1)
        out[ordered[fold_of[ordered] == fold]] = "test"
        rest = ordered[fold_of[ordered] != fold]
        n_val = _cut(len(rest), fr[1] / (fr[0] + fr[1]) if fr[0] + fr[1] > 0 else 0.0)
        out[rest[:n_val]] = "val"
        out[rest[n_val:]] = "train"
    return out.astype(str), fold_of


@dataclass(frozen=True)
class SplitManifest:
    """Which split each record is in: the record-level split of one run, written once and read back.

    ``sources`` names each record's source (``physionet2017``, ``ptbxl``, ...); ``folds`` is given only
    with k-fold. Rows are in the order the data holds the records.
    """

    sources: tuple[str, ...]
    records: tuple[str, ...]
    labels: tuple[str, ...]
    splits: tuple[str, ...]
    folds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.records)
        lengths = {len(self.sources), len(self.labels), len(self.splits), len(self.folds or self.records)}
        if lengths != {n}:
            raise ValueError("a split manifest needs one source, label, split (and fold) per record")
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"split manifest names unknown splits {unknown}; known: {list(SPLITS)}")

    @classmethod
    def build(
        cls,
        source: str | Sequence[str],
        records: Sequence[str],
        labels: Sequence[str],
        splits: Sequence[str],
        folds: Sequence[int] | None = None,
    ) -> SplitManifest:
        """From columns; ``source`` may be one name for every record."""
        sources = [source] * len(records) if isinstance(source, str) else list(source)
        return cls(
            tuple(str(s) for s in sources),
            tuple(str(r) for r in records),
            tuple(str(lab) for lab in labels),
            tuple(str(s) for s in splits),
            tuple(int(f) for f in folds) if folds is not None else None,
        )

    def __len__(self) -> int:
        return len(self.records)

    def split_of(self) -> dict[tuple[str, str], str]:
        """``(source, record) → split``."""
        return dict(zip(zip(self.sources, self.records, strict=True), self.splits, strict=True))

    def records_in(self, split: str, source: str | None = None) -> list[str]:
        """The records of ``split`` (of one source when given)."""
        return [
            r
            for s, r, p in zip(self.sources, self.records, self.splits, strict=True)
            if p == split and (source is None or s == source)
        ]

    # -- plain forms: checkpoints (weights_only) and split.csv --------------------------------
    def to_dict(self) -> dict[str, list[Any]]:
        """Columns as plain lists (what checkpoints store)."""
        out: dict[str, list[Any]] = {
            "source": list(self.sources),
            "record": list(self.records),
            "label": list(self.labels),
            "split": list(self.splits),
        }
        if self.folds is not None:
            out["fold"] = list(self.folds)
        return out

    @classmethod
    def from_dict(cls, columns: dict[str, Sequence[Any]]) -> SplitManifest:
        """Inverse of :meth:`to_dict`."""
        return cls.build(
            columns["source"], columns["record"], columns["label"], columns["split"], columns.get("fold")
        )

    def write_csv(self, path: Path) -> Path:
        """``source,record,label,split[,fold]`` rows."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = self.to_dict()
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(columns))
            w.writerows(zip(*columns.values(), strict=True))
        return path

    @classmethod
    def read_csv(cls, path: str | Path) -> SplitManifest:
        """A manifest written by :meth:`write_csv` (``split.csv`` of a run folder)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"split manifest {path} does not exist; give the split.csv of a run folder"
            )
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        missing = {"record", "label", "split"} - set(rows[0] if rows else {})
        if not rows or missing:
            raise ValueError(
                f"{path}: not a split manifest (needs columns record, label, split; missing {missing})"
            )
        folds = [int(r["fold"]) for r in rows] if "fold" in rows[0] and rows[0]["fold"] != "" else None
        try:
            return cls.build(
                [r.get("source") or "physionet2017" for r in rows],
                [r["record"] for r in rows],
                [r["label"] for r in rows],
                [r["split"] for r in rows],
                folds,
            )
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


class ManifestMismatchError(ValueError):
    """A record the manifest names is missing from, or unreadable in, the data."""


def splits_from_manifest(
    manifest: SplitManifest, source: str, records: Sequence[str], where: str
) -> np.ndarray:
    """Each of ``records``' split as the manifest says; records the manifest does not name get ``""``
    (left out). A record of ``source`` that the manifest names but ``records`` lacks is an error."""
    split_of = manifest.split_of()
    present = set(records)
    missing = [r for s, r in split_of if s == source and r not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ManifestMismatchError(
            f"the split manifest names {len(missing)} {source} records that {where} lacks or could not "
            f"read: {shown}. Evaluate on the data the checkpoint was trained on, or pass data.split=all "
            "to evaluate every record of another dataset"
        )
    return np.asarray([split_of.get((source, r), "") for r in records], dtype=str)
