"""Generation data, files → records: each source's records resampled to ``fs``, cleaned with NeuroKit2
(``ecg_clean``), optionally turned upright (``ecg_invert``), their R-peaks found by NeuroKit2, then
z-scored. That is the expensive part, so it goes through the shared on-disk cache
(:mod:`ecg_lab.data.cache`), keyed by the source files (names and content), the selection and the
cleaning settings.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecg_lab.data.cache import cached, check_finite, load_arrays
from ecg_lab.data.records import BadRecordError, Record, SkippedRecord, check_on_bad_record
from ecg_lab.edge.preprocess import resample
from ecg_lab.generation.rpeaks import detect_rpeaks
from ecg_lab.generation.sources import SourceRecords

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


class RecordSource(Protocol):
    """What the generation data needs of a record source (:mod:`ecg_lab.generation.sources`)."""

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
    sources: Mapping[str, RecordSource], fs: float, cleaning: Cleaning, on_bad_record: str
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
    sources: Mapping[str, RecordSource],
    fs: float,
    cleaning: Cleaning,
    on_bad_record: str,
    cache_dir: Path | None,
) -> CleanRecords:
    """:func:`read_clean_records` through the shared on-disk cache (``cache_dir/waveforms/<key>``)."""
    check_on_bad_record(on_bad_record)
    if cache_dir is None:
        return read_clean_records(sources, fs, cleaning, on_bad_record)
    config = {
        "kind": "waveforms",
        "format": CACHE_FORMAT,
        "sources": {k: s.fingerprint() for k, s in sources.items()},
        "fs": fs,
        "cleaning": asdict(cleaning),
        "on_bad_record": on_bad_record,
    }

    def build(folder: Path) -> dict:
        records = read_clean_records(sources, fs, cleaning, on_bad_record)
        np.savez(folder / "records.npz", **{k: getattr(records, k) for k in ARRAYS})
        return {"fs": fs, "skipped": [asdict(s) for s in records.skipped]}

    return cached(cache_dir, "waveforms", config, build, _load)[0]


def _load(path: Path, info: dict) -> CleanRecords:
    """The entry's records; NaN or infinity in its float arrays marks it damaged (it is rebuilt)."""
    loaded = load_arrays(path / "records.npz", ARRAYS)
    for name, values in loaded.items():
        if values.dtype.kind == "f":
            check_finite(f"records.npz[{name}]", values)
    return CleanRecords(**loaded, fs=float(info["fs"]), skipped=[SkippedRecord(**s) for s in info["skipped"]])
