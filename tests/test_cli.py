"""The entry points as a user runs them: run folders, wandb offline, eval from a checkpoint, multirun."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL_SYNTHETIC

TINY = [
    *SMALL_SYNTHETIC,
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def run(args: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env |= {"HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def cli_run(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> tuple[Path, subprocess.CompletedProcess]:
    """``python -m ecg_lab.train logger=wandb`` with no WANDB_* variables and no network."""
    tmp = tmp_path_factory.mktemp("cli")
    proc = run(
        [sys.executable, "-m", "ecg_lab.train", "logger=wandb", f"paths.cache_dir={cache_dir}", *TINY], tmp
    )
    return tmp, proc


def test_train_cli_makes_a_microsecond_run_folder(cli_run) -> None:
    tmp, proc = cli_run
    runs = list((tmp / "outputs").glob("2*/*"))  # not outputs/latest/*
    assert len(runs) == 1
    day, stamp = runs[0].parts[-2:]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day)
    assert re.fullmatch(r"\d{2}-\d{2}-\d{2}-\d{6}_train_cnn_lstm", stamp)
    assert (runs[0] / ".hydra" / "config.yaml").is_file() and (runs[0] / "test_metrics.json").is_file()
    assert "308,420 parameters" in proc.stdout
    assert re.search(r"^epoch 1/1 \(", proc.stdout, re.M)  # plain lines when not a terminal


def test_wandb_runs_offline_by_default_and_can_be_synced_later(cli_run) -> None:
    tmp, _ = cli_run
    offline = list((tmp / "outputs").glob("*/*/wandb/offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb"))  # the file `wandb sync` uploads


def test_eval_console_script_from_checkpoint(cli_run, cache_dir: Path) -> None:
    tmp, _ = cli_run
    ckpt = next((tmp / "outputs").glob("*/*/checkpoints/last.ckpt"))
    script = Path(sys.executable).parent / "ecg-lab-eval"
    assert script.is_file(), "console script not installed; run `make venv`"
    run([str(script), f"ckpt_path={ckpt}", f"paths.cache_dir={cache_dir}", "trainer=cpu"], tmp)
    evals = list(ckpt.parent.parent.glob("eval/*/test_metrics.json"))  # beside the checkpoint's run
    assert len(evals) == 1
    results = json.loads(evals[0].read_text())
    assert results["task_name"] == "eval" and results["n_params"] == 308_420


def test_multirun_subfolders_are_named_by_job_and_overrides(tmp_path: Path, cache_dir: Path) -> None:
    run(
        [
            sys.executable,
            "-m",
            "ecg_lab.train",
            "-m",
            "seed=1,2",
            "debug=fdr",
            f"paths.cache_dir={cache_dir}",
            *SMALL_SYNTHETIC,
        ],
        tmp_path,
    )
    jobs = sorted(p.name for p in (tmp_path / "multirun").glob("2*/*/*") if p.is_dir())  # not latest/
    assert len(jobs) == 2
    assert (
        jobs[0].startswith("0_") and "seed=1" in jobs[0] and jobs[1].startswith("1_") and "seed=2" in jobs[1]
    )
    assert "paths.cache_dir" not in jobs[0]


VERBS = ("train", "eval", "aggregate", "explain", "generate", "analyze", "export", "report")


def test_console_scripts_are_declared_for_every_verb() -> None:
    import importlib

    from ecg_lab.app import launch

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for verb in VERBS:
        assert scripts[f"ecg-lab-{verb}"] == f"ecg_lab.app.launch:{verb}"
        assert callable(getattr(launch, verb))
        assert callable(importlib.import_module(f"ecg_lab.{verb}").main)  # python -m ecg_lab.<verb>
