"""Training on synthetic data end to end: fast_dev_run, a short real fit, eval and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecg_lab.app.checkpoints import model_from_checkpoint
from ecg_lab.eval import evaluate
from ecg_lab.train import train
from tests.conftest import compose_config

SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
]


def test_fast_dev_run(train_cfg) -> None:
    metrics = train(train_cfg("debug=fdr"))
    assert "test/f1" in metrics and 0.0 <= metrics["test/f1"] <= 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """One short training run shared by the tests below; returns its run folder."""
    from tests.conftest import SMALL_SYNTHETIC

    out = tmp_path_factory.mktemp("trained")
    cfg = compose_config(
        "train",
        ["trainer=cpu", *SMALL_SYNTHETIC, *SHORT, "callbacks.progress.interactive=false"],
        out,
        cache_dir,
    )
    train(cfg)
    return out


def test_run_folder_holds_everything(trained: Path) -> None:
    for name in (
        "checkpoints/last.ckpt",
        "test_metrics.json",
        "confusion_matrix.png",
        "training_curves.png",
        "metrics_history.csv",
        "split.csv",
        "csv/metrics.csv",
        "class_weights.json",
    ):
        assert (trained / name).is_file(), name
    assert list((trained / "checkpoints").glob("best-*.ckpt"))
    results = json.loads((trained / "test_metrics.json").read_text())
    for key in (
        "f1",
        "auroc",
        "acc",
        "official_f1",
        "F1_N",
        "F1_A",
        "F1_O",
        "sensitivity_A",
        "specificity_~",
        "confusion_matrix",
        "record_confusion_matrix",
        "n_params",
        "epochs",
    ):
        assert key in results, key
    assert results["n_params"] == 308_420 and len(results["confusion_matrix"]) == 4
    history = (trained / "metrics_history.csv").read_text().splitlines()
    assert len(history) == 3 and "train/f1" in history[0] and "val/f1" in history[0]


def test_checkpoint_carries_config_and_rebuilds_alone(trained: Path) -> None:
    ckpt_path = trained / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["ecg_lab"]["config"]["model"]["net"]["rnn_hidden"] == 128
    model, stored = model_from_checkpoint(ckpt_path)
    assert torch.equal(model.net.head.weight, ckpt["state_dict"]["net.head.weight"])
    assert (
        model.loss.weight.tolist() == ckpt["state_dict"]["loss.weight"].tolist()
    )  # class weights travel too
    assert stored.seed == 42


def test_eval_from_checkpoint_reproduces_test_metrics(trained: Path, tmp_path: Path, cache_dir: Path) -> None:
    best = next((trained / "checkpoints").glob("best-*.ckpt"))
    cfg = compose_config(
        "eval", [f"ckpt_path={best}", "callbacks.progress.interactive=false"], tmp_path, cache_dir
    )
    metrics = evaluate(cfg)
    train_results = json.loads((trained / "test_metrics.json").read_text())
    eval_results = json.loads((tmp_path / "test_metrics.json").read_text())
    assert metrics["f1"] == pytest.approx(train_results["f1"], abs=1e-6)
    assert eval_results["confusion_matrix"] == train_results["confusion_matrix"]
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_eval_split_all_on_a_folder(trained: Path, tmp_path: Path, cache_dir: Path) -> None:
    from tests.helpers import write_dataset

    folder = write_dataset(tmp_path / "heldback", {f"B{i:05d}": "NAO~"[i % 4] for i in range(8)}, n=3000)
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
            "data=physionet2017",
            f"data.root={folder}",
            "data.split=all",
            "callbacks.progress.interactive=false",
        ],
        tmp_path / "out",
        cache_dir,
    )
    evaluate(cfg)
    results = json.loads((tmp_path / "out" / "test_metrics.json").read_text())
    assert results["n_records"] == 8 and results["n_windows"] == 8 * 3 and results["split"] == "all"


def test_resume_continues_where_it_stopped(trained: Path, train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(
        *SHORT,
        "trainer.max_epochs=3",
        f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
        output_dir=tmp_path / "resumed",
    )
    train(cfg)
    history = (tmp_path / "resumed" / "metrics_history.csv").read_text().splitlines()
    # only the third epoch ran; the first two rows came along in the checkpoint
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]
    assert history[1:3] == (trained / "metrics_history.csv").read_text().splitlines()[1:3]
    ckpt = torch.load(
        tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 3 * 4
    # the resumed run trains on its checkpoint's split, read back from it
    assert (tmp_path / "resumed" / "split.csv").read_text() == (trained / "split.csv").read_text()


def test_missing_ckpt_path_is_a_clear_error(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("eval", [f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path, cache_dir)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        evaluate(cfg)
