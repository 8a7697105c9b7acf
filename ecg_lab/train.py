"""Train and test a model: ``python -m ecg_lab.train [overrides]`` (Hydra app, config ``conf/train.yaml``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ecg_lab.checks import check_task_config
from ecg_lab.runtime import (
    CONFIG_DIR,
    instantiate_list,
    ranks_start_in_this_job,
    run_test,
    task_wrapper,
    to_container,
)

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Data and model from config; the model carries the resolved config for its checkpoints."""
    check_task_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss))
    model.run_config = to_container(cfg)
    return datamodule, model


@task_wrapper
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; writes the run's reports; returns the metrics."""
    t0 = time.perf_counter()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    torch.set_flush_denormal(True)  # denormal gradients slow CPU LSTM backward passes several-fold
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule, model = build(cfg)
    datamodule.prepare_data()  # generate/preprocess before loggers start (wandb must not be forked)
    print(
        f"model {cfg.model.net._target_.rsplit('.', 1)[-1]} "
        f"({cfg.get('model_name', '')}): {model.n_params:,} parameters",
        flush=True,
    )
    if "ddp" in str(cfg.trainer.get("strategy", "")):
        ranks_start_in_this_job()
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams({**to_container(cfg), "n_params": model.n_params})

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.monitor and ckpt.best_model_score is not None:
        metrics[ckpt.monitor] = float(ckpt.best_model_score)  # sweepers score the best epoch, as tested

    if cfg.get("test", True):
        best = ckpt.best_model_path if ckpt is not None else ""
        if not best:
            log.warning("no best checkpoint (e.g. fast_dev_run); testing the current weights")
        extra = {
            "task_name": cfg.task_name,
            "model_name": cfg.get("model_name"),
            "data": cfg.data.get("name"),
            "seed": cfg.seed,
            "ckpt_path": best or None,
            "epochs": trainer.current_epoch,
            "wall_time_s": round(time.perf_counter() - t0, 2),
        }
        run_test(trainer, model, datamodule, output_dir, extra, ckpt_path=best or None)
        metrics.update({f"test/{k}": v for k, v in model.test_results.items() if isinstance(v, float)})
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric for sweepers."""
    metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
