"""A diverged run is a failed run, and a run folder says whether its process is alive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ecg_lab.app.outputs import RunFolderInUseError, RunOutputs, read_status
from ecg_lab.callbacks.finite import NonFiniteError, StopOnNonFinite
from ecg_lab.sweeps.results import find_runs, write_report
from ecg_lab.train import train


def test_diverged_run_fails_and_is_reported_failed(train_cfg, tmp_path: Path) -> None:
    """lr=1e30 trained on NaN losses, ended "completed" and reported test F1 0.333, ranked above
    healthy runs; now the first NaN loss stops it as failed, naming the learning rate."""
    cfg = train_cfg("trainer.max_epochs=1", "model.optimizer.lr=1e30")
    with pytest.raises(NonFiniteError, match=r"model\.optimizer\.lr \(now 1e\+30\)"):
        train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["status"] == "failed" and "diverged" in status["error"]
    assert not (run_dir / "test_metrics.json").exists()
    (run_dir / ".hydra").mkdir(exist_ok=True)  # what a Hydra app leaves; the report reads it
    (run_dir / ".hydra" / "config.yaml").write_text("model_name: cnn_lstm\nseed: 42\n")
    runs = find_runs([tmp_path])
    assert [r.status for r in runs] == ["failed"]
    table = write_report(runs, tmp_path / "report")["markdown"].read_text()
    assert "failed" in table and "diverged" in table


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_batch_stops_training(bad: float) -> None:
    x = torch.zeros(4, 1, 100)
    x[2, 0, 7] = bad
    trainer = SimpleNamespace(current_epoch=1, global_step=9)
    guard = StopOnNonFinite()
    guard.on_train_batch_start(trainer, None, (torch.zeros(4, 1, 100), torch.zeros(4)), 0)  # finite: fine
    with pytest.raises(NonFiniteError, match="training batch at epoch 2, batch 4.*1 non-finite input values"):
        guard.on_train_batch_start(trainer, None, (x, torch.zeros(4)), 3)
    with pytest.raises(NonFiniteError, match="validation batch"):
        guard.on_validation_batch_start(trainer, None, (x, torch.zeros(4)), 0)


def test_status_of_a_killed_process_reads_killed(tmp_path: Path) -> None:
    """A run whose process died without ending its status (SIGKILL, power cut) is killed, not running."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    outputs = RunOutputs(tmp_path)
    outputs.started("train", [])
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert read_status(tmp_path)["status"] == "running"  # this process is alive
    status["pid"] = int(child.stdout)  # a process that has exited
    (tmp_path / "run_status.json").write_text(json.dumps(status))
    killed = read_status(tmp_path)
    assert killed["status"] == "killed" and f"process {child.stdout.strip()} is gone" in killed["error"]
    # the next run in that folder records it
    again = RunOutputs(tmp_path)
    again.started("train", [])
    assert json.loads((tmp_path / "run_status.json").read_text())["previous"]["status"] == "killed"


def test_a_live_run_folder_is_not_taken_over(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        outputs = RunOutputs(tmp_path)
        outputs.started("train", [])
        status = json.loads((tmp_path / "run_status.json").read_text())
        (tmp_path / "run_status.json").write_text(json.dumps({**status, "pid": sleeper.pid}))
        with pytest.raises(RunFolderInUseError, match=f"process {sleeper.pid} is still running"):
            RunOutputs(tmp_path).started("train", [])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.exists(tmp_path / "run_status.json")


def test_a_resumed_run_keeps_the_configured_patience() -> None:
    """Resuming with callbacks.early_stopping.patience=20 must not silently keep the checkpoint's 10
    (Lightning's EarlyStopping restores it); the wait count and best score do come back, under
    Lightning's state key, so checkpoints written with either class resume."""
    from pytorch_lightning.callbacks import EarlyStopping

    from ecg_lab.callbacks.resume import ConfiguredEarlyStopping

    old = EarlyStopping(monitor="val/f1", mode="max", patience=10)
    old.wait_count, old.best_score = 4, torch.tensor(0.75)
    resumed = ConfiguredEarlyStopping(monitor="val/f1", mode="max", patience=20)
    assert resumed.state_key == old.state_key
    resumed.load_state_dict(old.state_dict())
    assert resumed.patience == 20 and resumed.wait_count == 4 and float(resumed.best_score) == 0.75


def test_training_time_of_a_resumed_checkpoint(tmp_path: Path) -> None:
    """The history's time_s rides in the checkpoint, so a resumed run's wall time counts the earlier
    processes; a checkpoint whose rows carry no time makes it unknown (null), never a silent undercount."""
    from ecg_lab.callbacks.history import MetricsHistory
    from ecg_lab.train import wall_time

    trainer = SimpleNamespace(callbacks=[MetricsHistory(tmp_path)])
    history = trainer.callbacks[0]
    history.load_state_dict({"rows": [{"epoch": 0.0, "step": 5.0, "time_s": 30.0}]})
    assert history.resumed_s == 30.0 and wall_time(2.0, trainer) == 32.0
    history.load_state_dict({"rows": [{"epoch": 0.0, "step": 5.0}]})
    assert history.resumed_s is None and wall_time(2.0, trainer) is None
    assert wall_time(2.0, SimpleNamespace(callbacks=[MetricsHistory(tmp_path)])) == 2.0
    # validating or testing a checkpoint restores callback states too (Lightning calls setup first):
    # the best checkpoint's rows must not become a resumed run's time (it doubled test_metrics.json's)
    fresh = MetricsHistory(tmp_path)
    fresh.setup(None, None, "validate")  # type: ignore[arg-type]
    fresh.load_state_dict({"rows": [{"epoch": 0.0, "step": 5.0, "time_s": 30.0}]})
    assert fresh.rows == [] and fresh.resumed_s == 0.0
