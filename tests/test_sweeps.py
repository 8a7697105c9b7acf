"""Sweeps as a user launches them: joblib in parallel with a failing job, SLURM, Optuna, wandb groups.

Every job is tiny. The tiny settings live in a primary config written to a temporary folder
(``-cd <tmp> -cn tiny``, which extends ``conf/train.yaml``) rather than on the command line: as
overrides they would all go into each job's folder name and wandb run name (both from
``hydra.job.override_dirname``), which the tests check exactly.
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from ecg_lab import report
from ecg_lab.classification.variants import model_names
from tests.conftest import REPO, SMALL_SYNTHETIC

TINY_SETTINGS = [
    *SMALL_SYNTHETIC,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks.progress.interactive=false",
]
OPTUNA_KEYS = {
    "model.optimizer.lr",
    "model.optimizer.weight_decay",
    "model.net.dropout",
    "model.net.rnn_hidden",
}


@pytest.fixture(scope="module")
def tiny_conf(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A folder with ``tiny.yaml``: ``train`` with trainer=cpu, SMALL_SYNTHETIC and a few batches."""
    folder = tmp_path_factory.mktemp("tiny_conf")
    settings = OmegaConf.to_container(
        OmegaConf.from_dotlist([*TINY_SETTINGS, f"paths.cache_dir={cache_dir}"])
    )
    text = yaml.safe_dump({"defaults": ["train", {"override /trainer": "cpu"}, "_self_"], **settings})
    (folder / "tiny.yaml").write_text(text)
    return folder


