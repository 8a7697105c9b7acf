"""Tests for ``ecg_lab.data.synthetic``: file layout, caching, determinism and class properties."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections import Counter
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest
import scipy.io
import scipy.signal

from ecg_lab.data import synthetic
from ecg_lab.data.physionet2017 import read_records
from ecg_lab.data.synthetic import CLASSES, SyntheticSpec, class_counts, main, simulate_record

FS = 300
SPEC = SyntheticSpec(n_records=24, min_duration_s=12, max_duration_s=12, seed=3, n_jobs=2)
EXPECTED_COUNTS = {"N": 12, "A": 4, "O": 6, "~": 2}  # default shares of 24, largest remainder


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def record_dir(cache: Path) -> Path:
    return SPEC.ensure(cache)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_dataset_is_read_back_by_the_physionet_reader(record_dir: Path) -> None:
    assert record_dir == record_dir.parents[1] / SPEC.key() / "training2017"
    records, skipped = read_records(record_dir.parent, fs=FS, classes=CLASSES, on_bad_record="raise")
    assert not skipped and len(records) == SPEC.n_records
    labels = [r.label for r in records]
    assert Counter(labels) == EXPECTED_COUNTS
    assert labels != sorted(labels, key=CLASSES.index)  # shuffled, not in class blocks
    ids = [r.record_id for r in records]
    assert ids == [f"A{i:05d}" for i in range(1, SPEC.n_records + 1)]
    for r in records:
        assert r.fs == FS and r.signal.shape == (12 * FS,) and np.isfinite(r.signal).all()
        assert 0.3 < np.ptp(r.signal) < 30 and 0.02 < r.signal.std() < 5  # mV
    assert (record_dir / "RECORDS").read_bytes() == "".join(f"{i}\n" for i in ids).encode()
    reference = (record_dir / "REFERENCE.csv").read_bytes()
    assert reference == "".join(f"{i},{lab}\n" for i, lab in zip(ids, labels, strict=True)).encode()


def test_header_and_mat_match_the_official_format(record_dir: Path) -> None:
    for record_id in ("A00001", "A00024"):
        raw = (record_dir / f"{record_id}.mat").read_bytes()
        assert np.frombuffer(raw[:4], "<i4")[0] == 30  # MATLAB v4, little-endian int16 full matrix
        val = scipy.io.loadmat(record_dir / f"{record_id}.mat")["val"]
        assert val.dtype == np.int16 and val.shape == (1, 12 * FS)
        text = (record_dir / f"{record_id}.hea").read_text()
        lines = text.splitlines()
        assert len(lines) == 2 and all(line.endswith(" ") for line in lines)
        name, n_sig, fs, n, clock, date = lines[0].split()
        assert (name, n_sig, fs, n) == (record_id, "1", str(FS), str(12 * FS))
        assert re.fullmatch(r"\d\d:\d\d:\d\d", clock) and re.fullmatch(r"\d{1,2}/\d\d/2000", date)
        fields = lines[1].split()
        assert fields[:5] == [f"{record_id}.mat", "16+24", "1000/mV", "16", "0"]
        assert int(fields[5]) == val[0, 0]
        assert int(fields[6]) == val.sum(dtype=np.int16)  # checksum: int16 sum of the samples
        assert fields[7:] == ["0", "ECG"]


def test_records_depend_on_seed_and_index_only(record_dir: Path) -> None:
    labels = (record_dir / "REFERENCE.csv").read_text().split()
    for index in (0, 7):
        record_id, label = labels[index].split(",")
        _, rng = synthetic._record_rngs(SPEC.seed, index)
        expected = simulate_record(label, SPEC.min_duration_s, FS, rng)
        val = scipy.io.loadmat(record_dir / f"{record_id}.mat")["val"][0]
        np.testing.assert_allclose(val / 1000, expected, atol=0.0006)


def test_ensure_is_idempotent_and_leaves_no_temp_folders(
    cache: Path, record_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mtimes = {p.name: p.stat().st_mtime_ns for p in record_dir.iterdir()}
    with caplog.at_level(logging.INFO, logger="ecg_lab.data.synthetic"):
        assert SPEC.ensure(cache) == record_dir
    assert "cached" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in record_dir.iterdir()} == mtimes
    assert [p.name for p in (cache / "synthetic").iterdir()] == [SPEC.key()]


def test_same_spec_gives_identical_files_serial_or_parallel(tmp_path: Path, record_dir: Path) -> None:
    serial = dataclasses.replace(SPEC, n_jobs=1).ensure(tmp_path)
    assert serial.relative_to(tmp_path) == record_dir.relative_to(record_dir.parents[2])
    assert file_bytes(serial) == file_bytes(record_dir)


def test_different_seed_gives_different_signals(tmp_path: Path, record_dir: Path) -> None:
    other_spec = dataclasses.replace(SPEC, seed=SPEC.seed + 1)
    assert other_spec.key() != SPEC.key()
    other = other_spec.ensure(tmp_path)
    for i in range(1, SPEC.n_records + 1):
        a = scipy.io.loadmat(record_dir / f"A{i:05d}.mat")["val"]
        b = scipy.io.loadmat(other / f"A{i:05d}.mat")["val"]
        assert not np.array_equal(a, b)


def test_key_is_stable_and_tracks_the_data() -> None:
    spec = SyntheticSpec()
    assert re.fullmatch(r"[0-9a-f]{12}", spec.key())
    assert spec.key() == SyntheticSpec(min_duration_s=12, shares=[0.5, 0.15, 0.25, 0.1]).key()  # Hydra types
    assert spec.key() == SyntheticSpec(n_jobs=8).key()  # parallelism does not change the files
    for change in (
        {"n_records": 301},
        {"seed": 1},
        {"fs": 250},
        {"max_duration_s": 30.0},
        {"shares": (0.25, 0.25, 0.25, 0.25)},
    ):
        assert dataclasses.replace(spec, **change).key() != spec.key()


@pytest.mark.parametrize(
    "bad",
    [
        {"shares": (1.0, 0.0)},
        {"shares": (1, -1, 1, 1)},
        {"n_records": 0},
        {"min_duration_s": 20.0, "max_duration_s": 10.0},
        {"fs": 0},
    ],
)
def test_invalid_spec_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticSpec(**bad)


def test_class_counts_follow_shares_exactly() -> None:
    assert class_counts(24, SPEC.shares) == [12, 4, 6, 2]
    assert class_counts(300, SPEC.shares) == [150, 45, 75, 30]
    assert class_counts(7, (1, 0, 0, 0)) == [7, 0, 0, 0]
    for n in range(1, 40):
        counts = class_counts(n, (0.5, 0.15, 0.25, 0.1))
        assert sum(counts) == n and all(
            abs(c - n * s) < 1 for c, s in zip(counts, (0.5, 0.15, 0.25, 0.1), strict=True)
        )


def test_failed_generation_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SyntheticSpec(n_records=4, min_duration_s=10, max_duration_s=10, n_jobs=1)

    def crash(spec: SyntheticSpec, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / "A00001.hea").write_text("half-written")
        raise RuntimeError("killed")

    monkeypatch.setattr(synthetic, "write_dataset", crash)
    with pytest.raises(RuntimeError, match="killed"):
        spec.ensure(tmp_path)
    assert list((tmp_path / "synthetic").iterdir()) == []
    monkeypatch.undo()
    # A stray incomplete folder under the final name (not made by us) is replaced, not trusted.
    stray = tmp_path / "synthetic" / spec.key() / "training2017"
    stray.mkdir(parents=True)
    (stray / "A00001.mat").write_bytes(b"junk")
    assert spec.ensure(tmp_path) == stray
    assert len(read_records(stray)[0]) == 4


def test_concurrent_ensure_calls_agree(tmp_path: Path) -> None:
    spec = SyntheticSpec(n_records=4, min_duration_s=10, max_duration_s=10, n_jobs=1)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(spec.ensure(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(read_records(results[0])[0]) == 4
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [spec.key()]


def test_cli_writes_a_readable_dataset(tmp_path: Path) -> None:
    main(["--out", str(tmp_path / "out"), "--n-records", "5", "--seed", "2", "--jobs", "1"])
    records, _ = read_records(tmp_path / "out")
    assert len(records) == 5 and all(12 <= r.signal.size / FS <= 24 for r in records)


def test_simulate_record_basics() -> None:
    for label in CLASSES:
        x = simulate_record(label, 9.5, FS, np.random.default_rng(0))
        assert x.shape == (round(9.5 * FS),) and np.isfinite(x).all()
        np.testing.assert_array_equal(x, simulate_record(label, 9.5, FS, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="unknown label"):
        simulate_record("X", 10, FS, np.random.default_rng(0))


# --------------------------------------------------------------------------------------------------
# Class properties, measured the way one would on real recordings
# --------------------------------------------------------------------------------------------------
N_PER_CLASS = 12


def rr_stats(signal: np.ndarray) -> tuple[float, float]:
    """(mean heart rate in bpm, RR coefficient of variation) from NeuroKit2's R-peak detector."""
    _, info = nk.ecg_peaks(nk.ecg_clean(signal, sampling_rate=FS), sampling_rate=FS)
    rr = np.diff(info["ECG_R_Peaks"]) / FS
    return 60 / rr.mean(), rr.std() / rr.mean()


