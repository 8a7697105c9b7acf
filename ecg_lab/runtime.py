"""What every Hydra app of ecg_lab shares: resolvers, instantiation of lists, the task wrapper."""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from ecg_lab.data.records import BadRecordError, DatasetNotFoundError
from ecg_lab.reports import write_test_report

log = logging.getLogger(__name__)

# conf/ beside the package; absolute, so console scripts and `python -m` find it alike
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# known noise: a class absent from one validation batch set, Lightning's own deprecation chatter
warnings.filterwarnings("ignore", message=".*No positive samples in targets.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")  # an advertisement, not information
)

if not OmegaConf.has_resolver("len"):
    OmegaConf.register_new_resolver("len", lambda seq: len(seq))


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


def close_loggers() -> None:
    """Finish a wandb run if one is open (also on failure, so sweeps do not leave runs hanging)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        log.info("closing wandb run")
        wandb.finish()


def task_wrapper(task: Callable[[DictConfig], dict[str, Any]]) -> Callable[[DictConfig], dict[str, Any]]:
    """Run a task, log how it ended and how long it took, and always close the loggers."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return task(cfg)
        except (DatasetNotFoundError, BadRecordError) as err:  # bad input: the message says it all
            log.error("task %s failed: %s", cfg.get("task_name", task.__name__), err)
            raise
        except Exception:
            log.exception("task %s failed", cfg.get("task_name", task.__name__))
            raise
        finally:
            close_loggers()
            log.info(
                "task %s ended after %.1f s; output in %s",
                cfg.get("task_name", task.__name__),
                time.perf_counter() - t0,
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
    model.test_results["loss"] = logged.get("test/loss")
    write_test_report(model.test_results, output_dir, extra=extra)
    log.info("test metrics written to %s", output_dir / "test_metrics.json")
    return model.test_results
