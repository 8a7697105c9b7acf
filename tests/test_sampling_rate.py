"""The sampling rate as a config (``data.preprocess.resample_to``): records filtered at their own rate,
resampled, then windowed at the new rate, in training and in the edge runtime alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import torch

from ecg_lab.app.checks import check_window
from ecg_lab.classification.prepared import prepare_records
from ecg_lab.classification.variants import model_names, time_steps
from ecg_lab.data.records import BadRecordError, Record
from ecg_lab.edge import runtime as edge
from ecg_lab.edge.preprocess import Preprocessing, resample
from ecg_lab.errors import ConfigError
from ecg_lab.export import export
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.helpers import write_dataset
from tests.test_export_edge import ONE_STEP

FS = 300.0
AT_150 = ["data.preprocess.resample_to=150", "data.preprocess.window=750", "data.preprocess.stride=375"]


def _record(n: int, fs: float = FS, seed: int = 0) -> Record:
    """A 10 Hz sine with noise, ``n`` samples at ``fs``."""
    t = np.arange(n) / fs
    x = np.sin(2 * np.pi * 10 * t) + 0.1 * np.random.default_rng(seed).normal(size=n)
    return Record("X", x.astype(np.float32), fs, "N")


def test_a_record_is_filtered_at_its_rate_then_resampled() -> None:
    prep = Preprocessing(resample_to=150, window=750, stride=375)
    record = _record(9000)
    out = prep.apply(record)
    assert out.dtype == np.float32 and out.size == 4500 == prep.output_size(9000, FS)
    assert prep.rate(FS) == 150.0 and Preprocessing().rate(FS) == FS
    filtered = resample(Preprocessing(zscore=False).filter(record.signal.astype(np.float64), FS), FS, 150)
    np.testing.assert_allclose(out, (filtered - filtered.mean()) / filtered.std(), rtol=0, atol=1e-5)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.fft.rfftfreq(out.size, 1 / 150)[spectrum.argmax()] == pytest.approx(10.0)  # 10 Hz stays 10 Hz
    assert prep.windows(out).shape == (11, 750)  # 5-s windows at 150 Hz, as 1500 at 300 Hz


def test_a_record_too_short_at_the_new_rate_names_both() -> None:
    with pytest.raises(
        BadRecordError, match=r"record is 700 samples at 150 Hz, shorter than one window \(750\)"
    ):
        Preprocessing(resample_to=150, window=750, stride=375).apply(_record(1400))


def test_the_cache_key_holds_resample_to_only_when_set(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", {"A0001": "N", "A0002": "A"}, n=4500)
    at_300 = prepare_records(root, Preprocessing(), tmp_path / "cache")
    at_150 = prepare_records(root, Preprocessing(resample_to=150, window=750, stride=375), tmp_path / "cache")
    assert at_150.cache_path != at_300.cache_path
    assert at_300.lengths.tolist() == [4500, 4500] and at_150.lengths.tolist() == [2250, 2250]
    assert "resample_to" not in Preprocessing().as_dict()  # entries prepared before it existed still match


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, r"resample_to=0 is not a sampling rate; set a positive rate in Hz, or null$"),
        (-150, r"resample_to=-150 is not a sampling rate"),
        (80, r"resample_to=80 Hz has its Nyquist frequency \(40 Hz\) at or below "
             r"data\.preprocess\.highcut=40 Hz; raise data\.preprocess\.resample_to above 80 or lower the "
             r"highcut$"),
        (60, r"resample_to=60 Hz has its Nyquist frequency \(30 Hz\) at or below"),
    ],
)  # fmt: skip
def test_a_bad_rate_is_one_line_naming_the_key(
    value: float, message: str, tmp_path: Path, cache_dir: Path
) -> None:
    with pytest.raises(ConfigError, match=rf"^data\.preprocess\.{message}") as err:
        Preprocessing(resample_to=value)
    assert "\n" not in str(err.value)
    cfg = compose_config(
        "train", ["data=synthetic", f"data.preprocess.resample_to={value}"], tmp_path, cache_dir
    )
    with pytest.raises(ConfigError, match=rf"^data\.preprocess\.{message}"):
        train(cfg)  # the entry point's error is the same line, not Hydra's wrapped one


def test_a_highcut_below_the_new_nyquist_or_none_is_accepted() -> None:
    assert Preprocessing(resample_to=81).rate(FS) == 81.0
    assert Preprocessing(highcut=None, resample_to=50, window=250, stride=125).rate(FS) == 50.0


def test_the_150hz_data_config_wins_over_the_experiments_data(tmp_path: Path, cache_dir: Path) -> None:
    for overrides in (
        ["experiment=physionet2017_cnn_lstm", "data=physionet2017_150hz"],
        ["data=physionet2017_150hz"],
    ):
        pre = compose_config("train", overrides, tmp_path, cache_dir).data.preprocess
        assert (pre.resample_to, pre.window, pre.stride) == (150, 750, 375)
    default = compose_config(
        "train", ["experiment=physionet2017_cnn_lstm"], tmp_path, cache_dir
    ).data.preprocess
    assert (default.resample_to, default.window, default.stride) == (None, 1500, 750)


@pytest.mark.parametrize("model", model_names())
def test_every_crnn_variant_runs_on_150hz_windows(model: str, tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", ["data=physionet2017_150hz", f"model={model}"], tmp_path, cache_dir)
    check_window(cfg)  # raises ConfigError when the window is too short for the network
    assert time_steps(hydra.utils.instantiate(cfg.model.net), cfg.data.preprocess.window) >= 1


@pytest.fixture(scope="module")
def run_150(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Any, Path]:
    """A cnn_lstm trained one step on synthetic data resampled to 150 Hz (its data module, set up from
    the cache entry training read) and its export folder."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("at150")
    cfg = compose_config("train", [*ONE_STEP, *SMALL_SYNTHETIC, *AT_150], run / "run", cache_dir)
    train(cfg)
    ckpt = run / "run" / "checkpoints" / "last.ckpt"
    export(compose_config("export", [f"ckpt_path={ckpt}", f"out_dir={run / 'export'}"], run / "x", cache_dir))
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    return dm, run / "export"


