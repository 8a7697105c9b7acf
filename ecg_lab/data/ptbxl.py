"""Reader for the PTB-XL layout: ``ptbxl_database.csv`` + ``scp_statements.csv`` + WFDB records.

Each row of ``ptbxl_database.csv`` is one 10 s, 12-lead recording with its SCP-ECG statements
(``scp_codes``, a Python dict string ``{code: likelihood}``), its stratified fold (1-10) and the
paths of its 100 Hz (``filename_lr``) and 500 Hz (``filename_hr``) WFDB records. The reader picks one
lead and returns it as a single-lead :class:`~ecg_lab.data.records.Record` in mV.
"""

from __future__ import annotations

import ast
import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from ecg_lab.data.records import (
    BadRecordError,
    DatasetNotFoundError,
    Record,
    SkippedRecord,
    check_on_bad_record,
    check_signal,
    skip_or_raise,
)

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
DATABASE = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"
FILENAME_COLUMN = {100: "filename_lr", 500: "filename_hr"}
LEADS: tuple[str, ...] = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
DOWNLOAD_HINT = (
    "Download PTB-XL v1.0.1 from https://physionet.org/content/ptb-xl/1.0.1/ and point `data.root` "
    "at the folder holding ptbxl_database.csv, or copy it to <data_dir>/ptbxl."
)


def find_root(root: Path | str) -> Path:
    """Return ``root`` (absolute) when it holds ``ptbxl_database.csv``; else raise DatasetNotFoundError."""
    root = Path(root).absolute()
    if (root / DATABASE).is_file():
        return root
    raise DatasetNotFoundError(root, f"Looked for {DATABASE} in {root}. " + DOWNLOAD_HINT)


def _read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BadRecordError(path, f"unreadable CSV file ({type(err).__name__}: {err})") from err


def _parse_row(path: Path, lineno: int, raw: dict[str, str]) -> dict[str, Any]:
    """One database row with ``ecg_id``/``patient_id``/``strat_fold`` as int and ``scp_codes`` as dict."""
    row: dict[str, Any] = dict(raw)
    try:
        row["ecg_id"] = int(float(raw["ecg_id"]))
    except (KeyError, TypeError, ValueError) as err:
        raise BadRecordError(path, f"line {lineno}: bad or missing ecg_id {raw.get('ecg_id')!r}") from err
    rid = str(row["ecg_id"])
    try:
        codes = ast.literal_eval(raw.get("scp_codes") or "")
        if not isinstance(codes, dict):
            raise ValueError("not a dict")
        row["scp_codes"] = {str(k): float(v) for k, v in codes.items()}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise BadRecordError(
            path, f"ecg_id {rid}: scp_codes {raw.get('scp_codes')!r} is not a {{code: likelihood}} dict", rid
        ) from err
    try:
        row["strat_fold"] = int(float(raw["strat_fold"]))
    except (KeyError, TypeError, ValueError) as err:
        raise BadRecordError(path, f"ecg_id {rid}: bad strat_fold {raw.get('strat_fold')!r}", rid) from err
    patient = raw.get("patient_id") or ""
    row["patient_id"] = int(float(patient)) if patient.replace(".", "", 1).isdigit() else None
    return row


def read_database(root: Path | str) -> list[dict[str, Any]]:
    """Rows of ``ptbxl_database.csv`` in file order, with parsed ``scp_codes`` and int ``strat_fold``."""
    path = find_root(root) / DATABASE
    rows = [_parse_row(path, i, raw) for i, raw in enumerate(_read_csv(path), start=2)]
    if not rows:
        raise BadRecordError(path, "holds no records")
    return rows


def read_statements(root: Path | str) -> dict[str, str | None]:
    """Map each SCP statement code to its diagnostic class (None unless ``diagnostic`` is 1)."""
    path = find_root(root) / STATEMENTS
    if not path.is_file():
        raise DatasetNotFoundError(path.parent, f"{STATEMENTS} is missing. " + DOWNLOAD_HINT)
    out: dict[str, str | None] = {}
    for raw in _read_csv(path):
        code = (raw.get("") or next(iter(raw.values()), "") or "").strip()
        if not code:
            continue
        try:
            diagnostic = float(raw.get("diagnostic") or 0) == 1.0
        except ValueError:
            diagnostic = False
        cls = (raw.get("diagnostic_class") or "").strip()
        out[code] = cls if diagnostic and cls else None
    return out


def superclasses(scp_codes: dict[str, float], statements: dict[str, str | None]) -> list[str]:
    """The diagnostic superclasses of a record (any likelihood), in SUPERCLASSES order.

    Follows the aggregation of helme/ecg_ptbxl_benchmarking; codes without a diagnostic class are ignored.
    """
    found = {statements.get(code) for code in scp_codes} - {None}
    order = {c: i for i, c in enumerate(SUPERCLASSES)}
    return sorted(found, key=lambda c: (order.get(c, len(order)), c))  # type: ignore[arg-type]


