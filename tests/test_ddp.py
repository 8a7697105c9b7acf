"""trainer=ddp under Hydra: two CPU processes (gloo), one run folder, metrics reduced across ranks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest

from tests.conftest import SMALL_SYNTHETIC, compose_config

BATCH, TEST_BATCHES, RANKS = 16, 2, 2


def ddp_args(cache_dir: Path) -> list[str]:
    """Small synthetic data, two CPU ranks, a few batches."""
    return [
        *SMALL_SYNTHETIC,
        f"data.batch_size={BATCH}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"trainer.devices={RANKS}",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        f"trainer.limit_test_batches={TEST_BATCHES}",
        "callbacks.progress.interactive=false",
        f"paths.cache_dir={cache_dir}",
    ]


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "LOCAL_RANK"))}
    env |= {"HOME": str(cwd), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ecg_lab.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ddp_two_cpu_processes_share_one_run_folder(tmp_path: Path, cache_dir: Path) -> None:
    proc = run_train([*ddp_args(cache_dir), "trainer.max_epochs=2"], tmp_path)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr

    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder, got {runs}"
    run = runs[0]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(ckpts) == 2 and ckpts[0].startswith("best-epoch") and ckpts[1] == "last.ckpt"
    assert len(list(run.rglob("metrics.csv"))) == 1  # rank 0's logger only
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train_ddp_process_1.log").is_file()
    assert json.loads((run / "run_status.json").read_text())["status"] == "completed"

    # the test set is split between the ranks (DistributedSampler pads it to a multiple of RANKS);
    # the report counts the windows of both, gathered on rank 0
    cfg = compose_config("train", SMALL_SYNTHETIC, tmp_path / "count", cache_dir)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    n_test = len(dm.datasets["test"])
    assert n_test <= RANKS * TEST_BATCHES * BATCH  # the limit does not cut the test set
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["n_windows"] == RANKS * math.ceil(n_test / RANKS)
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n_windows"]
    assert metrics["n_records"] == int(np.sum(dm.record_split == "test"))
    # and "test metrics written" once: only rank 0 writes reports
    assert (proc.stdout + proc.stderr).count("test metrics written") == 1


@pytest.mark.slow
def test_ddp_in_a_sequential_multirun_keeps_each_job_in_its_folder(tmp_path: Path, cache_dir: Path) -> None:
    """Lightning re-runs the command line for rank 1: in a multirun it must be the job, not the sweep."""
    proc = run_train(["-m", "model=cnn_only,gru", *ddp_args(cache_dir), "trainer.max_epochs=1"], tmp_path)
    assert (proc.stdout + proc.stderr).count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    assert not (tmp_path / "outputs").exists()  # no stray single-run folder from a rank
    jobs = sorted(p for p in (tmp_path / "multirun").glob("*/*/*") if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    for job in jobs:
        assert json.loads((job / "run_status.json").read_text())["status"] == "completed"
        assert (job / "train_ddp_process_1.log").is_file() and (job / "test_metrics.json").is_file()
