"""Filter response, z-score, window counts and the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import sosfiltfilt, sosfreqz

from ecg_lab.classification import prepared as prepared_mod
from ecg_lab.classification.prepared import prepare_records
from ecg_lab.data.records import Record
from ecg_lab.edge.preprocess import Preprocessing, butterworth, window_count
from tests.helpers import write_dataset

FS = 300.0


def test_bandpass_response_passes_ecg_band_and_stops_outside() -> None:
    sos = butterworth(0.5, 40.0, 4, FS).sos
    freqs, h = sosfreqz(sos, worN=[0.05, 0.5, 10.0, 40.0, 100.0], fs=FS)
    gain = np.abs(h) ** 2  # filtfilt applies the filter twice
    assert gain[2] == pytest.approx(1.0, abs=0.01)  # 10 Hz passes
    assert gain[1] == pytest.approx(0.5, abs=0.02) and gain[3] == pytest.approx(0.5, abs=0.02)  # -3 dB edges
    assert gain[0] < 1e-3 and gain[4] < 1e-3  # baseline wander and mains-range noise are removed


@pytest.mark.parametrize(("low", "high"), [(0.5, 40.0), (None, 40.0), (0.5, None)])
def test_filter_matches_scipy_sosfiltfilt(low: float | None, high: float | None) -> None:
    x = np.random.default_rng(0).normal(size=4000).cumsum()
    zero_phase = butterworth(low, high, 4, FS)
    assert np.allclose(zero_phase(x), sosfiltfilt(zero_phase.sos, x), rtol=0, atol=1e-9)


def test_filter_is_zero_phase() -> None:
    t = np.arange(int(60 * FS)) / FS  # long enough for the 0.5 Hz edge transients to die out
    sine = np.sin(2 * np.pi * 10 * t)
    out = Preprocessing(zscore=False).filter(sine, FS)
    mid = slice(len(t) // 4, 3 * len(t) // 4)
    assert np.allclose(out[mid], sine[mid], atol=0.02)  # no delay, no distortion in the pass band


def test_zscore_per_record() -> None:
    rec = Record("X", np.random.default_rng(0).normal(3.0, 2.0, 3000).astype(np.float32), FS, "N")
    out = Preprocessing().apply(rec)
    assert out.dtype == np.float32
    assert abs(out.mean()) < 1e-4 and out.std() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("n", "expected"), [(1499, 0), (1500, 1), (2249, 1), (2250, 2), (9000, 11), (18000, 23)]
)
def test_window_counts(n: int, expected: int) -> None:
    assert window_count(n, 1500, 750) == expected
    assert Preprocessing().starts(n).tolist() == [750 * i for i in range(expected)]


def test_cache_is_reused_and_keyed_on_files_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_dataset(tmp_path / "d", {"A00001": "N", "A00002": "A", "A00003": "O"})
    cache = tmp_path / "cache"
    first = prepare_records(root, Preprocessing(), cache)
    assert first.cache_path is not None and first.cache_path.parent == cache / "prepared"
    assert first.signals.size == 3 * 4500 and first.lengths.tolist() == [4500] * 3

    def boom(*args, **kwargs):
        raise AssertionError("records were read again although the cache holds them")

    monkeypatch.setattr(prepared_mod, "read_record", boom)
    second = prepare_records(root, Preprocessing(), cache)
    assert np.array_equal(np.asarray(second.signals), first.signals)
    assert second.cache_path == first.cache_path
    monkeypatch.undo()

    other_cfg = prepare_records(root, Preprocessing(highcut=30.0), cache)
    assert other_cfg.cache_path != first.cache_path
    (root / "A00002.hea").write_text((root / "A00002.hea").read_text() + "# touched\n")
    touched = prepare_records(root, Preprocessing(), cache)
    assert touched.cache_path not in (first.cache_path, other_cfg.cache_path)
    leftovers = [p.name for p in (cache / "prepared").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # atomic writes leave no temporary folders behind
