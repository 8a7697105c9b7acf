"""Hydra plumbing every ecg_lab app shares: where the configs are, the resolvers they use, multirun
facts, and instantiation of node groups."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from ecg_lab.app.run_folders import beside_checkpoint, run_name
from ecg_lab.errors import UserError

# conf/ beside the package; absolute, so console scripts and `python -m` find it alike
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


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
    return None if hydra_cfg is None else group_of(Path(hydra_cfg.sweep.dir))


def group_of(sweep_dir: Path) -> str:
    """The wandb group of a sweep's runs, from its folder ``multirun/<date>/<time>``: ``<date>_<time>``."""
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


def window_rate(fs: float, resample_to: float | None = None) -> float:
    """The rate of the windows a model sees: ``data.preprocess.resample_to`` when set, else ``data.fs``."""
    return float(resample_to) if resample_to else float(fs)


RESOLVERS = {
    "len": len,
    "sweep_group": sweep_group,
    "job_name": job_name,
    "short_dirname": short_dirname,
    "window_rate": window_rate,
    "run_name": run_name,
    "beside_checkpoint": beside_checkpoint,
}


def register_resolvers() -> None:
    """Register the resolvers ``conf/`` uses (``${sweep_group:}``, ...); safe to call more than once."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def instantiate_node(node: DictConfig) -> Any:
    """``hydra.utils.instantiate(node)``; a :class:`~ecg_lab.errors.UserError` its target raises (a bad
    value, named by key) comes through as itself, not wrapped in Hydra's InstantiationException."""
    try:
        return hydra.utils.instantiate(node)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


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


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (for checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


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
