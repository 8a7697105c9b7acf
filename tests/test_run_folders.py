"""Run folders and a console a person can navigate (issue 14, point 6): folder names that carry the task
and model, eval and export beside the checkpoint's run, ``latest`` links, a sweep that prints its folder,
``threads`` in every app, one epoch numbering, and a quiet console."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ecg_lab.app.environment import NotFileOnly, quiet_known_noise, trim_model_summary
from ecg_lab.app.run_folders import RunFolders, export_dir, point_latest, run_name
from ecg_lab.callbacks.progress import log_to_file
from ecg_lab.callbacks.resume import BestCheckpoint
from tests.conftest import REPO, SMALL_SYNTHETIC
from tests.helpers import run_module

STAMP = r"\d{2}-\d{2}-\d{2}-\d{6}"
DAY_STAMP = r"\d{4}-\d{2}-\d{2}_" + STAMP
APPS = sorted(p.stem for p in (REPO / "conf").glob("*.yaml"))


def hydra_config(name: str, overrides: list[str], job_name: str | None = None) -> DictConfig:
    """``conf/<name>.yaml`` composed with its Hydra node, as ``python -m ecg_lab.<job_name>`` sees it."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../conf", job_name=job_name or name):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=overrides)
    HydraConfig().set_config(cfg)
    return cfg


# -- folder names ---------------------------------------------------------------------------------------
def test_run_name_carries_task_and_model_once() -> None:
    assert run_name("train", "gru") == "train_gru"
    assert run_name("eval", None) == run_name("eval", "None") == "eval"
    assert run_name("physionet2017_cnn_lstm", "cnn_lstm") == "physionet2017_cnn_lstm"
    assert run_name("lstm_vae", "lstm_vae") == "lstm_vae"


def test_run_and_sweep_folders_carry_the_task_and_model() -> None:
    cfg = hydra_config("train", ["model=gru"])
    assert re.fullmatch(rf"outputs/\d{{4}}-\d{{2}}-\d{{2}}/{STAMP}_train_gru", str(cfg.hydra.run.dir))
    assert re.fullmatch(rf"multirun/\d{{4}}-\d{{2}}-\d{{2}}/{STAMP}_train", str(cfg.hydra.sweep.dir))
    cfg = hydra_config("generate", ["ckpt_path=x.ckpt"])
    assert re.fullmatch(rf"outputs/\d{{4}}-\d{{2}}-\d{{2}}/{STAMP}_generate", str(cfg.hydra.run.dir))


def test_eval_and_export_run_beside_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "best-epoch003.ckpt"
    cfg = hydra_config("eval", [f"ckpt_path={ckpt}"])
    assert re.fullmatch(rf"{tmp_path}/run/eval/{DAY_STAMP}", str(cfg.hydra.run.dir))
    cfg = hydra_config("export", [f"ckpt_path={ckpt}"])
    run_dir = Path(str(cfg.hydra.run.dir))
    assert re.fullmatch(rf"{tmp_path}/run/export_runs/{DAY_STAMP}", str(run_dir))
    assert export_dir(str(ckpt), run_dir) == tmp_path / "run" / "export"  # the folder the README names
    # hydra.run.dir elsewhere, an ensemble, a file outside a checkpoints/ folder: a run folder of its own
    assert export_dir(str(ckpt), tmp_path / "elsewhere") == tmp_path / "elsewhere" / "export"
    ensemble = f"ckpt_path=[{ckpt},{tmp_path / 'other' / 'checkpoints' / 'last.ckpt'}]"
    assert re.fullmatch(
        rf"outputs/\d{{4}}-\d{{2}}-\d{{2}}/{STAMP}_eval", str(hydra_config("eval", [ensemble]).hydra.run.dir)
    )
    loose = f"ckpt_path={tmp_path / 'model.ckpt'}"
    assert str(hydra_config("export", [loose]).hydra.run.dir).startswith("outputs/")


# -- latest links ---------------------------------------------------------------------------------------
def test_latest_link_is_relative_and_replaced(tmp_path: Path) -> None:
    first, second = tmp_path / "2026-01-01" / "a_train", tmp_path / "2026-01-02" / "b_train"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    link = point_latest(tmp_path, first)
    assert link == tmp_path / "latest" and os.readlink(link) == "2026-01-01/a_train"
    point_latest(tmp_path, second)
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2026-01-01",
        "2026-01-02",
        "latest",
    ]  # no temp link
    assert point_latest(tmp_path / "2026-01-01", second) is None  # a run elsewhere leaves it alone


def test_latest_is_skipped_where_it_cannot_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()  # someone's own folder
    assert point_latest(tmp_path, tmp_path / "run") is None and (tmp_path / "latest").is_dir()
    assert not (tmp_path / "latest").is_symlink()


# -- a sweep says where it went ---------------------------------------------------------------------------
def test_multirun_prints_its_folder_and_report_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        hydra_config("train", []).hydra.callbacks.run_folders._target_ == "ecg_lab.app.run_folders.RunFolders"
    )
    sweep = tmp_path / "multirun" / "2026-11-30" / "10-00-00-000001_train"
    cfg = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(sweep)}}, "paths": {"multirun_dir": str(tmp_path / "multirun")}}
    )
    callback = RunFolders()
    callback.on_multirun_start(cfg)
    assert (tmp_path / "multirun" / "latest").resolve() == sweep.resolve()
    callback.on_multirun_end(cfg)
    out = capsys.readouterr().out
    assert f"sweep folder: {sweep}" in out and f"make report RUNS={sweep}" in out


