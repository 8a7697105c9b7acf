"""A progress bar in an interactive terminal, plain lines otherwise; either way the log file (Hydra's
``<job>.log``, e.g. ``train.log``) gets one plain line per epoch."""

from __future__ import annotations

import logging
import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

from ecg_lab.app.environment import FILE_ONLY

log = logging.getLogger(__name__)


def epoch_line(trainer: pl.Trainer, seconds: float) -> str:
    """``epoch 3/40 (12.1s) train/f1=... val/f1=...``: the epoch counted from 1, as in checkpoint names."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if "/" in k and "_" not in k[-2:])
    return f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({seconds:.1f}s) {shown}"


class EpochTimer:
    """Times each training epoch and counts its batches (none: the replayed epoch end of a resume)."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.batches = 0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.batches = 0

    def line(self, trainer: pl.Trainer) -> str | None:
        """The epoch's line, or None when nothing trained (sanity check, replayed epoch end)."""
        if trainer.sanity_checking or self.batches == 0:
            return None
        return epoch_line(trainer, time.perf_counter() - self.t0)


def log_to_file(line: str) -> None:
    """``line`` for the log file only (the console handler drops it: ``NotFileOnly``)."""
    log.info(line, extra={FILE_ONLY: True})


class LineProgress(ProgressBar):
    """One plain line per epoch (for logs, CI and batch jobs): epoch, time and metrics; printed, and
    logged to the log file."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._timer = EpochTimer()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._timer.start()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self._timer.batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        line = self._timer.line(trainer)
        if self._enabled and line is not None:
            print(line, flush=True)
            log_to_file(line)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            print(f"tested on {sum(trainer.num_test_batches)} batches", flush=True)


class BarProgress(TQDMProgressBar):
    """Lightning's tqdm bar, plus the epoch's plain line in the log file."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._timer = EpochTimer()

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: object) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._timer.start()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        super().on_train_batch_end(trainer, *args)
        self._timer.batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        line = self._timer.line(trainer)
        if line is not None and trainer.is_global_zero:
            log_to_file(line)


def auto_progress_bar(refresh_rate: int = 1, interactive: bool | None = None) -> ProgressBar:
    """A tqdm bar when stdout is a terminal (:class:`BarProgress`), otherwise :class:`LineProgress`."""
    if interactive is None:
        interactive = sys.stdout.isatty()
    return BarProgress(refresh_rate=refresh_rate) if interactive else LineProgress()
