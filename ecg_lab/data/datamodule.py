"""LightningDataModule for single-lead ECG windows: files → records → split → windows → batches."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from ecg_lab.data.loaders import SplitLoaders
from ecg_lab.data.physionet2017 import CLASSES
from ecg_lab.data.prepared import PreparedRecords, prepare_records
from ecg_lab.data.preprocess import Preprocessing
from ecg_lab.data.records import write_skipped_csv
from ecg_lab.data.splits import SPLITS, check_folds, kfold_split, stratified_split, write_split_csv
from ecg_lab.data.windows import WindowDataset

if TYPE_CHECKING:
    from ecg_lab.data.synthetic import SyntheticSpec

log = logging.getLogger(__name__)
SPLIT_MODES = ("stratified", "all")


class ECGWindowDataModule(SplitLoaders, pl.LightningDataModule):
    """Windows of PhysioNet-2017-layout records, split by record.

    ``split="stratified"``: train/val/test by record, stratified by label, ``split_fractions``
    with ``split_seed``; with ``folds=k``, stratified k-fold instead: fold ``fold`` is the test
    set and the other records are split train/val (sweep ``data.fold=0,1,...,k-1``).
    ``split="all"``: every record is in the test set (evaluation of a folder never seen in training).
    """

    TASK = "classification"

    def __init__(
        self,
        root: str | Path | None,
        preprocess: Preprocessing | None = None,
        classes: Sequence[str] = CLASSES,
        fs: float = 300.0,
        split: str = "stratified",
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        split_seed: int = 42,
        folds: int | None = None,
        fold: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        on_bad_record: str = "raise",
        cache_dir: str | Path | None = None,
        run_dir: str | Path | None = None,
        synthetic: SyntheticSpec | None = None,
        name: str = "physionet2017",
    ) -> None:
        super().__init__()
        if split not in SPLIT_MODES:
            raise ValueError(f"data.split must be one of {SPLIT_MODES}, got {split!r}")
        if root is None and synthetic is None:
            raise ValueError("data.root is required unless data.synthetic is set")
        self.root = Path(root) if root is not None else None
        self.preprocess = preprocess or Preprocessing()
        self.classes = tuple(classes)
        self.fs = float(fs)
        self.split = split
        self.split_fractions = tuple(split_fractions)
        self.split_seed = split_seed
        self.folds = folds
        self.fold = fold
        if folds is not None:
            check_folds(folds, fold)  # before any work
        self.keep_run_settings(batch_size, num_workers, pin_memory, on_bad_record, cache_dir, run_dir, name)
        self.synthetic = synthetic
        self.prepared: PreparedRecords | None = None
        self.record_split: np.ndarray | None = None
        self.datasets: dict[str, WindowDataset] = {}

    # -- files → records -------------------------------------------------------------------
    def record_root(self) -> Path:
        """The folder the reader reads: ``root``, or the synthetic dataset (generated on first use)."""
        if self.synthetic is not None:
            if self.cache_dir is None:
                raise ValueError("data.cache_dir is required for the synthetic dataset")
            return self.synthetic.ensure(self.cache_dir)
        assert self.root is not None
        return self.root

    def prepare_data(self) -> None:
        """Generate (synthetic) and preprocess into the cache, once."""
        self._prepare()

    def _prepare(self) -> PreparedRecords:
        if self.prepared is None:
            self.prepared = prepare_records(
                self.record_root(), self.preprocess, self.cache_dir, self.fs, self.classes, self.on_bad_record
            )
        return self.prepared

    # -- records → split → windows ------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        prepared = self._prepare()
        if self.split == "all":
            self.record_split = np.full(len(prepared), "test")
        elif self.folds is not None:
            self.record_split = kfold_split(
                prepared.labels, self.folds, self.fold, self.split_fractions, self.split_seed
            )
        else:
            self.record_split = stratified_split(prepared.labels, self.split_fractions, self.split_seed)
        for part in SPLITS:
            idx = np.flatnonzero(self.record_split == part)
            self.datasets[part] = WindowDataset(prepared, idx, self.preprocess)
        sizes = {
            k: f"{np.sum(self.record_split == k)} records / {len(v)} windows"
            for k, v in self.datasets.items()
        }
        log.info("data %s: %s", self.name, sizes)
        self.write_run_files()

    @rank_zero_only
    def write_run_files(self) -> None:
        """Write ``split.csv`` and, when any were skipped, ``skipped_records.csv`` into the run folder."""
        if self.run_dir is None or self.prepared is None or self.record_split is None:
            return
        labels = [self.classes[i] for i in self.prepared.labels]
        write_split_csv(self.run_dir / "split.csv", self.prepared.ids, labels, self.record_split)
        write_skipped_csv(self.run_dir, self.prepared.skipped)
        if self.datasets.get("train") is not None and len(self.datasets["train"]):
            (self.run_dir / "class_weights.json").write_text(
                json.dumps(dict(zip(self.classes, self.class_weights().tolist(), strict=True)), indent=1)
            )

    # -- class balance ------------------------------------------------------------------------
    def class_counts(self) -> np.ndarray:
        """Training windows per class."""
        self.setup()
        return self.datasets["train"].class_counts(len(self.classes))

    def class_weights(self) -> np.ndarray:
        """Inverse-frequency weights from the training windows: ``N / (K * n_c)``."""
        counts = self.class_counts().astype(np.float64)
        if np.any(counts == 0):
            missing = [c for c, n in zip(self.classes, counts, strict=True) if n == 0]
            raise ValueError(
                f"no training windows of class {missing}; check data.root or data.split_fractions"
            )
        return counts.sum() / (len(counts) * counts)

    def record_ids(self) -> np.ndarray:
        """Record ids, indexed by the record index that batches carry."""
        return self._prepare().ids