def high_frequency_share(signal: np.ndarray) -> float:
    """Share of the power above 40 Hz (of all power above 0.5 Hz)."""
    f, p = scipy.signal.welch(signal, fs=FS, nperseg=512)
    return p[f > 40].sum() / p[f > 0.5].sum()


@pytest.fixture(scope="module")
def by_class() -> dict[str, list[np.ndarray]]:
    return {
        label: [simulate_record(label, 12, FS, np.random.default_rng([11, i])) for i in range(N_PER_CLASS)]
        for label in CLASSES
    }


def test_af_rr_intervals_are_irregular(by_class: dict[str, list[np.ndarray]]) -> None:
    cv_n = np.mean([rr_stats(x)[1] for x in by_class["N"]])
    cv_a = np.mean([rr_stats(x)[1] for x in by_class["A"]])
    assert cv_n < 0.05 and cv_a > 0.08 and cv_a > 3 * cv_n


def test_noisy_records_have_much_more_high_frequency_power(by_class: dict[str, list[np.ndarray]]) -> None:
    hf_n = np.mean([high_frequency_share(x) for x in by_class["N"]])
    hf_noisy = np.mean([high_frequency_share(x) for x in by_class["~"]])
    assert hf_noisy > 0.15 and hf_noisy > 5 * hf_n


def test_other_rhythms_are_mostly_abnormal(by_class: dict[str, list[np.ndarray]]) -> None:
    """Brady- or tachycardia, or premature beats making the RR series irregular."""

    def abnormal(x: np.ndarray) -> bool:
        hr, cv = rr_stats(x)
        return hr < 53 or hr > 102 or cv > 0.08

    assert np.mean([abnormal(x) for x in by_class["O"]]) >= 0.6
    assert np.mean([abnormal(x) for x in by_class["N"]]) <= 0.25
