"""LightningModule for ECG generation: batches → LSTM-VAE → morphology-weighted loss → fidelity metrics.

Reconstructions for the metrics decode the latent mean (deterministic); generated samples decode
z ~ N(0, I) from a fixed seed, so epochs are comparable. The fidelity metrics
(:mod:`ecg_lab.generation.fidelity`) run on at most ``fidelity.max_signals`` validation windows per
epoch and on every test window; under DDP they are gathered from every rank, each window once, and scored
in dataset order, so the numbers do not depend on the number of ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from ecg_lab.app.checkpoints import CarriesRun
from ecg_lab.app.distributed import EpochMeans, gather_rows
from ecg_lab.app.optimizers import ConfiguredOptimizers
from ecg_lab.app.outputs import TestOutcome
from ecg_lab.generation.fidelity import fidelity
from ecg_lab.generation.figures import plot_overlays, plot_signal_grid
from ecg_lab.generation.loss import MorphologyWeightedMSE
from ecg_lab.models.crnn import count_parameters

log = logging.getLogger(__name__)

EVAL_LOSSES = ("loss", "mse", "wmse", "kl")  # epoch means over the val/test windows


@dataclass(frozen=True)
class FidelitySettings:
    """How fidelity is measured: signals used at validation, generated samples, tolerances."""

    max_signals: int = 512
    n_generated: int = 256
    tolerance_s: float = 0.05
    hr_min: float = 40.0
    hr_max: float = 180.0
    max_rr_cv: float = 0.2
    seed: int = 0


class ECGGenerator(CarriesRun, ConfiguredOptimizers, pl.LightningModule):
    """Trains a VAE ``net`` (``encode``/``decode``/``sample``) with ``loss``; logs reconstruction
    error, KL, β every step, and the fidelity of reconstructions and generated samples."""

    TASK = "generation"
    CURVES = ("wmse", "kl", "rpeak_recall", "r_amplitude_ratio")  # drawn in training_curves.png

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: nn.Module | None = None,
        scheduler: Callable[..., Any] | None = None,
        fs: float = 100.0,
        fidelity: FidelitySettings | dict[str, Any] | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "fidelity"], logger=False)
        self.use_optimizers(optimizer, scheduler)
        self.net = net
        self.n_params = count_parameters(net)
        self.loss = loss if loss is not None else MorphologyWeightedMSE()
        self.fs = float(fs)
        self.settings = (
            fidelity if isinstance(fidelity, FidelitySettings) else FidelitySettings(**(fidelity or {}))
        )
        self.eval_losses = nn.ModuleDict({stage: EpochMeans(EVAL_LOSSES) for stage in ("val", "test")})
        self.test_examples: dict[str, np.ndarray] = {}
        self._test_metrics: dict[str, Any] = {}
        self._kept: dict[str, list[torch.Tensor]] = {}  # rows (index, input, reconstruction, R-peak mask)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net(x)

    # -- set-up ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        beta = getattr(self.loss, "beta", None)
        if stage == "fit" and beta is not None and getattr(beta, "total_steps", 0) is None:
            total = self.trainer.estimated_stepping_batches
            beta.set_total_steps(total)
            log.info("cyclical β over %s steps", beta.total_steps)

    # -- steps -------------------------------------------------------------------------------
    def _losses(
        self,
        batch: dict[str, torch.Tensor],
        recon: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        step: int | None,
    ) -> dict[str, torch.Tensor]:
        return self.loss(recon, batch["x"], mu, logvar, envelope=batch.get("envelope"), step=step)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        recon, mu, logvar = self(batch["x"])
        out = self._losses(batch, recon, mu, logvar, step=self.global_step)
        n = len(batch["x"])
        self.log("train/beta", out["beta"], on_step=True, on_epoch=False, batch_size=n)
        self.log("train/loss", out["loss"], on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        for key in ("mse", "wmse", "kl"):
            self.log(f"train/{key}", out[key], on_step=False, on_epoch=True, batch_size=n)
        return out["loss"]

    def _mean_pass(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reconstruction from the latent mean and its losses at β_max: no sampling, the same objective
        every epoch."""
        mu, logvar = self.net.encode(batch["x"])
        recon = self.net.decode(mu)
        return recon, self._losses(batch, recon, mu, logvar, step=None)

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch without sampling (what the backend check differentiates)."""
        return self._mean_pass(batch)[1]["loss"]

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        recon, out = self._mean_pass(batch)
        self.eval_losses[stage].log(self, stage, out, len(recon), prog_bar=["wmse"])
        self._keep(stage, batch, recon)

    def _keep(self, stage: str, batch: dict[str, torch.Tensor], recon: torch.Tensor) -> None:
        """Keep the windows fidelity scores as rows ``(index, input, reconstruction, R-peak mask)``: at most
        ``max_signals`` per rank at validation, every one at test."""
        kept = self._kept.setdefault(stage, [])
        room = self.settings.max_signals - sum(len(k) for k in kept) if stage == "val" else len(recon)
        if room > 0:
            parts = (batch["index"][:, None], batch["x"][:, 0], recon[:, 0], batch["rpeaks"])
            kept.append(torch.cat([p[:room].detach().float() for p in parts], 1).cpu())

    def _kept_windows(self, stage: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
        """``(inputs, reconstructions, R-peaks)`` of the windows every rank kept, each once, in dataset
        order (validation: the first ``max_signals``); None when none were kept or in the sanity check."""
        kept = self._kept.pop(stage, [])
        if not kept or self.trainer.sanity_checking:
            return None
        rows = gather_rows(torch.cat(kept).to(self.device)).cpu().numpy()  # NCCL gathers on the GPU
        rows = rows[np.unique(rows[:, 0], return_index=True)[1]]  # sorted by window index, duplicates out
        if stage == "val":
            rows = rows[: self.settings.max_signals]
        n = (rows.shape[1] - 1) // 3
        peaks = [np.flatnonzero(m) for m in rows[:, 1 + 2 * n :] > 0.5]
        return rows[:, 1 : 1 + n], rows[:, 1 + n : 1 + 2 * n], peaks

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    @torch.no_grad()
    def generate(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` generated signals (n, seq_len) from z ~ N(0, I) drawn on the CPU, reproducible with
        ``seed``."""
        generator = torch.Generator().manual_seed(self.settings.seed if seed is None else seed)
        return self.net.sample(n, generator)[:, 0].float().cpu().numpy()

    def _fidelity(self, stage: str) -> dict[str, float]:
        windows = self._kept_windows(stage)
        if windows is None:
            return {}
        inputs, recons, peaks = windows
        generated = self.generate(self.settings.n_generated)
        s = self.settings
        scores = fidelity(
            inputs,
            recons,
            generated,
            peaks,
            self.fs,
            tolerance_s=s.tolerance_s,
            hr_range=(s.hr_min, s.hr_max),
            max_rr_cv=s.max_rr_cv,
        )
        self.log_dict({f"{stage}/{k}": float(v) for k, v in scores.items() if k != "mse"}, sync_dist=True)
        if stage == "test":
            self.test_examples = {"inputs": inputs, "reconstructions": recons, "generated": generated}
        return scores

    def on_validation_epoch_end(self) -> None:
        self._fidelity("val")

    def on_test_epoch_end(self) -> None:
        scores = self._fidelity("test")
        logged = self.trainer.callback_metrics
        self._test_metrics = {
            "n_params": self.n_params,
            "n_windows": int(len(self.test_examples.get("inputs", []))),
            "n_generated": self.settings.n_generated,
            **{k: float(logged[f"test/{k}"]) for k in ("mse", "wmse", "kl") if f"test/{k}" in logged},
            **{k: float(v) for k, v in scores.items() if k != "mse"},
        }

    def test_outcome(self) -> TestOutcome:
        """The last test's fidelity metrics, input-versus-reconstruction overlays and generated ECGs."""
        ex = self.test_examples
        figures = {}
        if ex:
            figures = {
                "reconstructions.png": lambda path: plot_overlays(
                    ex["inputs"], ex["reconstructions"], self.fs, path
                ),
                "generated.png": lambda path: plot_signal_grid(
                    ex["generated"][:16], self.fs, path, "generated ECGs"
                ),
            }
        return TestOutcome(dict(self._test_metrics), figures)
