"""Bad input: each problem gives an error naming the file, or with ``skip`` a warning and a list."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ecg_lab.app.outputs import RunOutputs
from ecg_lab.classification.datamodule import ECGWindowDataModule
from ecg_lab.classification.prepared import prepare_records
from ecg_lab.data.physionet2017 import read_records
from ecg_lab.data.records import BadRecordError, DatasetNotFoundError
from ecg_lab.edge.preprocess import Preprocessing
from tests.helpers import write_dataset, write_record

GOOD = {"A00001": "N", "A00002": "A", "A00003": "O", "A00004": "~"}


def test_missing_root_names_the_path_and_the_download_command(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "physionet2017"
    with pytest.raises(DatasetNotFoundError) as err:
        read_records(missing)
    msg = str(err.value)
    assert str(missing) in msg and "python -m ecg_lab.data.download physionet2017 --root" in msg


def test_reference_with_header_line_and_crlf_is_read(tmp_path: Path) -> None:
    ref = "Record,Label\r\n" + "".join(f"{r},{lab}\r\n" for r, lab in GOOD.items())
    root = write_dataset(tmp_path / "d", GOOD, reference=ref)
    records, skipped = read_records(root)
    assert [r.record_id for r in records] == list(GOOD) and [r.label for r in records] == list(GOOD.values())
    assert skipped == [] and records[0].fs == 300 and records[0].signal.dtype == np.float32


def test_records_are_read_from_root_or_root_training2017(tmp_path: Path) -> None:
    write_dataset(tmp_path / "physionet2017" / "training2017", GOOD)
    records, _ = read_records(tmp_path / "physionet2017")
    assert len(records) == 4


def _missing_files(root: Path) -> str:
    (root / "A00002.mat").unlink()
    return "A00002.mat"


def _truncated_mat(root: Path) -> str:
    data = (root / "A00002.mat").read_bytes()
    (root / "A00002.mat").write_bytes(data[: len(data) // 2])
    return "A00002.mat"


def _corrupt_mat(root: Path) -> str:
    (root / "A00002.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
    return "A00002.mat"


def _fs_mismatch(root: Path) -> str:
    hea = root / "A00002.hea"
    hea.write_text(hea.read_text().replace(" 300 ", " 250 ", 1))
    return "A00002.hea"


def _length_mismatch(root: Path) -> str:
    write_record(root, "A00002", np.ones(4500, dtype=np.int16), n_header=9000)
    return "A00002.hea"


def _unknown_label(root: Path) -> str:
    (root / "REFERENCE.csv").write_text((root / "REFERENCE.csv").read_text().replace("A00002,A", "A00002,X"))
    return "REFERENCE.csv"


def _nan_signal(root: Path) -> str:
    sig = np.random.default_rng(0).normal(size=4500)
    sig[100] = np.nan
    scipy.io.savemat(root / "A00002.mat", {"val": sig[None, :]}, format="4")
    return "A00002.mat"


def _flat_signal(root: Path) -> str:
    write_record(root, "A00002", np.full(4500, 7, dtype=np.int16))
    return "A00002.mat"


def _too_short(root: Path) -> str:
    write_record(root, "A00002", np.arange(1000, dtype=np.int16))
    return "A00002.mat"


CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing files": (_missing_files, "file is missing"),
    "truncated mat": (_truncated_mat, "unreadable or truncated"),
    "corrupt mat": (_corrupt_mat, "unreadable or truncated"),
    "fs mismatch": (_fs_mismatch, "fs=250"),
    "length mismatch": (_length_mismatch, "header says 9000 samples"),
    "unknown label": (_unknown_label, "unknown label 'X'"),
    "nan": (_nan_signal, "NaN"),
    "flat": (_flat_signal, "flat"),
    "shorter than a window": (_too_short, "shorter than one window"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_record_raises_naming_file_and_problem(case: str, tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", GOOD)
    spoil, problem = CASES[case]
    filename = spoil(root)
    with pytest.raises(BadRecordError) as err:
        prepare_records(root, Preprocessing(), tmp_path / "cache")
    assert filename in str(err.value) and problem in str(err.value)
    assert not (tmp_path / "cache" / "prepared").exists() or not any(
        (tmp_path / "cache" / "prepared").iterdir()
    )


@pytest.mark.parametrize("case", list(CASES))
def test_bad_record_skipped_with_warning_and_listed(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_dataset(tmp_path / "d", GOOD | {f"A0001{i}": "NAO~"[i % 4] for i in range(8)})
    spoil, problem = CASES[case]
    filename = spoil(root)
    dm = ECGWindowDataModule(root, on_bad_record="skip", cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        dm.setup()
    RunOutputs(tmp_path / "run").data_files(dm)
    assert "A00002" not in dm.record_ids() and len(dm.record_ids()) == 11
    assert any(filename in r.getMessage() for r in caplog.records)
    rows = list(csv.DictReader((tmp_path / "run" / "skipped_records.csv").open()))
    assert [r["record"] for r in rows] == ["A00002"] and problem in rows[0]["problem"]


def test_bad_on_bad_record_value_names_the_key(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", GOOD)
    with pytest.raises(ValueError, match="data.on_bad_record"):
        prepare_records(root, Preprocessing(), None, on_bad_record="ignore")
