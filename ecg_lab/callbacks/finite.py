"""A diverged run is a failed run: training stops at the first non-finite loss or input value."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from ecg_lab.errors import UserError


class NonFiniteError(UserError, RuntimeError):
    """Training met a NaN or infinite loss or input value."""


def tensors(batch: Any) -> list[torch.Tensor]:
    """The floating-point tensors in a batch (a tensor, or a tuple/list/dict of them)."""
    if isinstance(batch, torch.Tensor):
        return [batch] if batch.is_floating_point() else []
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        return [t for item in batch for t in tensors(item)]
    return []


def where(trainer: pl.Trainer, batch_idx: int) -> str:
    """Where training is, as a person reads it: epochs and batches counted from 1 (as the console)."""
    return f"epoch {trainer.current_epoch + 1}, batch {batch_idx + 1} (step {trainer.global_step})"


class StopOnNonFinite(Callback):
    """Raise :class:`NonFiniteError` when a batch holds a non-finite value or the training loss
    is NaN or infinite, so the run ends ``failed`` instead of training on NaN and reporting a score."""

    def check_batch(self, stage: str, trainer: pl.Trainer, batch: Any, batch_idx: int) -> None:
        for x in tensors(batch):
            if not bool(torch.isfinite(x).all()):
                n = int((~torch.isfinite(x)).sum())
                raise NonFiniteError(
                    f"{stage} batch at {where(trainer, batch_idx)} holds {n} non-finite input values: "
                    "the data or its cache is damaged; delete the data's folder under paths.cache_dir "
                    "and run again, and check the records for NaN samples"
                )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.check_batch("training", trainer, batch, batch_idx)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, *_: int
    ) -> None:
        self.check_batch("validation", trainer, batch, batch_idx)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, *_: int
    ) -> None:
        self.check_batch("test", trainer, batch, batch_idx)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            lrs = sorted({g["lr"] for opt in trainer.optimizers for g in opt.param_groups})
            value = float(loss.detach().float().mean())
            raise NonFiniteError(
                f"the training loss became {value} at {where(trainer, batch_idx)}: "
                f"the run diverged; lower model.optimizer.lr (now {', '.join(f'{lr:g}' for lr in lrs)}) or "
                "set trainer.gradient_clip_val"
            )
