"""Run folders a person can navigate: names that carry the task (and model), evaluations and exports
beside the checkpoint's run, ``outputs/latest`` and ``multirun/latest``, and a sweep that says where it
went and how to report on it."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig

log = logging.getLogger(__name__)

LATEST = "latest"


def run_name(task: str, model: str | None = None) -> str:
    """The name part of a run folder: ``<task>_<model>``, or ``<task>`` when no model is set or the task
    already names it (``physionet2017_cnn_lstm``); resolver ``${run_name:...}``."""
    name, model = str(task), str(model or "")
    if model and model != "None" and name != model and not name.endswith(f"_{model}"):
        name = f"{name}_{model}"
    return name.replace("/", "-").replace(os.sep, "-")


def checkpoint_run_dir(ckpt_path: Any) -> Path | None:
    """The run folder of a checkpoint ``<run>/checkpoints/<file>.ckpt``; None for anything else (no
    checkpoint, an ensemble's several, a file elsewhere)."""
    if isinstance(ckpt_path, list | tuple | ListConfig):
        ckpt_path = ckpt_path[0] if len(ckpt_path) == 1 else None
    if not ckpt_path:
        return None
    path = Path(str(ckpt_path)).expanduser()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def beside_checkpoint(ckpt_path: Any, subdir: str, fallback: str) -> str:
    """``<checkpoint's run folder>/<subdir>`` when ``ckpt_path`` is one checkpoint of a run folder, else
    ``fallback`` (resolver ``${beside_checkpoint:...}``, used by ``conf/hydra/beside_checkpoint.yaml``)."""
    run_dir = checkpoint_run_dir(ckpt_path)
    return str(run_dir / subdir) if run_dir is not None else str(fallback)


def point_latest(parent: str | Path, target: str | Path) -> Path | None:
    """Make ``<parent>/latest`` a relative symlink to ``target`` when ``target`` lies inside ``parent``;
    swapped in atomically (rename over the old link). Skipped silently where symlinks are impossible,
    ``target`` is elsewhere or ``latest`` is not a link; returns the link when made."""
    parent, target = Path(parent).absolute(), Path(target).absolute()
    if parent not in target.parents:
        return None
    link, tmp = parent / LATEST, parent / f".{LATEST}.{os.getpid()}"
    try:
        if link.exists() and not link.is_symlink():
            return None  # a real folder someone named latest: not ours to replace
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, parent), tmp, target_is_directory=True)
        os.replace(tmp, link)
    except (OSError, NotImplementedError) as err:
        log.debug("no %s link in %s: %s", LATEST, parent, err)
        if tmp.is_symlink():
            tmp.unlink()
        return None
    return link


def report_command(sweep_dir: str | Path) -> str:
    """The command that reports on a sweep's runs."""
    return f"make report RUNS={shlex.quote(str(sweep_dir))}"


class RunFolders(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): points ``<paths.log_dir>/latest`` at a single run's
    folder when its job starts, ``<paths.multirun_dir>/latest`` at a sweep's folder when it starts, and
    prints the sweep's folder and its report command when it ends."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.RUN:
            point_latest(config.paths.log_dir, hydra_cfg.runtime.output_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # the launcher's folder, made a moment early
        point_latest(config.paths.multirun_dir, self.sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir or Path(str(config.hydra.sweep.dir))
        print(f"sweep folder: {sweep_dir}\nreport: {report_command(sweep_dir)}", flush=True)


def export_dir(ckpt_path: Any, run_dir: str | Path) -> Path:
    """Where an export goes without ``out_dir``: ``<checkpoint's run folder>/export`` when the export's
    own run folder lies inside that run folder (the default, ``conf/hydra/export.yaml``), else
    ``<run folder>/export`` (``hydra.run.dir=DIR``, an ensemble)."""
    ckpt_run = checkpoint_run_dir(ckpt_path)
    run_dir = Path(run_dir)
    if ckpt_run is not None and ckpt_run.absolute() in run_dir.absolute().parents:
        return ckpt_run / "export"
    return run_dir / "export"
