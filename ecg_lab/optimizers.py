"""Optimisers and schedulers from the config's ``_partial_`` factories, for every ecg_lab module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ecg_lab.models.crnn import count_parameters


class ConfiguredOptimizers:
    """Mixin for a LightningModule holding ``optimizer_factory`` (``model.optimizer``, ``_partial_``),
    ``scheduler_factory`` (``model.scheduler`` or None) and ``hparams.monitor``."""

    optimizer_factory: Callable[..., torch.optim.Optimizer]
    scheduler_factory: Callable[..., Any] | None

    def hold(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
    ) -> None:
        """The network, the optimiser/scheduler factories and the run bookkeeping every ecg_lab
        module keeps (call after ``save_hyperparameters``)."""
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.net = net
        self.n_params = count_parameters(net)
        self.run_config: dict | None = None  # the resolved Hydra config, stored in checkpoints
        self.test_results: dict[str, Any] = {}

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())  # type: ignore[attr-defined]
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor},  # type: ignore[attr-defined]
        }
