"""The task wrapper every ecg_lab app runs its task in: the run folder's status, loggers closed and
DDP torn down whatever happens."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from ecg_lab.app.config import task_overrides
from ecg_lab.app.environment import quiet_known_noise
from ecg_lab.app.outputs import RunOutputs
from ecg_lab.errors import UserError

log = logging.getLogger(__name__)

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


def task_wrapper(
    task: Callable[[DictConfig, RunOutputs], dict[str, Any]],
) -> Callable[[DictConfig], dict[str, Any]]:
    """Run ``task(cfg, outputs)`` with the run folder's writer; record how it ended in
    ``run_status.json``; always close the loggers and tear down DDP."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict[str, Any]:
        from pytorch_lightning.utilities import rank_zero_only

        quiet_known_noise()  # also in a launcher's worker processes, which skip the entry point
        name = cfg.get("task_name", task.__name__)
        outputs = RunOutputs(cfg.paths.output_dir, enabled=rank_zero_only.rank == 0)  # ranks share the folder
        outputs.started(cfg.get("task_name"), task_overrides())
        ddp_env = {k: os.environ.get(k) for k in DDP_ENV}
        error: BaseException | None = None
        try:
            return task(cfg, outputs)
        except UserError as err:  # bad input: the message says it all
            error = err
            log.error("task %s failed: %s", name, err)
            raise
        except BaseException as err:
            error = err
            log.exception("task %s failed", name)
            raise
        finally:
            close_loggers()
            end_distributed(ddp_env)
            elapsed = outputs.ended(error)
            log.info("task %s ended after %.1f s; output in %s", name, elapsed, cfg.paths.output_dir)

    return wrapped
