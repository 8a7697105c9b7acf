"""Waveform windows for the generation workflow: sources → records → cleaned 100 Hz signals with their
R-peaks (cached) → fixed-length windows, raw or analytic → batches.

Each record is resampled to ``fs``, cleaned with NeuroKit2 (``ecg_clean``), optionally turned upright
(``ecg_invert``), and its R-peaks are found by NeuroKit2; then it is z-scored. That part is the
expensive one and is cached on disk (keyed by the source files, the selection and the cleaning
settings), written into a temporary folder and renamed into place. Windows are cut from it at set-up;
with ``input=analytic`` each window is the analytic ECG built from the record's R-peaks
(:mod:`ecg_lab.data.analytic`) and carries its component envelope for the loss.

A batch is a dict: ``x`` (B, 1, window), ``rpeaks`` (B, window) bool, ``index`` (B,) window index and,
for analytic input, ``envelope`` (B, window).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import scipy.signal
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import Dataset

from ecg_lab.data.analytic import AnalyticSpec, analytic_ecg
from ecg_lab.data.loaders import SplitLoaders
from ecg_lab.data.records import (
    BadRecordError,
    Record,
    SkippedRecord,
    check_on_bad_record,
    write_skipped_csv,
)
from ecg_lab.data.rpeaks import detect_rpeaks
from ecg_lab.data.sources import SourceRecords
from ecg_lab.data.splits import SPLITS

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
INPUTS = ("raw", "analytic")


class Source(Protocol):
    """What :class:`WaveformDataModule` needs of a source (see :mod:`ecg_lab.data.sources`)."""

    def fingerprint(self) -> dict[str, Any]: ...

    def read(self, on_bad_record: str = "raise") -> SourceRecords: ...


@dataclass(frozen=True)
class Cleaning:
    """How each record is cleaned: NeuroKit2's ``ecg_clean`` method, upright polarity, z-score."""

    method: str = "neurokit"
    fix_polarity: bool = True
    zscore: bool = True


