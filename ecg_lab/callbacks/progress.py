"""A progress bar in an interactive terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar


class LineProgress(ProgressBar):
    """One plain line per epoch (for logs, CI and batch jobs): epoch, time and metrics."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._t0 = 0.0
        self._batches = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._batches = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self._batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            not self._enabled or trainer.sanity_checking or self._batches == 0
        ):  # 0: replayed epoch end on resume
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if "/" in k and "_" not in k[-2:])
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
            f"({time.perf_counter() - self._t0:.1f}s) {shown}",
            flush=True,
        )

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            print(f"tested on {sum(trainer.num_test_batches)} batches", flush=True)


def auto_progress_bar(refresh_rate: int = 1, interactive: bool | None = None) -> ProgressBar:
    """A tqdm bar when stdout is a terminal, otherwise :class:`LineProgress`."""
    if interactive is None:
        interactive = sys.stdout.isatty()
    return TQDMProgressBar(refresh_rate=refresh_rate) if interactive else LineProgress()
