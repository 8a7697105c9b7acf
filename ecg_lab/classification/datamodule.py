"""LightningDataModule for single-lead ECG windows: files → records → split → windows → batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytorch_lightning as pl
import torch

from ecg_lab.classification.inputs import RecordInputs
from ecg_lab.classification.loss import balanced_class_weights
from ecg_lab.classification.prepared import PreparedRecords, prepare_records
from ecg_lab.classification.windows import WindowDataset
from ecg_lab.data.loaders import SplitLoaders
from ecg_lab.data.physionet2017 import CLASSES, SOURCE
from ecg_lab.data.splits import SPLITS, SplitManifest, assign_splits, check_folds, splits_from_manifest
from ecg_lab.edge.preprocess import Preprocessing

if TYPE_CHECKING:
    from ecg_lab.classification.recordings import WholeRecordings
    from ecg_lab.classification.rr_features import RRFeatures
    from ecg_lab.data.synthetic import SyntheticSpec

log = logging.getLogger(__name__)
SPLIT_MODES = ("stratified", "all")


class ECGWindowDataModule(SplitLoaders, pl.LightningDataModule):
    """Windows of PhysioNet-2017-layout records, split by record.

    ``split="stratified"``: train/val/test by record, stratified by label, ``split_fractions``
    with ``split_seed``; with ``folds=k``, stratified k-fold instead: fold ``fold`` is the test
    set and the other records are split train/val (sweep ``data.fold=0,1,...,k-1``).
    ``split="all"``: every record is in the test set (evaluation of a folder never seen in training).
    Records are assigned by :func:`~ecg_lab.data.splits.assign_splits` over every record REFERENCE.csv
    lists, before any is read, so a skipped record moves no other. ``manifest`` (a run's ``split.csv``)
    fixes the split instead: its records keep their splits and none is assigned anew.
    ``recordings`` (:class:`~ecg_lab.classification.recordings.WholeRecordings`) serves whole recordings
    instead of windows: training ones cropped, the others whole, batches padded.
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
        synthetic: SyntheticSpec | None = None,
        name: str = "physionet2017",
        manifest: str | Path | None = None,
        features: RRFeatures | None = None,
        recordings: WholeRecordings | None = None,
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
        self.keep_run_settings(batch_size, num_workers, pin_memory, on_bad_record, cache_dir, name, manifest)
        self.synthetic = synthetic
        self.features = features  # per-recording network inputs (features=rr); None: the signal alone
        if recordings is not None:
            recordings.check(self.preprocess)
        self.batching = self.recordings = recordings  # whole recordings instead of windows (None: windows)
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
    def _assign(self, prepared: PreparedRecords) -> tuple[np.ndarray, np.ndarray | None]:
        """The split of each prepared record (``""``: not used) and its fold (k-fold only)."""
        if self.split == "all":
            return np.full(len(prepared), "test"), None
        if self.given_manifest is not None:
            where = f"data.root={self.root}" if self.root is not None else f"data {self.name}"
            return splits_from_manifest(self.given_manifest, SOURCE, list(prepared.ids), where), None
        rows = prepared.listed  # every record REFERENCE.csv lists, read or skipped
        splits, folds = assign_splits(
            [r for r, _ in rows],
            [lab for _, lab in rows],
            self.split_fractions,
            self.split_seed,
            self.folds,
            self.fold,
        )
        position = {r: i for i, (r, _) in enumerate(rows)}
        at = np.asarray([position[r] for r in prepared.ids], dtype=np.int64)
        return splits[at], (folds[at] if folds is not None else None)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        prepared = self._prepare()
        self.record_split, folds = self._assign(prepared)
        for part in SPLITS:
            idx = np.flatnonzero(self.record_split == part)
            self.datasets[part] = (
                self.recordings.dataset(part, prepared, idx)
                if self.recordings is not None
                else WindowDataset(prepared, idx, self.preprocess)
            )
        self._add_features(prepared)
        used = np.flatnonzero(self.record_split != "")
        self.manifest = SplitManifest.build(
            SOURCE,
            prepared.ids[used],
            [self.classes[i] for i in prepared.labels[used]],
            self.record_split[used],
            folds[used] if folds is not None else None,
        )
        self.skipped = list(prepared.skipped)
        sizes = {
            k: f"{np.sum(self.record_split == k)} records / {len(v)} windows"
            for k, v in self.datasets.items()
        }
        log.info("data %s: %s", self.name, sizes)

    def _add_features(self, prepared: PreparedRecords) -> None:
        """Join each item to its recording's ``features`` (cached with the prepared records) as the
        network input ``features.INPUT``."""
        if self.features is None:
            return
        rate = self.preprocess.rate(self.fs)  # the prepared signals' rate (resample_to when set)
        table = torch.from_numpy(self.features.table(prepared, self.cache_dir, rate))
        for part, dataset in self.datasets.items():
            self.datasets[part] = RecordInputs(dataset, {self.features.INPUT: table})  # type: ignore[assignment]

    # -- class balance ------------------------------------------------------------------------
    def class_counts(self) -> np.ndarray:
        """Training windows per class."""
        self.setup()
        return self.datasets["train"].class_counts(len(self.classes))

    def class_weights(self) -> np.ndarray:
        """Inverse-frequency ("balanced") weights from the training windows: ``N / (K * n_c)``."""
        self.setup()
        labels = self.datasets["train"].labels
        advice = "check data.root or data.split_fractions"
        return balanced_class_weights(labels, self.classes, "windows", advice)

    def class_weight_table(self) -> dict[str, float]:
        """``class → weight`` for ``class_weights.json`` (empty without training windows)."""
        if not len(self.datasets.get("train", ())):
            return {}
        return dict(zip(self.classes, self.class_weights().tolist(), strict=True))

    def record_ids(self) -> np.ndarray:
        """Record ids, indexed by the record index that batches carry."""
        return self._prepare().ids
