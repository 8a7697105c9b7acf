"""The PTB-XL reader, on the shared 500-record subset and on small broken copies of it."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecg_lab.data.ptbxl import (
    LEADS,
    SUPERCLASSES,
    find_root,
    fold_split,
    read_database,
    read_record,
    read_records,
    read_statements,
    select,
    superclasses,
)
from ecg_lab.data.records import BadRecordError, DatasetNotFoundError
from tests.conftest import REPO

SHARED_PTBXL = REPO.parent / "shared" / "data" / "ptbxl"
needs_ptbxl = pytest.mark.skipif(
    not (SHARED_PTBXL / "ptbxl_database.csv").is_file(), reason=f"PTB-XL subset not found at {SHARED_PTBXL}"
)


def copy_subset(dest: Path, n: int = 4) -> Path:
    """Copy the first ``n`` database rows, their 100 Hz files and scp_statements.csv into ``dest``."""
    with (SHARED_PTBXL / "ptbxl_database.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [row for _, row in zip(range(n), reader, strict=False)]
    for row in rows:
        for ext in (".hea", ".dat"):
            src = SHARED_PTBXL / (row["filename_lr"] + ext)
            (dest / src.relative_to(SHARED_PTBXL)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / src.relative_to(SHARED_PTBXL))
    write_database(dest, fields, rows)
    shutil.copy(SHARED_PTBXL / "scp_statements.csv", dest / "scp_statements.csv")
    return dest


def write_database(root: Path, fields: list[str] | None, rows: list[dict[str, str]]) -> None:
    with (root / "ptbxl_database.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def raw_rows(root: Path) -> tuple[list[str] | None, list[dict[str, str]]]:
    with (root / "ptbxl_database.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return read_database(SHARED_PTBXL)


@needs_ptbxl
def test_database_rows_are_parsed(rows: list[dict]) -> None:
    assert len(rows) == 500 and rows[0]["ecg_id"] == 1 and rows[0]["strat_fold"] == 3
    assert rows[0]["scp_codes"] == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert {r["strat_fold"] for r in rows} <= set(range(1, 11))


@needs_ptbxl
def test_select_norm_by_likelihood(rows: list[dict]) -> None:
    assert len(select(rows, "NORM", min_likelihood=0.0)) == 297
    assert len(select(rows)) == 245
    assert all(r["scp_codes"]["NORM"] >= 100.0 for r in select(rows))


@needs_ptbxl
def test_superclasses_of_known_records(rows: list[dict]) -> None:
    statements = read_statements(SHARED_PTBXL)
    assert statements["NORM"] == "NORM" and statements["IMI"] == "MI" and statements["SR"] is None
    by_id = {r["ecg_id"]: r for r in rows}
    assert superclasses(by_id[1]["scp_codes"], statements) == ["NORM"]
    # ecg_id 39: IMI at 15 % still counts (any likelihood), in SUPERCLASSES order
    assert superclasses(by_id[39]["scp_codes"], statements) == ["MI", "STTC"]
    assert superclasses({"SR": 0.0, "UNKNOWN": 100.0}, statements) == []
    assert superclasses({"HYP_X": 1.0, "LVH": 1.0, "IMI": 1.0}, statements) == ["MI", "HYP"]
    assert SUPERCLASSES == ("NORM", "MI", "STTC", "CD", "HYP")


@needs_ptbxl
def test_fold_split_is_disjoint_and_complete(rows: list[dict]) -> None:
    split = fold_split(rows)
    assert sum(len(v) for v in split.values()) == len(rows)
    ids = {name: {r["ecg_id"] for r in part} for name, part in split.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert {r["strat_fold"] for r in split["test"]} == {10} and {r["strat_fold"] for r in split["val"]} == {9}
    partial = fold_split(rows, train_folds=[1], val_folds=[2], test_folds=[3])
    assert sum(len(v) for v in partial.values()) == sum(r["strat_fold"] in (1, 2, 3) for r in rows)


def test_fold_split_rejects_overlapping_folds() -> None:
    with pytest.raises(ValueError, match=r"data\.train_folds and data\.val_folds .*\[8\]"):
        fold_split([], train_folds=range(1, 9), val_folds=(8, 9))
    with pytest.raises(ValueError, match=r"data\.val_folds and data\.test_folds"):
        fold_split([], val_folds=(9, 10))


@needs_ptbxl
def test_read_record_lead_ii(rows: list[dict]) -> None:
    rec = read_record(SHARED_PTBXL, rows[0], lead="II", sampling_rate=100)
    assert rec.signal.shape == (1000,) and rec.signal.dtype == np.float32 and rec.fs == 100.0
    assert 0.1 < np.abs(rec.signal).max() < 10.0 and rec.record_id == "1"
    assert rec.path.endswith("00001_lr.dat")
    lead_i = read_record(SHARED_PTBXL, rows[0], lead="i")
    assert not np.array_equal(lead_i.signal, rec.signal)


@needs_ptbxl
def test_read_records_labels_with_superclasses(rows: list[dict]) -> None:
    records, skipped = read_records(SHARED_PTBXL, rows[:40], "II", 100)
    assert skipped == [] and len(records) == 40
    assert records[0].label == "NORM" and records[38].label == "MI+STTC"


@needs_ptbxl
def test_unknown_lead_lists_the_leads(rows: list[dict]) -> None:
    with pytest.raises(ValueError, match="data.lead") as err:
        read_record(SHARED_PTBXL, rows[0], lead="V7")
    assert all(lead in str(err.value) for lead in LEADS)
    with pytest.raises(ValueError, match="data.sampling_rate"):
        read_record(SHARED_PTBXL, rows[0], sampling_rate=250)


@needs_ptbxl
def test_record_without_the_lead_names_file_and_leads(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "ptbxl", 1)
    hea = root / "records100/00000/00001_lr.hea"
    hea.write_text(hea.read_text().replace(" 0 II\n", " 0 X\n"))
    with pytest.raises(BadRecordError) as err:
        read_record(root, read_database(root)[0], lead="II")
    assert str(root / "records100/00000/00001_lr.dat") in str(err.value) and "'X'" in str(err.value)


@needs_ptbxl
def test_wrong_sampling_rate_in_header(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "ptbxl", 1)
    hea = root / "records100/00000/00001_lr.hea"
    hea.write_text(hea.read_text().replace("00001_lr 12 100 1000", "00001_lr 12 500 1000"))
    with pytest.raises(BadRecordError, match="fs=500"):
        read_record(root, read_database(root)[0])


@needs_ptbxl
def test_missing_dat_names_the_file(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "ptbxl")
    missing = root / "records100/00000/00002_lr.dat"
    missing.unlink()
    with pytest.raises(BadRecordError) as err:
        read_records(root, read_database(root))
    assert str(missing) in str(err.value) and err.value.record_id == "2"


@needs_ptbxl
def test_corrupt_scp_codes_names_the_ecg_id(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "ptbxl")
    fields, raw = raw_rows(root)
    raw[2]["scp_codes"] = "{'NORM': 100.0, 'SR'"
    write_database(root, fields, raw)
    with pytest.raises(BadRecordError, match="ecg_id 3") as err:
        read_database(root)
    assert str(root / "ptbxl_database.csv") in str(err.value)


def test_missing_root_names_the_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        read_database("nowhere/ptbxl")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "ptbxl") in msg
    assert "https://physionet.org/content/ptb-xl/1.0.1/" in msg and "<data_dir>/ptbxl" in msg
    with pytest.raises(DatasetNotFoundError):
        find_root(tmp_path)


@needs_ptbxl
def test_skip_returns_the_good_records_and_lists_the_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = copy_subset(tmp_path / "ptbxl")
    (root / "records100/00000/00003_lr.dat").write_bytes(b"\x00\x00" * 12 * 1000)  # flat: all zeros
    with pytest.raises(BadRecordError, match="flat"):
        read_records(root, read_database(root))
    with caplog.at_level(logging.WARNING):
        records, skipped = read_records(root, read_database(root), on_bad_record="skip")
    assert [r.record_id for r in records] == ["1", "2", "4"]
    assert [(s.record_id, Path(s.path).name) for s in skipped] == [("3", "00003_lr.dat")]
    assert "skipping" in caplog.text
    with pytest.raises(ValueError, match="data.on_bad_record"):
        read_records(root, [], on_bad_record="ignore")
