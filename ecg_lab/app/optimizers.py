"""Optimisers and schedulers from the config's ``_partial_`` factories, for every ecg_lab module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class ConfiguredOptimizers:
    """Mixin for a LightningModule holding ``optimizer_factory`` (``model.optimizer``, ``_partial_``),
    ``scheduler_factory`` (``model.scheduler`` or None) and ``hparams.monitor``."""

    optimizer_factory: Callable[..., torch.optim.Optimizer]
    scheduler_factory: Callable[..., Any] | None

    def use_optimizers(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
    ) -> None:
        """Keep the optimiser and (optional) scheduler factories for ``configure_optimizers``."""
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())  # type: ignore[attr-defined]
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor},  # type: ignore[attr-defined]
        }
