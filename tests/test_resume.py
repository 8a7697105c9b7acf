"""A run SIGKILLed mid-training and resumed from ``last.ckpt`` ends where an uninterrupted run ends: the
same test metrics, the same best epoch, every epoch's history once, one best checkpoint."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from ecg_lab.app.outputs import read_status
from ecg_lab.callbacks.resume import BestCheckpoint
from ecg_lab.sweeps.results import load_run
from tests.conftest import SMALL_SYNTHETIC
from tests.helpers import run_module

EPOCHS = 6
KILL = ["+callbacks.kill._target_=tests.helpers.KillAt", "+callbacks.kill.epoch=3", "+callbacks.kill.batch=1"]


def run_train(run_dir: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    args = [
        *SMALL_SYNTHETIC,
        "trainer=cpu",
        f"trainer.max_epochs={EPOCHS}",
        "callbacks.early_stopping.patience=2",
        "callbacks.progress.interactive=false",
        "threads=1",
        # no explained worst recordings in report.html: run_status.json's wall time, which the wall-time
        # check compares with, would include drawing them after the test
        "report.worst=0",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    return run_module("ecg_lab.train", args, run_dir.parent)


def outcome(run_dir: Path) -> dict[str, object]:
    """What must agree: the test metrics, the epochs trained and the best checkpoint's epoch."""
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    return {
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, float) and k != "wall_time_s"},
        "epochs": metrics["epochs"],
        "best": Path(metrics["ckpt_path"]).name,
    }


def history_epochs(path: Path) -> list[int]:
    with path.open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted run, and one killed in epoch 4 (index 3) of 6."""
    root = tmp_path_factory.mktemp("resume")
    cache = root / "cache"
    straight = run_train(root / "straight", cache)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run_train(root / "killed", cache, *KILL)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    return {"root": root, "cache": cache, "straight": root / "straight", "killed": root / "killed"}


def test_killed_run_is_reported_killed(runs: dict[str, Path]) -> None:
    status = read_status(runs["killed"])
    assert status is not None and status["status"] == "killed", status
    run = load_run(runs["killed"])
    assert run.status == "killed" and "is gone" in (run.error or "")
    assert torch.load(runs["killed"] / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


def test_resume_into_new_folder_ends_where_uninterrupted_run_ends(runs: dict[str, Path]) -> None:
    resumed_dir = runs["root"] / "resumed_elsewhere"
    last = runs["killed"] / "checkpoints" / "last.ckpt"
    resumed = run_train(resumed_dir, runs["cache"], f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outcome(resumed_dir) == outcome(runs["straight"])
    # the history of the epochs before the kill came along in the checkpoint
    assert history_epochs(resumed_dir / "metrics_history.csv") == history_epochs(
        runs["straight"] / "metrics_history.csv"
    )
    status = json.loads((resumed_dir / "run_status.json").read_text())
    assert status["status"] == "completed"
    assert status["resumed_from"]["status"] == "killed"
    # the wall time counts the killed process's epochs too: their time rides in the history rows
    with (resumed_dir / "metrics_history.csv").open() as f:
        times = [float(r["time_s"]) for r in csv.DictReader(f)]
    assert times == sorted(times) and times[0] > 0
    metrics = json.loads((resumed_dir / "test_metrics.json").read_text())
    # every epoch's time is inside the wall time, epochs 1-3 (run before the kill) included
    assert metrics["wall_time_s"] >= times[-1] > times[2]
    assert metrics["hardware"].startswith("cpu: ") and metrics["hardware"].endswith("1 thread")


def test_best_score_survives_a_resume_into_a_new_folder(runs: dict[str, Path], tmp_path: Path) -> None:
    """Lightning's ModelCheckpoint drops the best score when the folder changes, so the first epoch after
    resuming became "best" whatever its score; BestCheckpoint keeps it and carries the best file over."""
    ckpt = torch.load(runs["killed"] / "checkpoints" / "last.ckpt", weights_only=True)
    key, state = next((k, v) for k, v in ckpt["callbacks"].items() if k.startswith("BestCheckpoint"))
    assert state["best_model_score"] is not None
    callback = BestCheckpoint(dirpath=tmp_path, filename="best-epoch{epoch:03d}", monitor=state["monitor"])
    callback.load_state_dict(state)
    assert float(callback.best_model_score) == float(state["best_model_score"])
    carried = tmp_path / Path(state["best_model_path"]).name
    assert carried.is_file() and callback.best_model_path == str(carried)
    assert callback.best_k_models == {str(carried): state["best_model_score"]}
    stopping = next(v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping"))
    assert stopping["best_score"] is not None  # Lightning restores early stopping's state wherever


def test_resume_into_same_folder_keeps_history_and_one_best(runs: dict[str, Path]) -> None:
    """Resuming into the run's own folder (the second test: the first resumed elsewhere, read only)."""
    last = runs["killed"] / "checkpoints" / "last.ckpt"
    resumed = run_train(runs["killed"], runs["cache"], f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outcome(runs["killed"]) == outcome(runs["straight"])
    expected = history_epochs(runs["straight"] / "metrics_history.csv")
    assert history_epochs(runs["killed"] / "metrics_history.csv") == expected
    # Lightning's CSV log: the same rows per epoch as the uninterrupted run's, none twice
    logged = history_epochs(runs["killed"] / "csv" / "metrics.csv")
    assert logged == history_epochs(runs["straight"] / "csv" / "metrics.csv")
    bests = sorted(p.name for p in (runs["killed"] / "checkpoints").glob("best-*.ckpt"))
    assert bests == [outcome(runs["straight"])["best"]]
    status = json.loads((runs["killed"] / "run_status.json").read_text())
    assert status["status"] == "completed" and status["previous"]["status"] == "killed"
