"""Calibration of the classifiers (``calibration=prior|thresholds``, off by default): fitted on the
best checkpoint's validation recordings, stored in it, applied by test, ``ecg_lab.eval`` and the edge
runtime; and model selection on ``val/official_f1``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import torch

from ecg_lab.classification.calibration import Calibrator, recording_scores
from ecg_lab.classification.datamodule import ECGWindowDataModule
from ecg_lab.classification.metrics import confusion_matrix, official_f1
from ecg_lab.edge import runtime as edge
from ecg_lab.errors import ConfigError
from ecg_lab.eval import evaluate
from ecg_lab.generation.datamodule import WaveformDataModule
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.helpers import ecg_like, write_record
from tests.test_edge_integrity import run_export, write_checkpoint

CLASSES = ("N", "A", "O", "~")
SHORT = [
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "callbacks.progress.interactive=false",
]


def biased_against_a(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Recording probabilities of a fair classifier (true class +2 on the logits, noise N(0, 1)), then
    with class A's probability scaled by 0.1 and renormalised: a prior shift that hides A."""
    rng = np.random.default_rng(seed)
    targets = rng.choice(4, size=n, p=[0.5, 0.15, 0.25, 0.1])
    logits = 2.0 * np.eye(4)[targets] + rng.standard_normal((n, 4))
    probs = np.exp(logits) * np.array([1.0, 0.1, 1.0, 1.0])
    return (probs / probs.sum(1, keepdims=True)).astype(np.float32), targets


def f1_of(probs: np.ndarray, targets: np.ndarray, calibration: dict[str, Any] | None) -> float:
    return recording_scores(targets, edge.calibrated(probs, calibration)[1], CLASSES)["official_f1"]


# -- fitting ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "grid"),
    [("prior", dict(low=-3.0, high=3.0, steps=61)), ("thresholds", dict(low=-0.5, high=0.5, steps=41))],
)
def test_fitting_undoes_a_prior_shift_against_a(method: str, grid: dict[str, Any]) -> None:
    val_probs, val_targets = biased_against_a(1000, seed=0)
    fitted = Calibrator(method, **grid).fit(val_probs, val_targets, CLASSES)
    assert fitted["method"] == method and fitted["classes"] == list(CLASSES) and fitted["n_records"] == 1000
    assert fitted["val_official_f1_uncalibrated"] == pytest.approx(f1_of(val_probs, val_targets, None))
    assert fitted["val_official_f1"] == pytest.approx(f1_of(val_probs, val_targets, fitted))
    assert fitted["val_official_f1"] > fitted["val_official_f1_uncalibrated"] + 0.05
    favoured = np.argmax(fitted["values"]) if method == "prior" else np.argmin(fitted["values"])
    assert CLASSES[favoured] == "A"  # A gets the weight (prior) or the lowest threshold back
    test_probs, test_targets = biased_against_a(1000, seed=1)  # and it carries to unseen recordings
    assert f1_of(test_probs, test_targets, fitted) > f1_of(test_probs, test_targets, None) + 0.05


def test_fitting_keeps_what_cannot_be_improved() -> None:
    """Perfect probabilities: every value stays 0 (ties go to 0), the F1 stays 1."""
    targets = np.arange(40) % 4
    probs = (0.1 + 0.6 * np.eye(4)[targets]).astype(np.float32)
    fitted = Calibrator("prior", low=-3.0, high=3.0, steps=61).fit(probs, targets, CLASSES)
    assert fitted["values"] == [0.0, 0.0, 0.0, 0.0]
    assert fitted["val_official_f1"] == fitted["val_official_f1_uncalibrated"] == 1.0


