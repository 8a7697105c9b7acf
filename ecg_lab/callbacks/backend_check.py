"""The accelerator check before training: one batch's gradients on the training device against the CPU
in float64 (:mod:`ecg_lab.app.backend`); training stops, naming the parameter, when they differ."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch import nn

from ecg_lab.app.backend import GradientMismatchError, compare_gradients

log = logging.getLogger(__name__)


class BackendCheck(Callback):
    """At the start of training on an accelerator (on the CPU too with ``on_cpu``), compare the model's
    gradients on one training batch with the CPU in float64; raise :class:`GradientMismatchError` when a
    parameter's relative difference exceeds ``tolerance``. Every DDP rank checks its own device."""

    def __init__(self, tolerance: float = 1e-3, on_cpu: bool = False, tf32: bool = False) -> None:
        self.tolerance = tolerance
        self.on_cpu = on_cpu
        self.tf32 = tf32

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        if device.type == "cpu" and not self.on_cpu:
            return  # the reference runs on the same backend: nothing to learn
        if any(isinstance(m, nn.SyncBatchNorm) for m in pl_module.modules()):
            log.warning(
                "backend check skipped: SyncBatchNorm does not run on the CPU reference; run "
                "python -m ecg_lab.check_backend (one device) with this config before training"
            )
            return
        result = compare_gradients(
            pl_module,
            self._batch(trainer),
            device,
            tolerance=self.tolerance,
            tf32=self.tf32,
            tolerance_key="callbacks.backend_check.tolerance",
        )
        if not trainer.strategy.reduce_boolean_decision(result.ok, all=True):  # every rank stops together
            raise GradientMismatchError(
                result.line() if not result.ok else "backend check failed on another DDP rank; see its log"
            )
        if trainer.is_global_zero:
            log.info(result.line())

    @staticmethod
    def _batch(trainer: pl.Trainer) -> Any:
        """The first batch of a fresh training loader (the trainer's own one keeps its state untouched)."""
        dm = trainer.datamodule
        loader = dm.train_dataloader() if dm is not None else trainer.train_dataloader
        return next(iter(loader))
