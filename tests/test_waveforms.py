"""The generation workflow's data: analytic waveforms, sources, cleaning cache, windows, batches."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pytest

from ecg_lab.app.outputs import RunOutputs
from ecg_lab.data.physionet2017 import link_subset
from ecg_lab.data.records import BadRecordError, DatasetNotFoundError
from ecg_lab.generation import cleaning as waveforms
from ecg_lab.generation.analytic import AnalyticSpec, analytic_ecg
from ecg_lab.generation.cleaning import Cleaning, resample
from ecg_lab.generation.datamodule import WaveformDataModule
from ecg_lab.generation.sources import PhysioNet2017Source, PTBXLSource
from ecg_lab.generation.windows import cut_windows
from tests.conftest import REPO, SHARED_PN2017, compose_config
from tests.helpers import write_dataset

SHARED_PTBXL = REPO.parent / "shared" / "data" / "ptbxl"
needs_ptbxl = pytest.mark.skipif(not SHARED_PTBXL.is_dir(), reason="needs ../shared/data/ptbxl")
needs_pn2017 = pytest.mark.skipif(not SHARED_PN2017.is_dir(), reason="needs ../shared/data/physionet2017")
SMALL_NORMAL = [
    "data.sources.physionet2017.synthetic.n_records=24",
    "data.sources.physionet2017.synthetic.shares=[1.0,0.0,0.0,0.0]",
    "data.sources.physionet2017.synthetic.min_duration_s=20",
    "data.sources.physionet2017.synthetic.max_duration_s=22",
    "data.batch_size=8",
]


# -- analytic waveforms ---------------------------------------------------------------------------
def test_analytic_components_sit_at_their_offsets() -> None:
    fs, spec = 100.0, AnalyticSpec()
    peaks = np.array([300, 600])
    signal, envelope = analytic_ecg(peaks, 1000, fs, spec)
    assert signal[300] == pytest.approx(1.0, abs=0.01) and signal[600] == pytest.approx(1.0, abs=0.01)
    t_peak = 300 + int(round(spec.waves["T"].offset_s * fs))
    assert signal[t_peak] == pytest.approx(spec.waves["T"].amplitude, abs=0.01)
    p_peak = 300 + int(round(spec.waves["P"].offset_s * fs))
    assert signal[p_peak] == pytest.approx(spec.waves["P"].amplitude, abs=0.01)
    assert abs(signal[450]) < 1e-3 and signal[:50].max() < 1e-6  # flat between beats and before the first
    assert envelope[300] == pytest.approx(1.0) and envelope[t_peak] == pytest.approx(1.0, abs=1e-3)
    assert envelope[:50].max() < 1e-6 and 0.0 <= envelope.min() and envelope.max() <= 1.0


def test_r_amplification_scales_only_r() -> None:
    peaks = np.array([200, 500, 800])
    base, _ = analytic_ecg(peaks, 1000, 100.0, AnalyticSpec())
    amp, _ = analytic_ecg(peaks, 1000, 100.0, AnalyticSpec(r_amplification=2.5))
    assert amp[500] == pytest.approx(2.5 * base[500], rel=0.01)
    assert amp[528] == pytest.approx(base[528], abs=1e-6)  # the T wave is untouched


def test_overlapping_beats_add_up() -> None:
    spec = AnalyticSpec(waves={"T": {"offset_s": 0.0, "width_s": 0.05, "amplitude": 1.0}})
    one, _ = analytic_ecg(np.array([100]), 200, 100.0, spec)
    two, _ = analytic_ecg(np.array([100, 102]), 200, 100.0, spec)
    assert two[101] == pytest.approx(2 * one[100] * np.exp(-0.5 * (0.01 / 0.05) ** 2), rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"waves": {"X": {"offset_s": 0, "width_s": 0.01, "amplitude": 1}}}, "data.analytic.waves"),
        ({"waves": {"R": {"offset_s": 0, "width_s": 0, "amplitude": 1}}}, "data.analytic.waves.R.width_s"),
        ({"r_amplification": 0}, "data.analytic.r_amplification"),
    ],
)
def test_bad_analytic_settings_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        AnalyticSpec(**kwargs)


# -- records → windows ----------------------------------------------------------------------------
def test_resample_keeps_duration_and_shape() -> None:
    t = np.arange(3000) / 300
    x = np.sin(2 * np.pi * 1.0 * t)
    y = resample(x, 300, 100)
    assert y.size == 1000
    assert np.allclose(y[50:-50], np.sin(2 * np.pi * np.arange(1000)[50:-50] / 100), atol=0.02)


def _records(lengths: list[int], peaks: list[list[int]]) -> waveforms.CleanRecords:
    n_peaks = np.array([len(p) for p in peaks])
    lengths_arr = np.array(lengths)
    return waveforms.CleanRecords(
        ids=np.array([f"r{i}" for i in range(len(lengths))]),
        sources=np.array(["s"] * len(lengths)),
        labels=np.array(["N"] * len(lengths)),
        splits=np.array(["train"] * len(lengths)),
        offsets=np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]),
        lengths=lengths_arr,
        signals=np.arange(sum(lengths), dtype=np.float32),
        peak_offsets=np.concatenate([[0], np.cumsum(n_peaks)]),
        peaks=np.array([p for ps in peaks for p in ps], dtype=np.int64),
        fs=100.0,
    )


def test_cut_windows_covers_each_record_and_marks_its_peaks() -> None:
    recs = _records([2500, 900, 1000], [[100, 1500, 2400], [10], [999]])
    w = cut_windows(recs, window=1000, stride=500, analytic=None)
    assert w.x.shape == (5, 1000)  # record 0 from 0, 500, 1000, 1500; record 1 too short; record 2 once
    assert w.record.tolist() == [0, 0, 0, 0, 2] and w.start.tolist() == [0, 500, 1000, 1500, 0]
    assert w.x[1, 0] == 500 and w.x[4, 0] == 3400  # raw signal slices
    assert np.flatnonzero(w.rpeaks[0]).tolist() == [100]
    assert np.flatnonzero(w.rpeaks[2]).tolist() == [500]
    assert np.flatnonzero(w.rpeaks[3]).tolist() == [0, 900]
    assert np.flatnonzero(w.rpeaks[4]).tolist() == [999]
    assert w.envelope is None
    wa = cut_windows(recs, window=1000, stride=1000, analytic=AnalyticSpec())
    assert wa.envelope is not None and wa.x[0, 100] == pytest.approx(1.0, abs=0.01)


def test_window_longer_than_every_record_names_the_key() -> None:
    with pytest.raises(ValueError, match="data.window=5000"):
        cut_windows(_records([1000], [[5]]), window=5000, stride=5000, analytic=None)


# -- the datamodule on synthetic normal ECGs ----------------------------------------------------
def _datamodule(tmp_path: Path, cache_dir: Path, *overrides: str) -> WaveformDataModule:
    cfg = compose_config(
        "train", ["data=synthetic_normal", *SMALL_NORMAL, *overrides], tmp_path / "run", cache_dir
    )
    return hydra.utils.instantiate(cfg.data)


def test_synthetic_normal_batches(tmp_path: Path, cache_dir: Path) -> None:
    dm = _datamodule(tmp_path, cache_dir)
    dm.prepare_data()
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) >= 24  # 20-22 s records: 2 windows each
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (8, 1, 1000) and batch["envelope"].shape == (8, 1000)
    assert batch["rpeaks"].dtype.is_floating_point is False
    beats = batch["rpeaks"].sum(1)
    assert beats.min() >= 7 and beats.max() <= 18  # 10 s of 55-100 bpm
    # analytic input: the R component (amplitude 1) sits at every detected R-peak
    assert np.allclose(batch["x"][:, 0][batch["rpeaks"]].numpy(), 1.0, atol=0.05)
    RunOutputs(tmp_path / "run").data_files(dm)
    split = (tmp_path / "run" / "split.csv").read_text().splitlines()
    assert split[0] == "source,record,label,split" and len(split) == 25
    by_record = {}
    for line in split[1:]:
        _, rec, _, part = line.split(",")
        by_record.setdefault(rec, set()).add(part)
    assert all(len(v) == 1 for v in by_record.values())


def test_raw_input_is_the_cleaned_zscored_signal(tmp_path: Path, cache_dir: Path) -> None:
    dm = _datamodule(tmp_path, cache_dir, "data.input=raw")
    dm.setup()
    w = dm.datasets["train"].windows
    assert w.envelope is None and "envelope" not in dm.datasets["train"][0]
    assert abs(float(w.x.mean())) < 0.2 and 0.7 < float(w.x.std()) < 1.3
    # R-peaks are where the signal is high: well above the window's median
    assert np.median(w.x[w.rpeaks]) > np.median(w.x) + 1.5


def test_cleaned_records_come_from_the_cache(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    _datamodule(tmp_path, cache_dir).prepare_data()
    original, calls = waveforms.read_clean_records, []
    monkeypatch.setattr(waveforms, "read_clean_records", lambda *a, **k: calls.append(1) or original(*a, **k))
    dm = _datamodule(tmp_path, cache_dir, "data.analytic.r_amplification=3")  # windows only: same cache
    dm.setup()
    assert len(dm.datasets["train"]) > 0 and calls == []
    _datamodule(tmp_path, cache_dir, "data.cleaning.zscore=false").prepare_data()  # cleaning changed
    assert calls == [1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.input=spectrogram", "data.input"),
        ("data.on_bad_record=ignore", "data.on_bad_record"),
        ("data.sources.physionet2017=null", "data.sources"),
        ("data.sources.physionet2017.labels=[X]", "data.sources.physionet2017.labels"),
    ],
)
def test_bad_data_settings_name_the_key(tmp_path: Path, cache_dir: Path, override: str, message: str) -> None:
    with pytest.raises(Exception, match=message.replace(".", r"\.")):
        _datamodule(tmp_path, cache_dir, override)


def test_bad_record_raises_or_is_skipped_and_listed(tmp_path: Path, cache_dir: Path) -> None:
    folder = write_dataset(tmp_path / "pn", {f"A{i:05d}": "N" for i in range(1, 9)}, n=4500)
    (folder / "A00003.mat").write_bytes(b"not a MATLAB file")
    source = PhysioNet2017Source(root=folder, labels=["N"])
    with pytest.raises(BadRecordError, match="A00003.mat"):
        WaveformDataModule({"pn": source}, window=1000, cache_dir=cache_dir).prepare_data()
    dm = WaveformDataModule({"pn": source}, window=1000, on_bad_record="skip", cache_dir=cache_dir)
    dm.setup()
    RunOutputs(tmp_path / "run").data_files(dm)
    skipped = (tmp_path / "run" / "skipped_records.csv").read_text()
    assert "A00003" in skipped and "MATLAB" in skipped
    assert "A00003" not in dm.records.ids.tolist() and len(dm.records) == 7


def test_missing_dataset_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nowhere")):
        WaveformDataModule({"ptbxl": PTBXLSource(tmp_path / "nowhere")}).prepare_data()


# -- real data --------------------------------------------------------------------------------------
@needs_ptbxl
def test_ptbxl_norm_lead_ii_by_strat_fold(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config(
        "train", ["data=ptbxl", f"data.sources.ptbxl.root={SHARED_PTBXL}"], tmp_path, cache_dir
    )
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    r = dm.records
    assert len(r) == 245 and set(r.sources) == {"ptbxl"}  # NORM at likelihood 100 in the subset
    assert all("NORM" in label.split("+") for label in r.labels)
    assert {k: len(v) for k, v in dm.datasets.items()} == {k: int(np.sum(r.splits == k)) for k in dm.datasets}
    assert len(dm.datasets["train"]) > 5 * len(dm.datasets["test"]) > 0
    beats = dm.windows.rpeaks.sum(1)
    assert 5 <= np.median(beats) <= 15  # resting NORM ECGs: 50-90 bpm in 10 s


@needs_ptbxl
def test_ptbxl_500hz_without_records500_names_the_file(tmp_path: Path) -> None:
    dm = WaveformDataModule({"ptbxl": PTBXLSource(SHARED_PTBXL, sampling_rate=500)})
    with pytest.raises(BadRecordError, match="records500"):
        dm.prepare_data()


@needs_pn2017
def test_physionet2017_normal_windows_at_100_hz(tmp_path: Path, cache_dir: Path) -> None:
    subset = link_subset(SHARED_PN2017, tmp_path / "subset", 40)
    source = PhysioNet2017Source(root=subset, labels=["N"])
    dm = WaveformDataModule({"physionet2017": source}, cleaning=Cleaning(), cache_dir=cache_dir)
    dm.setup()
    n_normal = sum(1 for line in (subset / "REFERENCE.csv").read_text().splitlines() if line.endswith(",N"))
    assert len(dm.records) == n_normal and set(dm.records.labels) == {"N"}
    assert dm.records.fs == 100.0
    assert set(dm.records.splits) == {"train", "val", "test"}
    beats_per_s = np.median(dm.windows.rpeaks.sum(1)) / 10
    assert 0.7 <= beats_per_s <= 2.0