def test_calibrated_applies_each_method() -> None:
    probs = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.6, 0.1]], dtype=np.float32)
    p, preds = edge.calibrated(probs, None)
    assert p is probs and preds.tolist() == [0, 2]
    p, preds = edge.calibrated(probs, {"method": "prior", "values": [0.0, np.log(2.0), 0.0, 0.0]})
    np.testing.assert_allclose(p[0], np.array([0.5, 0.6, 0.2, 0.0]) / 1.3)
    assert preds.tolist() == [1, 2] and np.allclose(p.sum(1), 1.0)
    p, preds = edge.calibrated(probs, {"method": "thresholds", "values": [0.3, 0.0, 0.45, 0.0]})
    np.testing.assert_array_equal(p, probs.astype(np.float64))  # thresholds move the decision only
    assert preds.tolist() == [1, 1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["calibration=prior", "calibration.method=temperature"],
            r"^calibration\.method='temperature' is a string, but .*Calibrator takes one of 'prior', 'thr",
        ),
        (
            ["calibration=thresholds", "calibration.steps=1"],
            r"^calibration\.low=-0\.5, .*steps=1.*steps >= 2",
        ),
        (
            ["calibration=prior", "experiment=lstm_vae"],
            r"^calibration=prior is for classifiers, but the model is a generation model; use calibration=n",
        ),
    ],
)
def test_a_bad_calibration_stops_training_before_the_data(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], message: str
) -> None:
    for datamodule in (ECGWindowDataModule, WaveformDataModule):
        monkeypatch.setattr(datamodule, "prepare_data", lambda self: pytest.fail("data was prepared"))
    with pytest.raises(ConfigError, match=message):
        train(compose_config("train", ["trainer=cpu", *overrides], tmp_path / "run", cache_dir))


