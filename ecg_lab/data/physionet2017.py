"""Reader for the PhysioNet/CinC Challenge 2017 layout: ``REFERENCE.csv`` + ``AXXXXX.{mat,hea}``.

Signals are MATLAB v4 files holding ``val`` (int16 counts); the WFDB header gives the sampling
rate, the sample count, the gain (counts per mV) and the baseline.
"""

from __future__ import annotations

import codecs
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from ecg_lab.data.records import (
    BadRecordError,
    DatasetNotFoundError,
    Record,
    SkippedRecord,
    check_on_bad_record,
    skip_or_raise,
)

log = logging.getLogger(__name__)
CLASSES: tuple[str, ...] = ("N", "A", "O", "~")
SOURCE = "physionet2017"  # the source name in split manifests
DOWNLOAD_HINT = (
    "Download it with `python -m ecg_lab.data.download physionet2017 --root {root}` "
    "or point `data.root` (or the ECG_LAB_DATA environment variable) at a folder in the official layout."
)


@dataclass(frozen=True)
class Header:
    """The fields of a single-signal WFDB header that the reader checks."""

    fs: float
    n_samples: int
    gain: float
    baseline: int


def find_record_dir(root: Path | str) -> Path:
    """Return the folder holding ``REFERENCE.csv``: ``root`` itself or ``root/training2017``."""
    root = Path(root).absolute()
    for candidate in (root, root / "training2017"):
        if (candidate / "REFERENCE.csv").is_file():
            return candidate
    raise DatasetNotFoundError(
        root,
        f"Looked for REFERENCE.csv in {root} and {root / 'training2017'}. " + DOWNLOAD_HINT.format(root=root),
    )


def decode_reference(path: Path, data: bytes) -> str:
    """The text of ``REFERENCE.csv``: UTF-8 (a byte-order mark is dropped) or UTF-16 with its BOM
    (as Excel and Notepad save it); anything else is refused with what to do."""
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise BadRecordError(path, f"is neither UTF-8 nor UTF-16 text ({err}); save it as UTF-8") from None
    if "\x00" in text:
        raise BadRecordError(
            path, "holds NUL characters (UTF-16 or UTF-32 without a byte-order mark?); save it as UTF-8"
        )
    return text


def check_record_id(path: Path, lineno: int, line: str, record_id: str) -> None:
    """Raise BadRecordError unless ``record_id`` is a plain file name (no folder, drive or absolute path),
    so every record is read from inside the folder of ``REFERENCE.csv`` and covered by the cache key."""
    if record_id in {"", ".", ".."} or any(c in record_id for c in "/\\:") or not record_id.isprintable():
        raise BadRecordError(
            path,
            f"line {lineno} {line!r}: record id {record_id!r} is not a plain name; record ids must be "
            f"plain names of files inside {path.parent} (no folders, no absolute paths)",
        )


def _warn_repeats(path: Path, repeats: dict[str, list[int]], shown: int = 5) -> None:
    """One warning line for every record listed more than once with the same label."""
    listed = [f"{r} (lines {', '.join(map(str, lines))})" for r, lines in list(repeats.items())[:shown]]
    more = f" and {len(repeats) - shown} more" if len(repeats) > shown else ""
    log.warning(
        "%s: %d record(s) listed more than once with the same label, each counted once: %s%s",
        path,
        len(repeats),
        "; ".join(listed),
        more,
    )


