"""Records preprocessed once and cached on disk: one float32 array of all signals plus an index.

Through the shared cache (:mod:`ecg_lab.data.cache`), keyed by the record files (names and content),
the REFERENCE.csv content and the preprocessing config, so a change to any of them prepares afresh.
The signals file is memory-mapped on load: windows are cut lazily; an entry whose index does not fit
its signals, or whose signals hold NaN or infinity, is treated as damaged and prepared again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ecg_lab.data.cache import CorruptEntryError, cached, check_finite, files_digest, load_arrays
from ecg_lab.data.physionet2017 import CLASSES, iter_reference, read_record
from ecg_lab.data.records import BadRecordError, SkippedRecord, check_on_bad_record, skip_or_raise
from ecg_lab.edge.preprocess import Preprocessing

log = logging.getLogger(__name__)
CACHE_FORMAT = 2
SIGNALS_FILE = "signals.f32"  # raw little-endian float32, memory-mapped on load


@dataclass
class PreparedRecords:
    """Preprocessed records: ``signals[offsets[i]:offsets[i]+lengths[i]]`` is record ``ids[i]``."""

    ids: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    signals: np.ndarray
    classes: tuple[str, ...]
    fs: float
    skipped: list[SkippedRecord] = field(default_factory=list)
    cache_path: Path | None = None
    listed: list[tuple[str, str]] = field(default_factory=list)  # every REFERENCE.csv row, read or skipped

    def __len__(self) -> int:
        return len(self.ids)

    def signal(self, i: int) -> np.ndarray:
        """The preprocessed signal of record ``i``."""
        return self.signals[self.offsets[i] : self.offsets[i] + self.lengths[i]]


def cache_key(record_dir: Path, rows: Sequence[tuple[str, str]], extra: dict) -> dict:
    """What an entry is made from: the record files' names and content, REFERENCE.csv and ``extra``
    (the config)."""
    paths = [record_dir / f"{record_id}{ext}" for record_id, _ in rows for ext in (".mat", ".hea")]
    return {
        "kind": "prepared",
        "format": CACHE_FORMAT,
        **extra,
        "reference": hashlib.sha256((record_dir / "REFERENCE.csv").read_bytes()).hexdigest(),
        "files": files_digest(paths),
    }


def _check_index(index: dict[str, np.ndarray], n_samples: int, n_classes: int) -> None:
    """Raise CorruptEntryError unless the index describes ``n_samples`` signal samples (vectorised)."""
    lengths, offsets, labels = index["lengths"], index["offsets"], index["labels"]
    n = len(index["ids"])
    fits = (
        len(lengths) == len(offsets) == len(labels) == n > 0
        and int(lengths.sum()) == n_samples
        and np.array_equal(offsets[1:], np.cumsum(lengths)[:-1])
        and offsets[0] == 0
        and labels.min() >= 0
        and labels.max() < n_classes
    )
    if not fits:
        raise CorruptEntryError(f"index.npz does not describe the {n_samples} samples of {SIGNALS_FILE}")


def _load(path: Path, info: dict) -> PreparedRecords:
    index = load_arrays(path / "index.npz", ("ids", "labels", "offsets", "lengths"))
    n, classes = int(info["n_samples"]), tuple(info["classes"])
    _check_index(index, n, len(classes))
    signals = np.memmap(path / SIGNALS_FILE, dtype="<f4", mode="r", shape=(n,))
    check_finite(SIGNALS_FILE, signals)
    return PreparedRecords(
        **index,
        signals=signals,
        classes=classes,
        fs=info["fs"],
        skipped=[SkippedRecord(**s) for s in info["skipped"]],
        cache_path=path,
    )


def _read_and_preprocess(
    record_dir: Path,
    rows: Sequence[tuple[str, str]],
    preprocess: Preprocessing,
    fs: float,
    classes: tuple[str, ...],
    on_bad_record: str,
    write: Callable[[np.ndarray], object],
) -> tuple[list[str], list[int], list[int], list[SkippedRecord]]:
    """Each usable record's preprocessed signal goes to ``write``, in order; returns the index."""
    class_index = {c: i for i, c in enumerate(classes)}
    ids, labels, lengths, skipped = [], [], [], []
    for record_id, label in rows:
        try:
            signal = preprocess.apply(read_record(record_dir, record_id, label, fs, classes))
        except BadRecordError as err:
            skip_or_raise(err, on_bad_record, skipped)
            continue
        write(signal)
        ids.append(record_id)
        labels.append(class_index[label])
        lengths.append(signal.size)
    if not ids:
        raise BadRecordError(record_dir / "REFERENCE.csv", "no usable records (all were skipped)")
    return ids, labels, lengths, skipped


def _index(ids: list[str], labels: list[int], lengths: list[int]) -> dict[str, np.ndarray]:
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64)
    return {
        "ids": np.asarray(ids),
        "labels": np.asarray(labels, dtype=np.int64),
        "offsets": offsets,
        "lengths": lengths_arr,
    }


def prepare_records(
    root: Path | str,
    preprocess: Preprocessing,
    cache_dir: Path | str | None,
    fs: float = 300.0,
    classes: Sequence[str] = CLASSES,
    on_bad_record: str = "raise",
) -> PreparedRecords:
    """Read, check and preprocess every record under ``root``, through the on-disk cache.

    With a cache, signals stream straight into the cache entry's file (no concatenated copy in
    memory) inside a temporary folder that is renamed into place when complete.
    """
    check_on_bad_record(on_bad_record)
    record_dir, rows = iter_reference(root)
    classes = tuple(classes)
    args = (record_dir, rows, preprocess, fs, classes, on_bad_record)
    if cache_dir is None:
        chunks: list[np.ndarray] = []
        ids, labels, lengths, skipped = _read_and_preprocess(*args, write=chunks.append)
        return PreparedRecords(
            **_index(ids, labels, lengths),
            signals=np.concatenate(chunks),
            classes=classes,
            fs=fs,
            skipped=skipped,
            listed=rows,
        )

    config = {
        "preprocess": preprocess.as_dict(),
        "fs": fs,
        "classes": classes,
        "on_bad_record": on_bad_record,
    }

    def build(folder: Path) -> dict:
        with (folder / SIGNALS_FILE).open("wb") as f:
            ids, labels, lengths, skipped = _read_and_preprocess(
                *args, write=lambda a: a.astype("<f4").tofile(f)
            )
        np.savez(folder / "index.npz", **_index(ids, labels, lengths))
        return {
            "classes": list(classes),
            "fs": fs,
            "n_samples": int(sum(lengths)),
            "skipped": [asdict(s) for s in skipped],
        }

    prepared, _ = cached(cache_dir, "prepared", cache_key(record_dir, rows, config), build, _load)
    prepared.listed = rows
    return prepared