# -- the module: none is today's code path, a calibration scores test recordings ---------------------
def module_with_outputs(cache_dir: Path, tmp_path: Path, stage: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """A fresh classifier holding one epoch's window outputs for ``stage`` (3 windows per recording)."""
    cfg = compose_config("train", [], tmp_path / "run", cache_dir)
    assert cfg.calibration is None  # the default: calibration=none
    model = hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss))
    probs, targets = biased_against_a(200, seed=2)
    windows = torch.from_numpy(np.repeat(probs, 3, axis=0))
    rows = torch.cat(
        [windows, torch.from_numpy(np.repeat(targets, 3))[:, None].float(), torch.arange(600)[:, None] // 3],
        1,
    )
    model._outputs[stage] = [rows[:250], rows[250:]]
    return model, probs, targets


@pytest.mark.parametrize("stage", ["val", "test"])
def test_no_calibration_scores_recordings_as_before(cache_dir: Path, tmp_path: Path, stage: str) -> None:
    model, probs, targets = module_with_outputs(cache_dir, tmp_path, stage)
    got = model._recording_scores(stage)
    record_probs = torch.from_numpy(probs)  # what the module computed before calibration existed
    cm = confusion_matrix(targets, record_probs.argmax(1).numpy(), 4)
    assert got == {**official_f1(cm, CLASSES), "record_confusion_matrix": cm.tolist(), "n_records": 200}
    assert list(got) == [*official_f1(cm, CLASSES), "record_confusion_matrix", "n_records"]
    assert "calibration" not in model.checkpoint_info()


def test_a_calibration_scores_test_recordings_with_and_without_it(cache_dir: Path, tmp_path: Path) -> None:
    model, probs, targets = module_with_outputs(cache_dir, tmp_path, "test")
    calibration = {"method": "prior", "values": [0.0, 2.0, 0.0, 0.0]}
    model.on_load_checkpoint({"ecg_lab": {"calibration": calibration}})
    got = model._recording_scores("test")
    want = recording_scores(targets, edge.calibrated(probs, calibration)[1], CLASSES)
    before = recording_scores(targets, probs.argmax(1), CLASSES)
    assert {k: got[k] for k in want} == want and got["calibration"] == calibration
    assert {k: got[f"{k}_uncalibrated"] for k in before} == before
    assert got["official_f1"] > got["official_f1_uncalibrated"]
    assert model.checkpoint_info()["calibration"] == calibration
    model._outputs["val"] = module_with_outputs(cache_dir, tmp_path, "val")[0]._outputs["val"]
    assert "official_f1_uncalibrated" not in model._recording_scores("val")  # validation stays raw


# -- end to end: train fits and stores it, test and eval apply it, selection on val/official_f1 --------
@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A 2-epoch run selecting on val/official_f1 with calibration=prior; returns its run folder."""
    out = tmp_path_factory.mktemp("calibrated")
    overrides = [*SMALL_SYNTHETIC, *SHORT, "calibration=prior", "model.monitor=val/official_f1"]
    train(compose_config("train", overrides, out, cache_dir))
    return out


def best_of(run: Path) -> Path:
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    return best


def test_train_stores_the_fit_in_the_best_checkpoint_and_tests_with_it(calibrated_run: Path) -> None:
    ckpt = torch.load(best_of(calibrated_run), map_location="cpu", weights_only=True)
    stored = ckpt["ecg_lab"]["calibration"]
    assert stored["method"] == "prior" and len(stored["values"]) == 4
    assert stored["val_official_f1"] >= stored["val_official_f1_uncalibrated"]
    assert (
        "calibration"
        not in torch.load(calibrated_run / "checkpoints" / "last.ckpt", weights_only=True)["ecg_lab"]
    )
    results = json.loads((calibrated_run / "test_metrics.json").read_text())
    assert results["calibration"] == stored and results["ckpt_path"] == str(best_of(calibrated_run))
    # the fit's validation and the test restore the best checkpoint's callback states: the wall time
    # must not take that checkpoint's epochs for a resumed run's (it did, doubling it)
    status = json.loads((calibrated_run / "run_status.json").read_text())
    assert 0 < results["wall_time_s"] <= status["wall_time_s"]
    for key in ("official_f1", "F1_A", "record_confusion_matrix"):
        assert f"{key}_uncalibrated" in results
    with (calibrated_run / "csv" / "metrics.csv").open() as f:  # the fit's validation logs no epoch row
        assert sum(bool(row.get("val/official_f1")) for row in csv.DictReader(f)) == 2
    # the validation the fit ran on is the one that chose the checkpoint
    best_score = ckpt["callbacks"][next(k for k in ckpt["callbacks"] if k.startswith("BestCheckpoint"))]
    assert stored["val_official_f1_uncalibrated"] == pytest.approx(float(best_score["best_model_score"]))


def test_eval_applies_the_stored_calibration(calibrated_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config(
        "eval",
        [f"ckpt_path={best_of(calibrated_run)}", "callbacks.progress.interactive=false"],
        tmp_path,
        cache_dir,
    )
    evaluate(cfg)
    trained = json.loads((calibrated_run / "test_metrics.json").read_text())
    evaluated = json.loads((tmp_path / "test_metrics.json").read_text())
    for key in (
        "calibration",
        "official_f1",
        "official_f1_uncalibrated",
        "record_confusion_matrix",
        "record_confusion_matrix_uncalibrated",
    ):
        assert evaluated[key] == trained[key], key


def test_eval_fits_a_calibration_as_training_does(
    calibrated_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """``eval calibration=prior`` refits on the checkpoint's own validation recordings: the same fit and
    test scores as training's, for one checkpoint and for an ensemble; the checkpoint is not changed."""
    best = best_of(calibrated_run)
    before = best.read_bytes()
    trained = json.loads((calibrated_run / "test_metrics.json").read_text())
    for name, ckpt_path in (("one", str(best)), ("ensemble", f"[{best},{best}]")):
        out = tmp_path / name
        overrides = [f"ckpt_path={ckpt_path}", "calibration=prior", "trainer.limit_val_batches=2", SHORT[-1]]
        evaluate(compose_config("eval", overrides, out, cache_dir))
        evaluated = json.loads((out / "test_metrics.json").read_text())
        assert evaluated["calibration"]["values"] == pytest.approx(trained["calibration"]["values"]), name
        assert evaluated["record_confusion_matrix"] == trained["record_confusion_matrix"], name
        for key in ("official_f1", "official_f1_uncalibrated"):
            assert evaluated[key] == pytest.approx(trained[key]), (name, key)
    assert best.read_bytes() == before
    overrides = [f"ckpt_path={best}", "calibration=thresholds", "data=synthetic", "data.split=all"]
    with pytest.raises(ConfigError, match="calibration=thresholds is fitted on validation recordings"):
        evaluate(compose_config("eval", [*overrides, *SMALL_SYNTHETIC], tmp_path / "all", cache_dir))


def test_selection_follows_val_official_f1(calibrated_run: Path) -> None:
    ckpt = torch.load(best_of(calibrated_run), map_location="cpu", weights_only=True)
    monitors = {k.split("{")[0]: k for k in ckpt["callbacks"]}
    assert "'monitor': 'val/official_f1'" in monitors["BestCheckpoint"]
    assert "'monitor': 'val/official_f1'" in monitors["EarlyStopping"]
    with (calibrated_run / "metrics_history.csv").open() as f:
        scores = [float(row["val/official_f1"]) for row in csv.DictReader(f)]
    assert len(scores) == 2
    best_epoch = int(np.argmax(scores)) + 1  # the first of equal scores; names count epochs from 1
    assert best_of(calibrated_run).name == f"best-epoch{best_epoch:03d}.ckpt"
    state = ckpt["callbacks"][monitors["BestCheckpoint"]]
    assert float(state["best_model_score"]) == pytest.approx(max(scores))


# -- the edge runtime applies the exported calibration -------------------------------------------------
def test_the_edge_runtime_applies_the_exported_calibration(tmp_path: Path, cache_dir: Path) -> None:
    ckpt_path = write_checkpoint(tmp_path / "ckpt" / "best.ckpt", cache_dir, seed=0)
    ckpt = torch.load(ckpt_path, weights_only=True)
    calibration = {"method": "prior", "classes": list(CLASSES), "values": [0.0, 0.0, 0.0, 30.0]}
    ckpt["ecg_lab"]["calibration"] = calibration
    torch.save(ckpt, ckpt_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_export(ckpt_path, tmp_path / "export", cache_dir)
    finally:
        torch.set_num_threads(threads)
    config = json.loads((tmp_path / "export" / "cnn_lstm_config.json").read_text())
    assert config["calibration"] == calibration
    write_record(tmp_path / "records", "A00001", ecg_like(9000, 300, seed=3), fs=300)
    signal, fs = edge.read_recording(tmp_path / "records" / "A00001.mat")
    results = {}
    for backend in edge.BACKENDS:
        model = edge.EdgeModel(tmp_path / "export", backend)
        results[backend] = edge.classify(model, signal, fs)
        raw = edge.softmax(model.logits(edge.windows_of(model.config, signal, fs))).mean(0, keepdims=True)
        assert raw.argmax() != 3  # without the calibration this recording is not noisy
        probs, pred = edge.calibrated(raw, calibration)
        assert results[backend]["class"] == CLASSES[int(pred[0])] == "~"
        assert results[backend]["calibration"] == "prior"
        assert list(results[backend]["probabilities"].values()) == pytest.approx(probs[0].tolist(), abs=1e-4)
    assert results["torch"]["class"] == results["onnx"]["class"]
    for cls, p in results["torch"]["probabilities"].items():
        assert results["onnx"]["probabilities"][cls] == pytest.approx(p, abs=2e-4)
    # the calibration is covered by the config's checksum, and checked when damaged
    edited = shutil.copytree(tmp_path / "export", tmp_path / "edited")
    for change, message in (
        ({"values": [0.0, 0.0, 30.0, 0.0]}, "does not match the sha256"),
        ({"method": "temperature"}, "'calibration' is not a prior or thresholds calibration"),
    ):
        path = edited / "cnn_lstm_config.json"
        path.write_text(json.dumps(config | {"calibration": calibration | change}))
        with pytest.raises(ValueError, match=message):
            edge.EdgeModel(edited, "torch")
