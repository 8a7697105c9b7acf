"""RR-interval features (features=rr): the statistics, their cache, the datasets' ``rr`` input, the
composition with every CRNN variant, and a tiny train → eval → export run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from ecg_lab.app.checks import check_overrides
from ecg_lab.classification import rr_features
from ecg_lab.classification.inputs import RecordInputs
from ecg_lab.classification.prepared import prepare_records
from ecg_lab.classification.rr_features import NAMES, WIDTH, RRFeatures
from ecg_lab.edge.preprocess import Preprocessing
from ecg_lab.errors import ConfigError
from tests.conftest import REPO, SMALL_SYNTHETIC, compose_config
from tests.helpers import run_module, write_dataset

FS = 300
IRREGULARITY = ("sdnn", "rmssd", "pnn50", "cv_rr", "dmed_ratio", "frac_d10", "rr_max")
CRNN_MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml") if p.stem != "lstm_vae")


def beats(rr: np.ndarray, seconds: float = 30.0, seed: int = 0) -> np.ndarray:
    """A float32 trace of narrow QRS-like spikes after the intervals ``rr`` (s), plus a little noise."""
    t = np.arange(int(seconds * FS)) / FS
    times = np.cumsum(rr)
    times = times[times < seconds - 0.2]
    spikes = np.exp(-((t[:, None] - times[None, :]) ** 2) / (2 * 0.012**2)).sum(axis=1)
    return (spikes + 0.02 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def named(values: np.ndarray) -> dict[str, float]:
    return dict(zip(NAMES, values.tolist(), strict=True))


def test_an_irregular_rhythm_scores_higher_on_every_irregularity_statistic() -> None:
    rng = np.random.default_rng(1)
    regular, outcome = RRFeatures().record(beats(0.8 + rng.uniform(-0.01, 0.01, 60)), FS)
    assert outcome == "ok"
    irregular, outcome = RRFeatures().record(beats(rng.uniform(0.4, 1.2, 80)), FS)
    assert outcome == "ok"
    reg, irr = named(regular), named(irregular)
    for name in IRREGULARITY:
        assert irr[name] > reg[name] + 0.05, name
    assert reg["hr"] == pytest.approx(0.75, abs=0.02)  # 75 bpm / 100
    assert reg["rr_median"] == pytest.approx(0.8, abs=0.02)
    assert reg["few_beats"] == irr["few_beats"] == 0.0
    assert regular.dtype == np.float32 and regular.shape == (WIDTH,)
    assert np.all((regular >= 0) & (regular <= rr_features.CLIP))


def test_too_few_beats_or_a_neurokit_failure_give_the_flag_and_zeros(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    values, outcome = RRFeatures(min_beats=5).record(beats(np.full(3, 0.8), seconds=4.0), FS)
    assert outcome == "few" and named(values)["few_beats"] == 1.0 and not values[:-1].any()

    def fail(*args, **kwargs):
        raise IndexError("no peaks")

    monkeypatch.setattr(rr_features.nk, "ecg_peaks", fail)
    values, outcome = RRFeatures().record(beats(np.full(40, 0.8)), FS)
    assert outcome == "failed" and named(values)["few_beats"] == 1.0 and not values[:-1].any()

    class Two:  # two records, NeuroKit2 failing on both: one warning with the count, no crash
        fs = FS

        def __len__(self) -> int:
            return 2

        def signal(self, i: int) -> np.ndarray:
            return beats(np.full(40, 0.8), seed=i)

    with caplog.at_level(logging.WARNING, logger=rr_features.__name__):
        table, counts = RRFeatures().compute(Two())  # type: ignore[arg-type]
    assert counts == {"ok": 0, "few": 0, "failed": 2} and table.shape == (2, WIDTH)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NeuroKit2 failed on 2" in warnings[0]


def test_min_beats_below_four_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^data\.features\.min_beats=3 is too few"):
        RRFeatures(min_beats=3)


def test_the_table_is_cached_with_the_prepared_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_dataset(tmp_path / "data", {f"A{i:05d}": "NAO~"[i % 4] for i in range(4)}, n=4500)
    cache = tmp_path / "cache"
    prepared = prepare_records(folder, Preprocessing(), cache)
    calls = []
    compute = RRFeatures.compute
    monkeypatch.setattr(
        RRFeatures, "compute", lambda self, p, fs=None: calls.append(1) or compute(self, p, fs)
    )

    first = RRFeatures().table(prepared, cache)
    again = RRFeatures().table(prepare_records(folder, Preprocessing(), cache), cache)
    assert len(calls) == 1  # the second run loads it
    assert np.array_equal(first, again) and first.shape == (4, WIDTH)
    assert named(first[0])["hr"] == pytest.approx(60 / 0.85 / 100, abs=0.02)  # ecg_like beats every 0.85 s
    (entry,) = (cache / "rr_features").iterdir()
    key = json.loads((entry / "entry.json").read_text())["key"]
    assert key["prepared"] == prepared.cache_path.name and key["version"] == rr_features.FEATURE_VERSION

    RRFeatures(min_beats=6).table(prepared, cache)  # other settings: another entry
    assert len(calls) == 2 and len(list((cache / "rr_features").iterdir())) == 2


def test_record_inputs_join_rows_by_record_and_keep_the_base_inputs() -> None:
    class Base(torch.utils.data.Dataset):
        labels = np.array([0, 1])

        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            return torch.zeros(1, 4), i, 1 - i, {"lengths": torch.tensor(4)}

    table = torch.arange(6.0).reshape(2, 3)
    dataset = RecordInputs(Base(), {"rr": table})
    x, y, record, inputs = dataset[0]
    assert record == 1 and set(inputs) == {"lengths", "rr"} and torch.equal(inputs["rr"], table[1])
    assert dataset.labels.tolist() == [0, 1] and len(dataset) == 2  # the base's attributes


def test_datasets_carry_each_recordings_rr(train_cfg) -> None:
    dm = hydra.utils.instantiate(train_cfg("features=rr").data)
    dm.prepare_data()
    dm.setup()
    table = dm.features.table(dm.prepared, dm.cache_dir)
    for part in ("train", "val", "test"):
        x, y, record, inputs = dm.datasets[part][0]
        assert set(inputs) == {"rr"} and torch.equal(inputs["rr"], torch.from_numpy(table[record]))
    assert dm.class_counts().sum() == len(dm.datasets["train"])
    x, y, record, inputs = next(iter(dm.train_dataloader()))
    assert inputs["rr"].shape == (len(y), WIDTH) and inputs["rr"].dtype == torch.float32


@pytest.mark.parametrize("model", CRNN_MODELS)
def test_every_crnn_variant_takes_rr(model: str, train_cfg) -> None:
    cfg = train_cfg(f"model={model}", "features=rr")
    assert cfg.model.net.extra_features == WIDTH and cfg.data.features.min_beats == 5
    check_overrides(cfg)
    net = hydra.utils.instantiate(cfg.model.net).eval()
    x = torch.randn(2, 1, cfg.data.preprocess.window)
    assert net(x, rr=torch.rand(2, WIDTH)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"needs an rr input .*\(got None\); use features=rr"):
        net(x)


def test_the_experiment_keeps_rr(tmp_path: Path, cache_dir: Path) -> None:
    overrides = ["experiment=physionet2017_cnn_lstm", "features=rr"]
    cfg = compose_config("train", overrides, tmp_path, cache_dir)
    assert cfg.data.name == "physionet2017" and cfg.task_name == "physionet2017_cnn_lstm"
    assert cfg.model.net.extra_features == WIDTH and cfg.data.features.method == "neurokit"


def test_start_checks_name_features_that_do_not_fit(train_cfg, tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.features gives 14 .* model\.net\.extra_features=0; use"):
        check_overrides(train_cfg("features=rr", "model.net.extra_features=0"))
    with pytest.raises(ConfigError, match=r"^data\.features gives 0 .* model\.net\.extra_features=14; use"):
        check_overrides(train_cfg("+model.net.extra_features=14"))
    vae = ["features=rr", "model=lstm_vae", "loss=morph_mse", "data=synthetic_normal"]
    with pytest.raises(ConfigError, match=r"^features=rr is for classifiers, but model=lstm_vae"):
        check_overrides(compose_config("train", vae, tmp_path, cache_dir))
    # the window probe feeds zeros as rr: a window too short for the network is still named
    with pytest.raises(ConfigError, match=r"^data\.preprocess\.window=32 is too short"):
        check_overrides(train_cfg("features=rr", "data.preprocess.window=32", "data.preprocess.stride=32"))


def test_train_eval_on_another_folder_and_export_refused(tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "run"
    common = [f"paths.cache_dir={cache_dir}", "trainer=cpu", "callbacks.progress.interactive=false"]
    proc = run_module(
        "ecg_lab.train",
        [
            *common,
            *SMALL_SYNTHETIC,
            "features=rr",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]["net.head.weight"]
    assert stored.shape[1] == 128 + WIDTH

    # another folder, its data config given without features: they come from the checkpoint's
    folder = write_dataset(tmp_path / "heldback", {f"B{i:05d}": "NAO~"[i % 4] for i in range(4)}, n=3000)
    args = [*common, f"ckpt_path={ckpt}", "data=physionet2017", f"data.root={folder}", "data.split=all"]
    proc = run_module("ecg_lab.eval", [*args, f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "test_metrics.json").read_text())["n_records"] == 4

    proc = run_module(
        "ecg_lab.export", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'export'}"], tmp_path
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: ckpt_path={ckpt} was trained with features=rr (RR-interval features beside the signal), "
        "which the edge runtime does not compute; export a checkpoint trained with features=none"
    )


def test_features_of_resampled_records_are_computed_at_their_rate(train_cfg) -> None:
    """With data.preprocess.resample_to the prepared signals are at the new rate: R-peaks found there must
    be timed at it (read at the recordings' 300 Hz, every RR interval would come out halved)."""
    tables = {}
    for rate, window in ((None, 1500), (150, 750)):
        resample = [] if rate is None else [f"data.preprocess.resample_to={rate}"]
        dm = hydra.utils.instantiate(
            train_cfg("features=rr", *resample, f"data.preprocess.window={window}").data
        )
        dm.prepare_data()
        dm.setup()
        items = (dm.datasets["train"][i] for i in range(len(dm.datasets["train"])))
        tables[rate] = {int(record): inputs["rr"].numpy() for _, _, record, inputs in items}
    hr = NAMES.index("hr")
    assert tables[150].keys() == tables[None].keys()
    ratios = [tables[150][r][hr] / row[hr] for r, row in tables[None].items() if row[hr] > 0]
    assert np.median(ratios) == pytest.approx(1.0, abs=0.05), ratios  # read at 300 Hz it would be 2