def train_cmd(tiny_conf: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ecg_lab.train", "-cd", str(tiny_conf), "-cn", "tiny", *args]


def run(args: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run in ``cwd`` with HOME there, no WANDB_* variables from outside (but ``env``'s)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    full_env |= {"HOME": str(cwd), "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def status(job: Path) -> dict[str, Any]:
    return json.loads((job / "run_status.json").read_text())


def jobs_in(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")}


# -- 1. joblib: two jobs at a time, one seed that fails inside the task -------------------------------


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_conf: Path):
    """6 jobs, 2 at a time; seed=-1 composes but pl.seed_everything raises in the task."""
    tmp = tmp_path_factory.mktemp("joblib")
    sweep = tmp / "sweep"
    args = ["-m", "hydra/launcher=joblib_cpu", "hydra.launcher.n_jobs=2", "threads=1"]
    args += ["model=cnn_only,gru", "seed=1,2,-1", f"hydra.sweep.dir={sweep}"]
    proc = run(train_cmd(tiny_conf, *args), tmp, check=False)
    return sweep, proc


def test_joblib_sweep_fails_after_the_batch_but_every_other_job_finishes(joblib_sweep) -> None:
    sweep, proc = joblib_sweep
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Joblib.Parallel(n_jobs=2," in out and "is launching 6 jobs" in out
    assert "ValueError: -1 is not in bounds" in proc.stderr  # Hydra re-raises the job's error at the end
    jobs = jobs_in(sweep)
    # folder names carry the sweep's overrides, not threads (hydra.job.config.override_dirname.exclude_keys)
    assert sorted(jobs) == [
        "0_model=cnn_only,seed=1",
        "1_model=cnn_only,seed=2",
        "2_model=cnn_only,seed=-1",
        "3_model=gru,seed=1",
        "4_model=gru,seed=2",
        "5_model=gru,seed=-1",
    ], sorted(jobs)
    for name, job in jobs.items():
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert "threads=1" in overrides  # applied to the job, just not in its name
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["threads"] == 1
        if name.endswith("seed=-1"):
            st = status(job)
            assert st["status"] == "failed" and st["ended"], st
            assert st["error"] == "ValueError: -1 is not in bounds, numpy accepts from 0 to 4294967295"
            assert not (job / "test_metrics.json").exists()
        else:
            assert status(job)["status"] == "completed", name
            metrics = json.loads((job / "test_metrics.json").read_text())
            assert metrics["model_name"] == name.split("model=")[1].split(",")[0]
            assert metrics["seed"] == int(name.rsplit("=", 1)[1])


def test_report_over_the_joblib_sweep(joblib_sweep, capsys: pytest.CaptureFixture) -> None:

    sweep, _ = joblib_sweep
    assert report.main([str(sweep)]) == 0
    assert "6 run folders (4 completed)" in capsys.readouterr().out
    with (sweep / "results_table.csv").open(newline="") as fh:
        rows = {r["configuration"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["cnn_only", "gru"]  # seeds (and threads) grouped into one row per model
    for row in rows.values():
        assert (row["n_runs"], row["n_failed"], row["seeds"]) == ("2", "1", "1 2")
        assert 0.0 <= float(row["f1_mean"]) <= 1.0 and row["f1_std"] != ""
    md = (sweep / "results_table.md").read_text()
    assert md.count("| 2 (+1 failed) | 1 2 |") == 2
    failed = md.split("## Failed runs", 1)[1]
    for name in ("2_model=cnn_only,seed=-1", "5_model=gru,seed=-1"):
        assert re.search(
            rf"- `[^`]*/{re.escape(name)}` \(`\w+`, failed\): ValueError: -1 is not in bounds", failed
        )
    assert (sweep / "results_f1.png").is_file() and (sweep / "validation_curves.png").is_file()


# -- 2. SLURM: the launcher config and the sbatch script it would submit ------------------------------


class _Submitted(Exception):
    """Raised instead of calling sbatch."""


def test_slurm_launcher_renders_its_sbatch_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hydra
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from submitit.core.utils import DelayedSubmission

    from ecg_lab.app.config import CONFIG_DIR

    sweep = tmp_path / "sweep"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                "train", ["hydra/launcher=slurm", f"hydra.sweep.dir={sweep}"], return_hydra_config=True
            )
    finally:
        GlobalHydra.instance().clear()
    target = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert cfg.hydra.launcher._target_ == target
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    assert type(launcher).__module__ + "." + type(launcher).__name__ == target
    assert launcher.params["setup"] == ["export OMP_NUM_THREADS=8"]  # interpolation resolved
    assert launcher.params["submitit_folder"] == f"{sweep}/.submitit/%j"

    # the launcher's own launch(): its parameter renaming, submitit's array pickles and sbatch text;
    # no srun here, and the submission stops where sbatch would be called
    scripts: list[str] = []

    def no_sbatch(self: Any, path: Path) -> list[str]:
        scripts.append(Path(path).read_text())
        raise _Submitted

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit.SlurmExecutor, "_make_submission_command", no_sbatch)
    launcher.setup(hydra_context=None, task_function=_task, config=cfg)
    with pytest.raises(_Submitted):
        launcher.launch([["model=gru", "seed=1"], ["model=gru", "seed=2"]], initial_job_idx=0)
    assert len(scripts) == 1  # one array job
    script = scripts[0]
    lines = script.splitlines()
    for flag in (
        "--array=0-1%2",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--time=240",
        "--job-name=train",
        "--mem=32GB",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--signal=USR2@120",
        f"--output={sweep}/.submitit/%A_%a/%A_%a_0_log.out",
    ):
        assert f"#SBATCH {flag}" in lines, (flag, script)
    assert not any(line.startswith("#SBATCH --partition") for line in lines)  # partition: null
    assert lines.index("export OMP_NUM_THREADS=8") < next(i for i, li in enumerate(lines) if "srun" in li)
    assert f"-m submitit.core._submit {sweep}/.submitit/%j" in script

    pickles = sorted((sweep / ".submitit").glob("*.pkl"))
    assert len(pickles) == 2
    submitted = sorted((DelayedSubmission.load(p) for p in pickles), key=lambda d: d.args[2])
    assert [d.args[:3] for d in submitted] == [
        (["model=gru", "seed=1"], "hydra.sweep.dir", 0),
        (["model=gru", "seed=2"], "hydra.sweep.dir", 1),
    ]
    assert type(submitted[0].function).__name__ == "SlurmLauncher"


def _task(cfg: Any) -> None:  # pragma: no cover - pickled, never run
    return None


# -- 3. Optuna ---------------------------------------------------------------------------------------


def test_optuna_search_records_the_best_trial(tmp_path: Path, tiny_conf: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1"]
    args += ["trainer.max_epochs=2", f"hydra.sweep.dir={sweep}"]  # no -m: the config sets MULTIRUN
    run(train_cmd(tiny_conf, *args), tmp_path)

    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == OPTUNA_KEYS
    assert 1e-5 <= result["best_params"]["model.optimizer.lr"] <= 1e-2
    assert result["best_params"]["model.net.rnn_hidden"] in (32, 64, 128, 256)

    # each trial returns optimized_metric (= model.monitor = val/f1) from trainer.callback_metrics after
    # fit: the value of the last validation epoch, i.e. the last row of metrics_history.csv
    trials = jobs_in(sweep)
    assert len(trials) == 2
    values: dict[str, float] = {}
    params: dict[str, dict[str, Any]] = {}
    for name, trial in trials.items():
        assert status(trial)["status"] == "completed"
        cfg = yaml.safe_load((trial / ".hydra" / "config.yaml").read_text())
        assert (
            cfg["optimized_metric"] in ("${model.monitor}", "val/f1") and cfg["model"]["monitor"] == "val/f1"
        )
        with (trial / "metrics_history.csv").open(newline="") as fh:
            history = list(csv.DictReader(fh))
        assert [int(r["epoch"]) for r in history] == [0, 1]
        values[name] = float(history[-1]["val/f1"])
        overrides = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        params[name] = {
            k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides) if k in OPTUNA_KEYS
        }
    assert result["best_value"] == pytest.approx(max(values.values()), rel=1e-9)  # direction: maximize
    best = [n for n, v in values.items() if v == pytest.approx(result["best_value"], rel=1e-9)]
    assert any(params[n] == result["best_params"] for n in best), (result, params)


# -- 4. wandb in a multirun --------------------------------------------------------------------------


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``run-*.wandb`` file (LevelDB log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), "not a wandb transaction log"
    records, pos, buf = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the block end
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full, first | middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records


def test_wandb_runs_of_a_sweep_share_its_group_and_are_named_by_overrides(
    tmp_path: Path, tiny_conf: Path
) -> None:
    run(
        train_cmd(tiny_conf, "-m", "logger=wandb", "model=cnn_only", "seed=1,2"),
        tmp_path,
        WANDB_MODE="offline",
    )
    (sweep,) = (p for p in (tmp_path / "multirun").glob("*/*") if p.parts[-2] != "latest")
    day, stamp = sweep.parts[-2:]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) and re.fullmatch(r"\d{2}-\d{2}-\d{2}-\d{6}_train", stamp)
    assert (tmp_path / "multirun" / "latest").resolve() == sweep.resolve()
    jobs = jobs_in(sweep)
    assert sorted(jobs) == ["0_logger=wandb,model=cnn_only,seed=1", "1_logger=wandb,model=cnn_only,seed=2"]
    for name, job in jobs.items():
        assert status(job)["status"] == "completed"
        (offline,) = (job / "wandb").glob("offline-run-*")  # one run per job, in its own folder
        (log,) = offline.glob("run-*.wandb")
        records = wandb_records(log)
        kinds = [r.WhichOneof("record_type") for r in records]
        (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert info.run_group == f"{day}_{stamp}"  # ${sweep_group:}
        assert info.display_name == name.split("_", 1)[1]  # ${job_name:...}: the job's override_dirname
        assert info.project == "ecg_lab" and info.job_type == "train"
        exits = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
        assert len(exits) == 1 and exits[0].exit_code == 0  # wandb.finish() ran
        assert "summary" in kinds and "history" in kinds


def test_make_ablation_runs_all_twelve_models_and_the_report_has_a_row_each(
    tmp_path: Path, tiny_conf: Path
) -> None:
    sweep = tmp_path / "ablation"
    args = f"-cd {tiny_conf} -cn tiny hydra.sweep.dir={sweep} trainer.limit_train_batches=1"
    run(["make", "-C", str(REPO), "ablation", f"ARGS={args}"], tmp_path)
    jobs = jobs_in(sweep)
    models = model_names()
    assert len(models) == 12 and sorted(j.split("model=")[1].split(",")[0] for j in jobs) == models
    assert all(status(job)["status"] == "completed" for job in jobs.values())
    assert report.main([str(sweep)]) == 0
    with (sweep / "results_table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["model"] for r in rows) == models and all(r["n_failed"] == "0" for r in rows)
