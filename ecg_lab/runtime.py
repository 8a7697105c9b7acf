"""What every Hydra app of ecg_lab shares: resolvers, instantiation of lists, the task wrapper."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from ecg_lab.data.records import BadRecordError, DatasetNotFoundError
from ecg_lab.reports import write_json

log = logging.getLogger(__name__)

# conf/ beside the package; absolute, so console scripts and `python -m` find it alike
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# known noise: a class absent from one validation batch set, Lightning's own deprecation chatter
warnings.filterwarnings("ignore", message=".*No positive samples in targets.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")  # an advertisement, not information
)


def multirun_config() -> Any | None:
    """The Hydra config of the current job when it is part of a multirun; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get()


def sweep_group() -> str | None:
    """In a multirun, a name for the whole sweep (from its folder: ``<date>_<time>``); else None."""
    hydra_cfg = multirun_config()
    if hydra_cfg is None:
        return None
    sweep_dir = Path(hydra_cfg.sweep.dir)
    return f"{sweep_dir.parent.name}_{sweep_dir.name}"


def job_name(default: str) -> str:
    """In a multirun, the job's overrides (``model=gru,seed=1``); else ``default``."""
    hydra_cfg = multirun_config()
    return (hydra_cfg.job.override_dirname or default) if hydra_cfg is not None else default


def short_dirname(name: str, limit: int = 200) -> str:
    """A folder name of at most ``limit`` characters: long override lists keep their start and a hash."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11]}~{digest}"


_RESOLVERS = {"len": len, "sweep_group": sweep_group, "job_name": job_name, "short_dirname": short_dirname}
for _name, _fn in _RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def instantiate_list(group: DictConfig | None, **kwargs: Any) -> list[Any]:
    """Instantiate every ``_target_`` node of a group (``callbacks``, ``logger``); nulls are skipped."""
    if not group:
        return []
    if not isinstance(group, DictConfig):
        raise TypeError(f"expected a mapping of nodes, got {type(group).__name__}")
    objs = []
    for name, node in group.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"config node {name!r} has no _target_; every callback/logger needs one")
        objs.append(hydra.utils.instantiate(node, **kwargs))
    return objs


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def end_distributed(env_before: dict[str, str | None]) -> None:
    """Tear down a DDP process group and the variables Lightning set to start its ranks.

    Lightning's launcher exports ``LOCAL_RANK`` & co. in rank 0's own environment; left there, the
    next job of a sequential multirun would take its ranks as started externally and wait forever.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in env_before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def close_loggers() -> None:
    """Finish a wandb run if one is open (also on failure, so sweeps do not leave runs hanging)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        log.info("closing wandb run")
        wandb.finish()


def task_overrides() -> list[str]:
    """The command-line overrides of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def ranks_start_in_this_job() -> None:
    """Make Lightning's DDP start a multirun job's extra ranks as single runs in this job's folder.

    Lightning re-runs the command line for ranks 1..n with ``hydra.run.dir`` set to this run's
    folder; in a multirun that command line is the whole sweep and the run folder is not the job's.
    """
    from omegaconf import read_write

    hydra_cfg = multirun_config()
    if hydra_cfg is None:
        return
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


class RunStatus:
    """``run_status.json`` in the run folder: running → completed | failed (with the error).

    Sweep reports read it, so a job that failed inside a multirun shows up as failed.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.path = Path(cfg.paths.output_dir) / "run_status.json"
        self.enabled = rank_zero_only.rank == 0  # DDP ranks 1..n share the folder
        self.t0 = time.perf_counter()
        self.payload: dict[str, Any] = {
            "status": "running",
            "error": None,
            "task_name": cfg.get("task_name"),
            "overrides": task_overrides(),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
            "ended": None,
            "wall_time_s": None,
            "output_dir": str(Path(cfg.paths.output_dir).resolve()),
        }
        self._write()

    def _write(self) -> None:
        if self.enabled:
            write_json(self.path, self.payload)

    def end(self, error: BaseException | None = None) -> float:
        """Record the outcome; returns the wall time in seconds."""
        elapsed = time.perf_counter() - self.t0
        self.payload.update(
            status="failed" if error is not None else "completed",
            error=None if error is None else f"{type(error).__name__}: {error}",
            ended=dt.datetime.now().isoformat(timespec="seconds"),
            wall_time_s=round(elapsed, 2),
        )
        self._write()
        return elapsed


def task_wrapper(task: Callable[[DictConfig], dict[str, Any]]) -> Callable[[DictConfig], dict[str, Any]]:
    """Run a task; record how it ended in ``run_status.json``; always close the loggers."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict[str, Any]:
        status = RunStatus(cfg)
        ddp_env = {k: os.environ.get(k) for k in DDP_ENV}
        error: BaseException | None = None
        try:
            return task(cfg)
        except (DatasetNotFoundError, BadRecordError) as err:  # bad input: the message says it all
            error = err
            log.error("task %s failed: %s", cfg.get("task_name", task.__name__), err)
            raise
        except BaseException as err:
            error = err
            log.exception("task %s failed", cfg.get("task_name", task.__name__))
            raise
        finally:
            close_loggers()
            end_distributed(ddp_env)
            elapsed = status.end(error)
            log.info(
                "task %s ended after %.1f s; output in %s",
                cfg.get("task_name", task.__name__),
                elapsed,
                cfg.paths.output_dir,
            )

    return wrapped


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (for checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def run_test(
    trainer: Any,
    model: Any,
    datamodule: Any,
    output_dir: Path,
    extra: dict[str, Any],
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Test ``model`` (or the weights at ``ckpt_path``), write ``test_metrics.json`` and its plots."""
    logged = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)[0]
    for key, value in logged.items():  # epoch means of step-logged values (loss, ...)
        model.test_results.setdefault(key.removeprefix("test/"), value)
    if trainer.is_global_zero:  # results are already gathered from every rank
        write_json(output_dir / "test_metrics.json", {**extra, **model.test_results})
        model.write_test_figures(output_dir)
        log.info("test metrics written to %s", output_dir / "test_metrics.json")
    return model.test_results