def read_reference(path: Path) -> list[tuple[str, str]]:
    """Read ``REFERENCE.csv`` rows ``(record_id, label)``, one per record.

    A header line, CRLF endings and UTF-8 or UTF-16 byte-order marks are accepted. A record listed
    again with the same label is counted once (one warning for the file); with another label, or a
    record id that is not a plain name inside the folder, the file is refused.
    """
    rows: dict[str, str] = {}
    first: dict[str, tuple[int, str]] = {}  # record → (line number, line) where it was first listed
    repeats: dict[str, list[int]] = {}
    for lineno, raw in enumerate(decode_reference(path, path.read_bytes()).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            raise BadRecordError(path, f"line {lineno} {line!r} is not 'record,label'")
        if lineno == 1 and parts[0].lower() in {"record", "recording", "name", "id"}:
            continue  # header line
        record_id, label = parts[0], parts[1]
        check_record_id(path, lineno, line, record_id)
        if record_id not in rows:
            rows[record_id], first[record_id] = label, (lineno, line)
            continue
        first_lineno, first_line = first[record_id]
        if label != rows[record_id]:
            raise BadRecordError(
                path,
                f"record {record_id} has two labels: line {first_lineno} {first_line!r} and line {lineno} "
                f"{line!r}; keep the right row and delete the other",
            )
        repeats.setdefault(record_id, [first_lineno]).append(lineno)
    if not rows:
        raise BadRecordError(path, "holds no records")
    if repeats:
        _warn_repeats(path, repeats)
    return list(rows.items())


def read_header(path: Path) -> Header:
    """Parse the record line and the first signal line of a WFDB ``.hea`` file.

    Not ``wfdb.rdheader``: it parses field by field through pandas (about 370 µs a header against
    14 µs here), which took cold preparation from 1.03x to 2.06x the plain loop of
    ``bench/preprocess.py`` (target 1.5x). ``wfdb.rdrecord`` reads the signal 7x slower than
    ``scipy.io.loadmat`` and would read a float ``.mat`` as 16-bit counts. PTB-XL is read with wfdb.
    """
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        record_line, signal_line = lines[0].split(), lines[1].split()
        fs = float(record_line[2].split("/")[0])
        n_samples = int(record_line[3])
        gain_field = signal_line[2].split("/")[0] if len(signal_line) > 2 else "200"
        gain = float(gain_field.split("(")[0]) or 200.0
        baseline = int(gain_field.split("(")[1].rstrip(")")) if "(" in gain_field else 0
        if len(signal_line) > 4 and "(" not in gain_field:
            baseline = int(signal_line[4])  # ADC zero; PhysioNet 2017 headers use 0
    except (IndexError, ValueError) as err:
        raise BadRecordError(path, f"unreadable WFDB header ({err})") from err
    return Header(fs=fs, n_samples=n_samples, gain=gain, baseline=baseline)


def read_record(record_dir: Path, record_id: str, label: str, fs: float, classes: Sequence[str]) -> Record:
    """Read one record, check it against its header and the dataset's expectations, return it in mV."""
    mat_path, hea_path = record_dir / f"{record_id}.mat", record_dir / f"{record_id}.hea"
    if label not in classes:
        raise BadRecordError(
            record_dir / "REFERENCE.csv",
            f"record {record_id} has unknown label {label!r}; known: {list(classes)}",
            record_id,
        )
    for p in (mat_path, hea_path):
        if not p.is_file():
            raise BadRecordError(p, "listed in REFERENCE.csv but the file is missing", record_id)
    header = read_header(hea_path)
    if header.fs != fs:
        raise BadRecordError(
            hea_path, f"header says fs={header.fs:g} Hz but the dataset is {fs:g} Hz", record_id
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # scipy warns, rather than fails, on some truncations
            content = scipy.io.loadmat(mat_path)
        counts = np.asarray(content["val"]).ravel()
    except KeyError as err:
        raise BadRecordError(mat_path, "MATLAB file has no variable 'val'", record_id) from err
    except Exception as err:  # noqa: BLE001 - scipy raises many types for corrupt files
        raise BadRecordError(
            mat_path, f"unreadable or truncated MATLAB file ({type(err).__name__}: {err})", record_id
        ) from err
    if counts.size != header.n_samples:
        raise BadRecordError(
            hea_path,
            f"header says {header.n_samples} samples but {mat_path.name} holds {counts.size}",
            record_id,
        )
    signal = ((counts.astype(np.float32) - header.baseline) / header.gain).astype(np.float32)
    return Record(record_id=record_id, signal=signal, fs=header.fs, label=label, path=str(mat_path))


def iter_reference(root: Path | str) -> tuple[Path, list[tuple[str, str]]]:
    """Locate the record folder under ``root`` and return it with its REFERENCE rows."""
    record_dir = find_record_dir(root)
    return record_dir, read_reference(record_dir / "REFERENCE.csv")


def read_records(
    root: Path | str,
    fs: float = 300.0,
    classes: Sequence[str] = CLASSES,
    on_bad_record: str = "raise",
) -> tuple[list[Record], list[SkippedRecord]]:
    """Read every record listed in REFERENCE.csv; bad ones raise or, with ``skip``, are listed."""
    check_on_bad_record(on_bad_record)
    record_dir, rows = iter_reference(root)
    records: list[Record] = []
    skipped: list[SkippedRecord] = []
    for record_id, label in rows:
        try:
            records.append(read_record(record_dir, record_id, label, fs, classes))
        except BadRecordError as err:
            skip_or_raise(err, on_bad_record, skipped)
    return records, skipped


def link_subset(root: Path | str, dest: Path | str, n: int | None) -> Path:
    """A folder of symbolic links to the first ``n`` records of ``root`` with their REFERENCE rows.

    Returns ``dest`` (or ``root``'s record folder when ``n`` covers every record): a cheap way
    to run anything on part of a dataset without copying it.
    """
    record_dir, rows = iter_reference(root)
    if n is None or n >= len(rows):
        return record_dir
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    for record_id, _ in rows[:n]:
        for ext in (".mat", ".hea"):
            (dest / f"{record_id}{ext}").symlink_to((record_dir / f"{record_id}{ext}").resolve())
    (dest / "REFERENCE.csv").write_text("".join(f"{r},{lab}\n" for r, lab in rows[:n]))
    return dest