def select(
    rows: Iterable[dict[str, Any]], statement: str = "NORM", min_likelihood: float = 100.0
) -> list[dict[str, Any]]:
    """The rows carrying ``statement`` with a likelihood of at least ``min_likelihood``."""
    return [r for r in rows if statement in r["scp_codes"] and r["scp_codes"][statement] >= min_likelihood]


def fold_split(
    rows: Iterable[dict[str, Any]],
    train_folds: Iterable[int] = range(1, 9),
    val_folds: Iterable[int] = (9,),
    test_folds: Iterable[int] = (10,),
) -> dict[str, list[dict[str, Any]]]:
    """Split rows by ``strat_fold`` into train/val/test; rows in none of the folds are left out."""
    folds = {"train": set(train_folds), "val": set(val_folds), "test": set(test_folds)}
    names = list(folds)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = folds[a] & folds[b]
            if common:
                raise ValueError(
                    f"data.{a}_folds and data.{b}_folds must be disjoint; both hold {sorted(common)}"
                )
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for row in rows:
        for name in names:
            if row["strat_fold"] in folds[name]:
                out[name].append(row)
    return out


def read_record(
    root: Path | str, row: dict[str, Any], lead: str = "II", sampling_rate: int = 100, label: str = ""
) -> Record:
    """Read one lead of the row's WFDB record (``filename_lr`` at 100 Hz, ``filename_hr`` at 500 Hz) in mV.

    A lead name outside :data:`LEADS` or an unknown ``sampling_rate`` is a configuration error
    (ValueError); a record that is missing, unreadable, lacks the lead or fails a check raises
    BadRecordError naming the file.
    """
    root = Path(root).absolute()
    rid = str(row.get("ecg_id", ""))
    if lead.upper() not in LEADS:
        raise ValueError(f"data.lead must be one of the PTB-XL leads {list(LEADS)}, got {lead!r}")
    if sampling_rate not in FILENAME_COLUMN:
        raise ValueError(
            f"data.sampling_rate must be one of {sorted(FILENAME_COLUMN)}, got {sampling_rate!r}"
        )
    column = FILENAME_COLUMN[sampling_rate]
    name = row.get(column) or ""
    if not name:
        raise BadRecordError(root / DATABASE, f"ecg_id {rid}: no {column}", rid)
    base = root / name
    for p in (base.with_name(base.name + ".hea"), base.with_name(base.name + ".dat")):
        if not p.is_file():
            raise BadRecordError(p, f"listed in {DATABASE} but the file is missing", rid)
    dat = base.with_name(base.name + ".dat")
    try:
        rec = wfdb.rdrecord(str(base))
    except Exception as err:  # noqa: BLE001 - wfdb raises many types for corrupt files
        raise BadRecordError(dat, f"unreadable WFDB record ({type(err).__name__}: {err})", rid) from err
    leads = [str(s) for s in (rec.sig_name or [])]
    matches = [i for i, s in enumerate(leads) if s.upper() == lead.upper()]
    if not matches:
        raise BadRecordError(dat, f"no lead {lead!r}; available leads: {leads}", rid)
    i = matches[0]
    if rec.fs is None or float(rec.fs) != float(sampling_rate):
        raise BadRecordError(dat, f"header says fs={rec.fs} Hz but sampling_rate is {sampling_rate} Hz", rid)
    if rec.p_signal is None or rec.p_signal.shape[0] == 0:
        raise BadRecordError(dat, "record holds no samples", rid)
    signal = np.asarray(rec.p_signal[:, i], dtype=np.float64)
    units = (rec.units or ["mV"] * len(leads))[i]
    if units.lower() in {"uv", "µv"}:
        signal = signal / 1000.0
    elif units.lower() != "mv":
        raise BadRecordError(dat, f"lead {leads[i]} is in {units!r}, expected mV", rid)
    check_signal(signal, dat, rid)
    return Record(
        record_id=rid, signal=signal.astype(np.float32), fs=float(rec.fs), label=label, path=str(dat)
    )


def read_records(
    root: Path | str,
    rows: Sequence[dict[str, Any]],
    lead: str = "II",
    sampling_rate: int = 100,
    on_bad_record: str = "raise",
) -> tuple[list[Record], list[SkippedRecord]]:
    """Read ``lead`` of every row; bad records raise or, with ``skip``, are listed.

    Each record's label is its diagnostic superclasses joined with ``+`` (empty when it has none).
    """
    check_on_bad_record(on_bad_record)
    root = find_root(root)
    statements = read_statements(root)
    records: list[Record] = []
    skipped: list[SkippedRecord] = []
    for row in rows:
        label = "+".join(superclasses(row["scp_codes"], statements))
        try:
            records.append(read_record(root, row, lead, sampling_rate, label))
        except BadRecordError as err:
            skip_or_raise(err, on_bad_record, skipped)
    return records, skipped
