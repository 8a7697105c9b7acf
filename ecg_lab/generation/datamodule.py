"""LightningDataModule of the generation workflow: sources → cleaned records (cached) → windows,
raw or analytic → batches, each record in the split its source (or a given manifest) assigns.

A batch is a dict: ``x`` (B, 1, window), ``rpeaks`` (B, window) bool, ``index`` (B,) window index and,
for analytic input, ``envelope`` (B, window).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from ecg_lab.data.loaders import SplitLoaders
from ecg_lab.data.records import check_on_bad_record
from ecg_lab.data.splits import SPLITS, SplitManifest, splits_from_manifest
from ecg_lab.generation.analytic import AnalyticSpec
from ecg_lab.generation.cleaning import Cleaning, CleanRecords, RecordSource, cached_clean_records
from ecg_lab.generation.windows import WaveformDataset, Windows, cut_windows

log = logging.getLogger(__name__)
INPUTS = ("raw", "analytic")


class WaveformDataModule(SplitLoaders, pl.LightningDataModule):
    """Windows of single-lead ECGs from one or more sources, each split by its own rule (PTB-XL by
    ``strat_fold``, PhysioNet 2017 by the classifier's rule), or by ``manifest`` (a run's ``split.csv``)
    when given."""

    TASK = "generation"

    def __init__(
        self,
        sources: Mapping[str, RecordSource | None],
        fs: float = 100.0,
        window: int = 1000,
        stride: int = 1000,
        input: str = "analytic",
        analytic: AnalyticSpec | Mapping[str, Any] | None = None,
        cleaning: Cleaning | Mapping[str, Any] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        on_bad_record: str = "raise",
        cache_dir: str | Path | None = None,
        name: str = "waveforms",
        manifest: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.sources = {k: s for k, s in dict(sources or {}).items() if s is not None}
        if not self.sources:
            raise ValueError(
                "data.sources names no source; set e.g. data.sources.ptbxl (see conf/data/ptbxl.yaml)"
            )
        if input not in INPUTS:
            raise ValueError(f"data.input must be one of {INPUTS}, got {input!r}")
        if int(window) < 1 or int(stride) < 1:
            raise ValueError(f"data.window and data.stride must be >= 1, got {window} and {stride}")
        check_on_bad_record(on_bad_record)
        self.fs = float(fs)
        self.window = int(window)
        self.stride = int(stride)
        self.input = input
        self.analytic = (
            analytic if isinstance(analytic, AnalyticSpec) else AnalyticSpec(**dict(analytic or {}))
        )
        self.cleaning = cleaning if isinstance(cleaning, Cleaning) else Cleaning(**dict(cleaning or {}))
        self.keep_run_settings(batch_size, num_workers, pin_memory, on_bad_record, cache_dir, name, manifest)
        self.records: CleanRecords | None = None
        self.windows: Windows | None = None
        self.datasets: dict[str, WaveformDataset] = {}

    def roots(self) -> dict[str, str]:
        """Each source's folder (``synthetic`` for the generated dataset)."""
        return {k: str(getattr(s, "root", None) or "synthetic") for k, s in self.sources.items()}

    # -- files → records ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Read, clean and detect R-peaks into the cache, once."""
        self._prepare()

    def _prepare(self) -> CleanRecords:
        if self.records is None:
            self.records = cached_clean_records(
                self.sources, self.fs, self.cleaning, self.on_bad_record, self.cache_dir
            )
        return self.records

    # -- records → windows → splits ----------------------------------------------------------
    def _splits(self, records: CleanRecords) -> np.ndarray:
        """Each record's split: its source's, or the given manifest's (``""``: not used)."""
        if self.given_manifest is None:
            return records.splits
        out = np.full(len(records), "", dtype=object)
        for name in self.sources:
            sel = np.flatnonzero(records.sources == name)
            out[sel] = splits_from_manifest(
                self.given_manifest, name, list(records.ids[sel]), f"data.sources.{name}"
            )
        return out.astype(str)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = self._prepare()
        splits = self._splits(records)
        self.windows = cut_windows(
            records, self.window, self.stride, self.analytic if self.input == "analytic" else None
        )
        split_of_window = splits[self.windows.record]
        for part in SPLITS:
            idx = np.flatnonzero(split_of_window == part)
            self.datasets[part] = WaveformDataset(self.windows.subset(idx))
        used = np.flatnonzero(splits != "")
        self.manifest = SplitManifest.build(
            records.sources[used], records.ids[used], records.labels[used], splits[used]
        )
        self.skipped = list(records.skipped)
        log.info(
            "data %s (%s input): %s",
            self.name,
            self.input,
            {k: f"{len(v)} windows" for k, v in self.datasets.items()},
        )