def test_training_runs_on_resampled_windows(run_150) -> None:
    dm, _ = run_150
    x = next(iter(dm.train_dataloader()))[0]
    assert x.shape[1:] == (1, 750)
    assert dm.prepared.lengths.max() <= 12 * 150  # records of 10-12 s at 150 Hz, not 300


def test_a_300hz_recording_gives_the_training_windows_through_the_edge_runtime(run_150) -> None:
    dm, folder = run_150
    config = edge.read_config(folder)
    assert config["fs"] == FS and config["window"] == 750 and config["preprocess"]["resample_to"] == 150
    record_path = dm.record_root() / f"{dm.prepared.ids[0]}.mat"
    got = edge.windows_of(config, *edge.read_recording(record_path))  # the .hea says 300 Hz
    np.testing.assert_array_equal(got, dm.preprocess.windows(np.asarray(dm.prepared.signal(0))))
    assert edge.classify_file(edge.EdgeModel(folder), record_path)["windows"] == len(got)
    with pytest.raises(BadRecordError, match=r"give a recording of at least 5 s$"):
        edge.windows_of(config, _record(1400).signal, FS)  # 700 samples at 150 Hz


@pytest.mark.parametrize("lever", ["default", "wander", "bursts"])
def test_augmentation_works_at_the_windows_rate(lever: str, tmp_path: Path) -> None:
    """Wander frequencies and burst lengths are in Hz and seconds: the augment group takes the rate of the
    windows (resample_to when set), not the recordings' data.fs."""

    def rate(data: str) -> float:
        return compose_config("train", [f"augment={lever}", f"data={data}"], tmp_path, tmp_path).augment.fs

    assert rate("physionet2017_150hz") == 150.0 and rate("physionet2017") == 300.0
