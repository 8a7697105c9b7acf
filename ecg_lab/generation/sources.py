"""Sources of single-lead records for the generation workflow, each with its train/val/test split.

A source reads its files into :class:`~ecg_lab.data.records.Record` objects and says which split
each record belongs to; :mod:`ecg_lab.generation.datamodule` turns them into windows. ``fingerprint()``
describes the files (names and content) and the selection, for the cache key.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecg_lab.data import physionet2017, ptbxl
from ecg_lab.data.cache import files_digest
from ecg_lab.data.records import BadRecordError, Record, SkippedRecord, check_on_bad_record, skip_or_raise
from ecg_lab.data.splits import assign_splits

if TYPE_CHECKING:
    from ecg_lab.data.synthetic import SyntheticSpec

log = logging.getLogger(__name__)


@dataclass
class SourceRecords:
    """What a source yields: records, the split of each (train/val/test) and the skipped ones."""

    records: list[Record] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    skipped: list[SkippedRecord] = field(default_factory=list)


class PTBXLSource:
    """One lead of the PTB-XL records carrying ``statement`` (likelihood ≥ ``min_likelihood``), split by
    ``strat_fold``. Record labels are the diagnostic superclasses (NORM, MI, STTC, CD, HYP) joined by +."""

    def __init__(
        self,
        root: str | Path,
        statement: str | None = "NORM",
        min_likelihood: float = 100.0,
        lead: str = "II",
        sampling_rate: int = 100,
        train_folds: Sequence[int] = tuple(range(1, 9)),
        val_folds: Sequence[int] = (9,),
        test_folds: Sequence[int] = (10,),
    ) -> None:
        if lead.upper() not in ptbxl.LEADS:
            raise ValueError(f"data.sources.ptbxl.lead must be one of {list(ptbxl.LEADS)}, got {lead!r}")
        if int(sampling_rate) not in ptbxl.FILENAME_COLUMN:
            raise ValueError(
                f"data.sources.ptbxl.sampling_rate must be one of {sorted(ptbxl.FILENAME_COLUMN)}, "
                f"got {sampling_rate!r}"
            )
        self.root = Path(root)
        self.statement = statement
        self.min_likelihood = float(min_likelihood)
        self.lead = lead
        self.sampling_rate = int(sampling_rate)
        self.folds = {"train": list(train_folds), "val": list(val_folds), "test": list(test_folds)}

    @functools.cached_property
    def _rows(self) -> dict[str, list[dict[str, Any]]]:
        """The selected rows by split (read once; ``fingerprint`` and ``read`` both need them)."""
        rows = ptbxl.read_database(self.root)
        if self.statement:
            rows = ptbxl.select(rows, self.statement, self.min_likelihood)
        parts = ptbxl.fold_split(rows, self.folds["train"], self.folds["val"], self.folds["test"])
        if not any(parts.values()):
            raise BadRecordError(
                ptbxl.find_root(self.root) / ptbxl.DATABASE,
                f"no record has statement {self.statement!r} at likelihood >= {self.min_likelihood:g} "
                f"in folds {self.folds}",
            )
        return parts

    def fingerprint(self) -> dict[str, Any]:
        root = ptbxl.find_root(self.root)
        column = ptbxl.FILENAME_COLUMN[self.sampling_rate]
        files = [root / ptbxl.DATABASE, root / ptbxl.STATEMENTS]
        for rows in self._rows.values():
            files += [root / (r.get(column, "") + ext) for r in rows for ext in (".dat", ".hea")]
        return {
            "source": "ptbxl",
            "root": str(root),
            "statement": self.statement,
            "min_likelihood": self.min_likelihood,
            "lead": self.lead,
            "sampling_rate": self.sampling_rate,
            "folds": self.folds,
            "files": files_digest(files),
        }

    def read(self, on_bad_record: str = "raise") -> SourceRecords:
        out = SourceRecords()
        for part, rows in self._rows.items():
            records, skipped = ptbxl.read_records(
                self.root, rows, self.lead, self.sampling_rate, on_bad_record
            )
            out.records += records
            out.splits += [part] * len(records)
            out.skipped += skipped
        return out


class PhysioNet2017Source:
    """The PhysioNet/CinC 2017 records labelled ``labels`` (default: normal rhythm), split by the same
    rule as the classifier's data (:func:`~ecg_lab.data.splits.assign_splits` over every record of
    REFERENCE.csv with ``split_fractions`` and ``split_seed``), so with equal settings no record the
    classifier tests on is one the generator trains on. ``synthetic`` replaces ``root`` with the generated
    dataset of that spec (the framework's embedded default)."""

    def __init__(
        self,
        root: str | Path | None = None,
        labels: Sequence[str] = ("N",),
        fs: float = 300.0,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        split_seed: int = 42,
        synthetic: SyntheticSpec | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if root is None and synthetic is None:
            raise ValueError("data.sources.physionet2017.root is required unless its synthetic spec is set")
        unknown = sorted(set(labels) - set(physionet2017.CLASSES))
        if unknown or not labels:
            raise ValueError(
                f"data.sources.physionet2017.labels must be some of {list(physionet2017.CLASSES)}, "
                f"got {list(labels)}"
            )
        if synthetic is not None and cache_dir is None:
            raise ValueError("data.cache_dir is required for the synthetic dataset")
        self.root = Path(root) if root is not None else None
        self.labels = tuple(labels)
        self.fs = float(fs)
        self.split_fractions = tuple(float(f) for f in split_fractions)
        self.split_seed = int(split_seed)
        self.synthetic = synthetic
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def record_root(self) -> Path:
        """The folder read: ``root``, or the synthetic dataset (generated on first use)."""
        if self.synthetic is not None:
            assert self.cache_dir is not None
            return self.synthetic.ensure(self.cache_dir)
        assert self.root is not None
        return self.root

    @functools.cached_property
    def _rows(self) -> tuple[Path, list[tuple[str, str, str]]]:
        """The record folder and the ``(record, label, split)`` rows with the selected labels (read once).

        Splits are assigned over every listed record, whatever its label, exactly as the classifier's
        datamodule assigns them.
        """
        record_dir, rows = physionet2017.iter_reference(self.record_root())
        splits, _ = assign_splits(
            [r for r, _ in rows], [lab for _, lab in rows], self.split_fractions, self.split_seed
        )
        selected = [(r, lab, s) for (r, lab), s in zip(rows, splits, strict=True) if lab in self.labels]
        if not selected:
            raise BadRecordError(record_dir / "REFERENCE.csv", f"no record is labelled {list(self.labels)}")
        return record_dir, selected

    def fingerprint(self) -> dict[str, Any]:
        record_dir, rows = self._rows
        files = [record_dir / "REFERENCE.csv"]
        files += [record_dir / f"{r}{ext}" for r, _, _ in rows for ext in (".mat", ".hea")]
        return {
            "source": "physionet2017",
            "split_rule": "hash",
            "root": str(record_dir.resolve()),
            "labels": self.labels,
            "fs": self.fs,
            "split_fractions": self.split_fractions,
            "split_seed": self.split_seed,
            "files": files_digest(files),
        }

    def read(self, on_bad_record: str = "raise") -> SourceRecords:
        check_on_bad_record(on_bad_record)
        record_dir, rows = self._rows
        out = SourceRecords()
        for record_id, label, split in rows:
            try:
                out.records.append(
                    physionet2017.read_record(record_dir, record_id, label, self.fs, physionet2017.CLASSES)
                )
            except BadRecordError as err:
                skip_or_raise(err, on_bad_record, out.skipped)
                continue
            out.splits.append(split)
        return out