@dataclass
class CleanRecords:
    """Cleaned records at ``fs``: ``signals[offsets[i]:offsets[i]+lengths[i]]`` is record i, and
    ``peaks[peak_offsets[i]:peak_offsets[i+1]]`` its R-peak indices."""

    ids: np.ndarray
    sources: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    signals: np.ndarray
    peak_offsets: np.ndarray
    peaks: np.ndarray
    fs: float
    skipped: list[SkippedRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def signal(self, i: int) -> np.ndarray:
        return self.signals[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def rpeaks(self, i: int) -> np.ndarray:
        return self.peaks[self.peak_offsets[i] : self.peak_offsets[i + 1]]


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``fs_in`` to ``fs_out``."""
    if fs_in == fs_out:
        return np.asarray(signal, dtype=np.float64)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return scipy.signal.resample_poly(
        np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator
    )


def clean_record(record: Record, fs: float, cleaning: Cleaning) -> tuple[np.ndarray, np.ndarray]:
    """The record resampled to ``fs``, cleaned (and z-scored), with its R-peak indices."""
    import neurokit2 as nk

    x = resample(record.signal, record.fs, fs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = np.asarray(nk.ecg_clean(x, sampling_rate=int(fs), method=cleaning.method), dtype=np.float64)
        if cleaning.fix_polarity:
            x = np.asarray(nk.ecg_invert(x, sampling_rate=int(fs))[0], dtype=np.float64)
    peaks = detect_rpeaks(x, fs, clean=False)  # x is cleaned already
    if cleaning.zscore:
        sd = float(np.std(x))
        x = (x - float(np.mean(x))) / (sd if sd > 0 else 1.0)
    return x.astype(np.float32), peaks.astype(np.int64)


def read_clean_records(
    sources: Mapping[str, Source], fs: float, cleaning: Cleaning, on_bad_record: str
) -> CleanRecords:
    """Read every source and clean its records."""
    ids, names, labels, splits, signals, peaks, skipped = [], [], [], [], [], [], []
    for name, source in sources.items():
        got = source.read(on_bad_record)
        skipped += got.skipped
        for record, split in zip(got.records, got.splits, strict=True):
            x, p = clean_record(record, fs, cleaning)
            ids.append(record.record_id)
            names.append(name)
            labels.append(record.label)
            splits.append(split)
            signals.append(x)
            peaks.append(p)
        log.info("source %s: %d records (%d skipped)", name, len(got.records), len(got.skipped))
    if not ids:
        raise BadRecordError(
            Path(str(next(iter(sources), "data.sources"))), "no usable records in any source"
        )
    lengths = np.asarray([s.size for s in signals], dtype=np.int64)
    n_peaks = np.asarray([p.size for p in peaks], dtype=np.int64)
    return CleanRecords(
        ids=np.asarray(ids),
        sources=np.asarray(names),
        labels=np.asarray(labels),
        splits=np.asarray(splits),
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths,
        signals=np.concatenate(signals).astype(np.float32),
        peak_offsets=np.concatenate([[0], np.cumsum(n_peaks)]).astype(np.int64),
        peaks=np.concatenate(peaks).astype(np.int64) if peaks else np.zeros(0, np.int64),
        fs=fs,
        skipped=skipped,
    )


ARRAYS = ("ids", "sources", "labels", "splits", "offsets", "lengths", "signals", "peak_offsets", "peaks")


def cached_clean_records(
    sources: Mapping[str, Source],
    fs: float,
    cleaning: Cleaning,
    on_bad_record: str,
    cache_dir: Path | None,
) -> CleanRecords:
    """:func:`read_clean_records` through the on-disk cache (``cache_dir/waveforms/<key>``)."""
    check_on_bad_record(on_bad_record)
    if cache_dir is None:
        return read_clean_records(sources, fs, cleaning, on_bad_record)
    config = {
        "format": CACHE_FORMAT,
        "sources": {k: s.fingerprint() for k, s in sources.items()},
        "fs": fs,
        "cleaning": asdict(cleaning),
        "on_bad_record": on_bad_record,
    }
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:20]
    target = cache_dir / "waveforms" / key
    if (target / "info.json").is_file():
        log.info("cleaned records from cache %s", target)
        return _load(target)
    prepared = read_clean_records(sources, fs, cleaning, on_bad_record)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        np.savez(tmp / "records.npz", **{k: getattr(prepared, k) for k in ARRAYS})
        info = {"config": config, "skipped": [asdict(s) for s in prepared.skipped]}
        (tmp / "info.json").write_text(json.dumps(info, indent=1, default=str))
        os.replace(tmp, target)
    except OSError:
        if not (target / "info.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return prepared


def _load(path: Path) -> CleanRecords:
    arrays = np.load(path / "records.npz", allow_pickle=False)
    info = json.loads((path / "info.json").read_text())
    return CleanRecords(
        **{k: arrays[k] for k in ARRAYS},
        fs=float(info["config"]["fs"]),
        skipped=[SkippedRecord(**s) for s in info["skipped"]],
    )


@dataclass
class Windows:
    """Fixed-length windows and where they came from."""

    x: np.ndarray  # (n, window) float32, the model's input and target
    rpeaks: np.ndarray  # (n, window) bool
    envelope: np.ndarray | None  # (n, window) float32, analytic input only
    record: np.ndarray  # (n,) index into the CleanRecords
    start: np.ndarray  # (n,) first sample of the window in its record

    def __len__(self) -> int:
        return int(self.record.size)

    def subset(self, idx: np.ndarray) -> Windows:
        env = self.envelope[idx] if self.envelope is not None else None
        return Windows(self.x[idx], self.rpeaks[idx], env, self.record[idx], self.start[idx])


def cut_windows(records: CleanRecords, window: int, stride: int, analytic: AnalyticSpec | None) -> Windows:
    """Every ``window``-sample window (step ``stride``) of every record; analytic when ``analytic`` is set."""
    xs, masks, envs, recs, starts = [], [], [], [], []
    for i in range(len(records)):
        n = int(records.lengths[i])
        if n < window:
            continue
        peaks = records.rpeaks(i)
        if analytic is not None:
            signal, env = analytic_ecg(peaks, n, records.fs, analytic)
        else:
            signal, env = records.signal(i), None
        mask = np.zeros(n, dtype=bool)
        mask[peaks[(peaks >= 0) & (peaks < n)]] = True
        s = np.arange(0, n - window + 1, stride)
        idx = s[:, None] + np.arange(window)[None, :]
        xs.append(np.asarray(signal)[idx])
        masks.append(mask[idx])
        if env is not None:
            envs.append(env[idx])
        recs.append(np.full(s.size, i, dtype=np.int64))
        starts.append(s.astype(np.int64))
    if not xs:
        raise ValueError(f"data.window={window} is longer than every record; choose a shorter window")
    return Windows(
        x=np.concatenate(xs).astype(np.float32),
        rpeaks=np.concatenate(masks),
        envelope=np.concatenate(envs).astype(np.float32) if envs else None,
        record=np.concatenate(recs),
        start=np.concatenate(starts),
    )


class WaveformDataset(Dataset):
    """Windows as dict items: ``x`` (1, window), ``rpeaks`` (window,), ``index`` and maybe ``envelope``."""

    def __init__(self, windows: Windows) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        w = self.windows
        item = {
            "x": torch.from_numpy(w.x[i]).unsqueeze(0),
            "rpeaks": torch.from_numpy(w.rpeaks[i]),
            "index": torch.tensor(i),
        }
        if w.envelope is not None:
            item["envelope"] = torch.from_numpy(w.envelope[i])
        return item


class WaveformDataModule(SplitLoaders, pl.LightningDataModule):
    """Windows of single-lead ECGs from one or more sources, each split by its own rule
    (PTB-XL by ``strat_fold``, PhysioNet 2017 by a seeded record-level split)."""

    TASK = "generation"

    def __init__(
        self,
        sources: Mapping[str, Source | None],
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
        run_dir: str | Path | None = None,
        name: str = "waveforms",
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
        self.keep_run_settings(batch_size, num_workers, pin_memory, on_bad_record, cache_dir, run_dir, name)
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
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = self._prepare()
        self.windows = cut_windows(
            records, self.window, self.stride, self.analytic if self.input == "analytic" else None
        )
        split_of_window = records.splits[self.windows.record]
        for part in SPLITS:
            idx = np.flatnonzero(split_of_window == part)
            self.datasets[part] = WaveformDataset(self.windows.subset(idx))
        log.info(
            "data %s (%s input): %s",
            self.name,
            self.input,
            {k: f"{len(v)} windows" for k, v in self.datasets.items()},
        )
        self.write_run_files()

    @rank_zero_only
    def write_run_files(self) -> None:
        """``split.csv`` (source, record, label, split, windows) and ``skipped_records.csv``."""
        if self.run_dir is None or self.records is None or self.windows is None:
            return
        r = self.records
        counts = np.bincount(self.windows.record, minlength=len(r))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "split.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["source", "record", "label", "split", "windows"])
            w.writerows(zip(r.sources, r.ids, r.labels, r.splits, counts.tolist(), strict=True))
        write_skipped_csv(self.run_dir, r.skipped)