# -- threads ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("app", APPS)
def test_every_app_config_accepts_threads(app: str) -> None:
    assert hydra_config(app, ["threads=1"]).threads == 1


# -- epochs counted from 1 --------------------------------------------------------------------------------
def test_best_checkpoint_names_count_epochs_from_one(tmp_path: Path) -> None:
    callback = BestCheckpoint(
        dirpath=tmp_path, filename="best-epoch{epoch:03d}", auto_insert_metric_name=False
    )
    name = callback.format_checkpoint_name({"epoch": torch.tensor(44), "step": torch.tensor(9)})
    assert Path(name).name == "best-epoch045.ckpt"  # Lightning's epoch 44 is the 45th


# -- a quiet console, a complete log file -----------------------------------------------------------------
SUMMARY = """
  | Name | Type | Params | Mode  | FLOPs
-----------------------------------------
0 | net  | CRNN | 308 K  | train | 0    
-----------------------------------------
308 K     Trainable params
47        Modules in train mode
0         Modules in eval mode
0         Total Flops"""


def test_model_summary_loses_meaningless_columns_and_lines() -> None:
    trimmed = trim_model_summary(SUMMARY)
    assert "FLOPs" not in trimmed and "Mode" not in trimmed and "Modules in" not in trimmed
    assert "Total Flops" not in trimmed and "308 K     Trainable params" in trimmed
    assert "0 | net  | CRNN | 308 K" in trimmed.splitlines()


def test_file_only_lines_skip_the_console(caplog: pytest.LogCaptureFixture) -> None:
    quiet_known_noise()
    with caplog.at_level(logging.INFO):
        log_to_file("epoch 1/2 (0.1s)")
        logging.getLogger("pytorch_lightning.utilities.rank_zero").info(
            "TPU available: False, using: 0 TPU cores"
        )
    assert [r.getMessage() for r in caplog.records] == ["epoch 1/2 (0.1s)"]
    assert not NotFileOnly().filter(caplog.records[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, Path, str, str]:
    """A 2-epoch ``python -m ecg_lab.train`` in ``<tmp>/outputs`` (no hydra.run.dir): the log folder, the
    run folder, stdout and stderr."""
    tmp = tmp_path_factory.mktemp("folders")
    args = [f"paths.log_dir={tmp / 'outputs'}", f"paths.cache_dir={cache_dir}", *SMALL_SYNTHETIC]
    proc = run_module("ecg_lab.train", [*args, "trainer=cpu", "trainer.max_epochs=2", "threads=1"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp / "outputs").glob("2*/*"))
    assert len(runs) == 1
    return tmp / "outputs", runs[0], proc.stdout, proc.stderr


def test_train_folder_name_and_latest_link(trained: tuple[Path, Path, str, str]) -> None:
    outputs, run, _, _ = trained
    assert re.fullmatch(rf"{STAMP}_train_cnn_lstm", run.name)
    assert (outputs / "latest").is_symlink() and (outputs / "latest").resolve() == run.resolve()


def test_one_epoch_numbering_in_console_log_and_checkpoint(trained: tuple[Path, Path, str, str]) -> None:
    _, run, stdout, stderr = trained
    logged = re.findall(r"\] - (epoch \d/2 .*)$", (run / "train.log").read_text(), re.M)
    assert [line.split()[1] for line in logged] == ["1/2", "2/2"]  # one plain line per epoch
    printed = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(" (")[0] for line in printed] == ["epoch 1/2", "epoch 2/2"]  # once each, not twice
    with (run / "metrics_history.csv").open() as f:
        rows = list(csv.DictReader(f))
    scores = [float(r["val/f1"]) for r in rows]
    best = scores.index(max(scores))  # the first of equal scores: a later one must beat it
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # Lightning's index, as csv/metrics.csv has it
    assert f"val/f1={scores[best]:.4f}" in logged[best] and logged[best].startswith(f"epoch {best + 1}/2")
    assert [p.name for p in (run / "checkpoints").glob("best-*.ckpt")] == [f"best-epoch{best + 1:03d}.ckpt"]
    for noise in (
        "Total Flops",
        "Modules in train mode",
        "FLOPs",
        "Trainer already configured",
        "TPU available",
    ):
        assert noise not in stderr + stdout, noise


def test_eval_writes_beside_the_checkpoint(trained: tuple[Path, Path, str, str], cache_dir: Path) -> None:
    outputs, run, _, _ = trained
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    args = [f"ckpt_path={ckpt}", f"paths.log_dir={outputs}", f"paths.cache_dir={cache_dir}", "threads=1"]
    proc = run_module("ecg_lab.eval", args, outputs.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = list((run / "eval").glob("*/test_metrics.json"))
    assert len(evals) == 1 and re.fullmatch(DAY_STAMP, evals[0].parent.name)
    assert (outputs / "latest").resolve() == evals[0].parent.resolve()
    assert list(outputs.glob("2*/*")) == [run]  # no new dated folder


def test_report_skips_the_export_app_runs_beside_a_run(tmp_path: Path) -> None:
    from ecg_lab.sweeps.results import find_runs

    for folder in (tmp_path / "run", tmp_path / "run" / "export_runs" / "2026-11-30_10-00-00-000001"):
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("task_name: x\n")
    assert [r.path for r in find_runs([tmp_path])] == [tmp_path / "run"]  # an export log is not a result


def test_explain_runs_beside_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = hydra_config("explain", [f"ckpt_path={ckpt}"])
    assert re.fullmatch(rf"{tmp_path}/run/explain/{DAY_STAMP}", str(cfg.hydra.run.dir))
