"""LightningModule for ECG generation: batches → LSTM-VAE → morphology-weighted loss → fidelity metrics.

Reconstructions for the metrics decode the latent mean (deterministic); generated samples decode
latents drawn from a fixed seed, so epochs are comparable: from N(0, I), or (``sampler.kind=gmm``) from
a Gaussian mixture refitted to the training windows' posterior means at every validation epoch
(:mod:`ecg_lab.generation.latent_density`), which is stored in the checkpoint. The fidelity metrics
(:mod:`ecg_lab.generation.fidelity`) run on at most ``fidelity.max_signals`` validation windows per
epoch and on every test window; under DDP they are gathered from every rank, each window once, and scored
in dataset order, so the numbers do not depend on the number of ranks. The test adds the measures of the
field: the discriminative score (:mod:`ecg_lab.generation.discriminative`) and the Fréchet distance on a
classifier's features (:mod:`ecg_lab.generation.frechet`, ``fidelity.feature_ckpt``).

Every validation epoch is checked for collapse (:mod:`ecg_lab.generation.collapse`): ``val/collapsed``
and ``val/guarded_loss`` are logged, a run whose last epochs collapsed and a tested checkpoint that
collapsed are warned about, in the log and in ``run_status.json`` (``warnings``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from ecg_lab.app.checkpoints import CarriesRun
from ecg_lab.app.distributed import EpochMeans, gather_rows
from ecg_lab.app.optimizers import ConfiguredOptimizers
from ecg_lab.app.outputs import TestOutcome
from ecg_lab.generation.collapse import REMEDY, CollapseCheck, active_units
from ecg_lab.generation.discriminative import DiscriminativeSettings, discriminative_score
from ecg_lab.generation.fidelity import fidelity, nearest_train_ratio, plausible_rhythm_share
from ecg_lab.generation.figures import amplitude_unit, plot_overlays, plot_signal_grid
from ecg_lab.generation.frechet import Features, frechet_distance, load_features
from ecg_lab.generation.latent_density import LatentDensity, SamplerSettings
from ecg_lab.generation.loss import MorphologyWeightedMSE
from ecg_lab.models.crnn import count_parameters

log = logging.getLogger(__name__)

EVAL_LOSSES = ("loss", "mse", "wmse", "kl")  # epoch means over the val/test windows


@dataclass(frozen=True)
class FidelitySettings:
    """How fidelity is measured: signals used at validation, generated samples, tolerances."""

    max_signals: int = 512
    n_generated: int = 256
    test_n_generated: int | None = None  # at test (None: n_generated); a share of 256 is ±0.02-0.03
    tolerance_s: float = 0.05
    hr_min: float = 40.0
    hr_max: float = 180.0
    max_rr_cv: float = 0.2
    seed: int = 0
    # a classifier checkpoint (python -m ecg_lab.train model=cnn_lstm) at data.fs whose CRNN.embed gives
    # the features of the Fréchet distance; null: no Fréchet distance (test_metrics.json says so)
    feature_ckpt: str | None = None
    discriminative: DiscriminativeSettings = field(default_factory=DiscriminativeSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.discriminative, DiscriminativeSettings):
            settings = DiscriminativeSettings(**dict(self.discriminative or {}))
            object.__setattr__(self, "discriminative", settings)

    def generated(self, stage: str) -> int:
        """How many samples ``stage`` generates."""
        return (self.test_n_generated or self.n_generated) if stage == "test" else self.n_generated

    @property
    def rhythm(self) -> dict[str, Any]:
        """What a plausible rhythm is (keyword arguments of the fidelity functions)."""
        return {"hr_range": (self.hr_min, self.hr_max), "max_rr_cv": self.max_rr_cv}


def mixture_windows(windows: np.ndarray, sampler: SamplerSettings) -> np.ndarray:
    """The training windows a gmm sampler's mixture is fitted to: all, or ``sampler.max_windows`` of them
    drawn with ``sampler.seed`` (a fixed choice, in dataset order)."""
    cap = sampler.max_windows
    if len(windows) <= cap:
        return windows
    return windows[np.sort(np.random.default_rng(sampler.seed).choice(len(windows), cap, replace=False))]


class ECGGenerator(CarriesRun, ConfiguredOptimizers, pl.LightningModule):
    """Trains a VAE ``net`` (``encode``/``decode``/``sample``) with ``loss``; logs reconstruction
    error, KL, β every step, and the fidelity of reconstructions and generated samples."""

    TASK = "generation"
    #: drawn in training_curves.png
    CURVES = ("wmse", "kl", "rpeak_recall", "r_amplitude_ratio", "mmd", "rhythm_plausible")

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
        collapse: CollapseCheck | dict[str, Any] | None = None,
        sampler: SamplerSettings | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["net", "loss", "optimizer", "scheduler", "fidelity", "collapse", "sampler"], logger=False
        )
        self.use_optimizers(optimizer, scheduler)
        self.net = net
        self.n_params = count_parameters(net)
        self.loss = loss if loss is not None else MorphologyWeightedMSE()
        self.fs = float(fs)
        self.settings = (
            fidelity if isinstance(fidelity, FidelitySettings) else FidelitySettings(**(fidelity or {}))
        )
        self.collapse = collapse if isinstance(collapse, CollapseCheck) else CollapseCheck(**(collapse or {}))
        self.sampler = sampler if isinstance(sampler, SamplerSettings) else SamplerSettings(**(sampler or {}))
        # the gmm sampler's mixture: buffers, so every checkpoint holds the one fitted at its epoch
        self.latent_density = (
            LatentDensity(net.latent_dim, self.sampler.components) if self.sampler.kind == "gmm" else None
        )
        self.run_warnings: list[str] = []  # for the log and run_status.json
        # epochs count from 1 here, as in the console and the checkpoint names (best-epoch001: the first)
        self._validated: list[tuple[int, list[str]]] = []  # (epoch, what collapsed) of each validation
        self._loaded_epoch: int | None = None  # the epoch of the checkpoint last loaded (the tested one)
        self._features: Features | None = None
        self._train_subset: tuple[int, np.ndarray] | None = None  # (id of the train dataset, its windows)
        self.eval_losses = nn.ModuleDict({stage: EpochMeans(EVAL_LOSSES) for stage in ("val", "test")})
        self.test_examples: dict[str, np.ndarray] = {}
        self._test_metrics: dict[str, Any] = {}
        self._kept: dict[str, list[torch.Tensor]] = {}  # rows (index, input, reconstruction, R-peak mask)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net(x)

    # -- set-up ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.settings.feature_ckpt and self._features is None:  # a bad path fails before training
            self._features = load_features(self.settings.feature_ckpt, self.fs)
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

    def _mean_pass(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The reconstruction from the latent mean, that mean and the losses at β_max: no sampling, the same
        objective every epoch."""
        mu, logvar = self.net.encode(batch["x"])
        recon = self.net.decode(mu)
        return recon, mu, self._losses(batch, recon, mu, logvar, step=None)

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch without sampling (what the backend check differentiates)."""
        return self._mean_pass(batch)[2]["loss"]

    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        recon, mu, out = self._mean_pass(batch)
        self.eval_losses[stage].log(self, stage, out, len(recon), prog_bar=["wmse"])
        self._keep(stage, batch, recon, mu)

    def _keep(
        self, stage: str, batch: dict[str, torch.Tensor], recon: torch.Tensor, mu: torch.Tensor
    ) -> None:
        """Keep the windows fidelity scores as rows ``(index, input, reconstruction, R-peak mask, latent
        mean)``: at most ``max_signals`` per rank at validation, every one at test."""
        kept = self._kept.setdefault(stage, [])
        room = self.settings.max_signals - sum(len(k) for k in kept) if stage == "val" else len(recon)
        if room > 0:
            parts = (batch["index"][:, None], batch["x"][:, 0], recon[:, 0], batch["rpeaks"], mu)
            kept.append(torch.cat([p[:room].detach().float() for p in parts], 1).cpu())

    def _kept_windows(self, stage: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray] | None:
        """``(inputs, reconstructions, R-peaks, latent means)`` of the windows every rank kept, each once, in
        dataset order (validation: the first ``max_signals``); None when none were kept or in the sanity
        check."""
        kept = self._kept.pop(stage, [])
        if not kept or self.trainer.sanity_checking:
            return None
        rows = gather_rows(torch.cat(kept).to(self.device)).cpu().numpy()  # NCCL gathers on the GPU
        rows = rows[np.unique(rows[:, 0], return_index=True)[1]]  # sorted by window index, duplicates out
        if stage == "val":
            rows = rows[: self.settings.max_signals]
        width = rows.shape[1] - self.net.latent_dim  # the latent means come last
        mus, rows = rows[:, width:], rows[:, :width]
        n = (rows.shape[1] - 1) // 3
        peaks = [np.flatnonzero(m) for m in rows[:, 1 + 2 * n :] > 0.5]
        return rows[:, 1 : 1 + n], rows[:, 1 + n : 1 + 2 * n], peaks, mus

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    @torch.no_grad()
    def generate(self, n: int, seed: int | None = None, sampler: str | None = None) -> np.ndarray:
        """``n`` generated signals (n, seq_len) from latents drawn on the CPU, reproducible with ``seed``:
        by ``model.sampler`` (``sampler="prior"``: from N(0, I) whatever it says)."""
        generator = torch.Generator().manual_seed(self.settings.seed if seed is None else seed)
        if self.latent_density is None or sampler == "prior":
            return self.net.sample(n, generator)[:, 0].float().cpu().numpy()
        if not bool(self.latent_density.fitted):
            raise RuntimeError(
                "model.sampler.kind=gmm but this model's latent mixture was never fitted (it is fitted at "
                "each validation epoch of training); train it, or generate with model.sampler.kind=prior"
            )
        z = self.latent_density.sample(n, generator).to(self.device)
        return self.net.decode(z)[:, 0].float().cpu().numpy()

    @torch.no_grad()
    def encode_means(self, windows: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The posterior means (n, latent_dim) of ``windows`` (n, seq_len), encoded in eval mode."""
        training = self.net.training
        self.net.eval()
        batches = (
            torch.as_tensor(windows[i : i + batch_size], device=self.device)
            for i in range(0, len(windows), batch_size)
        )
        codes = torch.cat([self.net.encode(x[:, None])[0].float().cpu() for x in batches])
        self.net.train(training)
        return codes.numpy()

    def fit_latent_density(self, windows: np.ndarray) -> None:
        """Fit the gmm sampler's mixture to the posterior means of ``windows`` (n, seq_len)."""
        assert self.latent_density is not None
        self.latent_density.fit(self.encode_means(windows), seed=self.sampler.seed)

    def _training_windows(self) -> np.ndarray | None:
        """At most ``sampler.max_windows`` training windows (a fixed choice, drawn once per training set),
        or None without them."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        train = (getattr(datamodule, "datasets", None) or {}).get("train")
        if train is None or not len(train):
            return None
        if self._train_subset is None or self._train_subset[0] != id(train):
            self._train_subset = (id(train), mixture_windows(train.windows.x, self.sampler))
        return self._train_subset[1]

    def _fidelity(self, stage: str) -> dict[str, float]:
        windows = self._kept_windows(stage)
        if windows is None:
            return {}
        inputs, recons, peaks, mus = windows
        generated = self.generate(self.settings.generated(stage))
        s = self.settings
        scores = fidelity(
            inputs,
            recons,
            generated,
            peaks,
            self.fs,
            tolerance_s=s.tolerance_s,
            step_hz=self._step_hz,
            **s.rhythm,
        )
        scores["active_units"] = float(active_units(mus))
        self.log_dict({f"{stage}/{k}": float(v) for k, v in scores.items() if k != "mse"}, sync_dist=True)
        if stage == "test":
            self.test_examples = {"inputs": inputs, "reconstructions": recons, "generated": generated}
        return scores

    @property
    def _step_hz(self) -> float | None:
        """The decoder's step rate (``fs / samples_per_step``), where the per-step pattern would show."""
        per_step = getattr(self.net, "samples_per_step", None)
        return self.fs / per_step if per_step else None

    def _collapse_reasons(self, stage: str, scores: dict[str, float]) -> list[str]:
        """What collapsed in this epoch's ``stage`` (empty: nothing)."""
        kl = float(self.eval_losses[stage].means["kl"].compute())
        return self.collapse.reasons(kl, scores["rpeak_recall"], int(scores["active_units"]))

    def on_test_epoch_start(self) -> None:
        if self.latent_density is not None and not bool(self.latent_density.fitted):
            windows = self._training_windows()
            if windows is not None:
                self._warn(
                    "the tested weights had no fitted latent mixture; fitted it to the training windows"
                )
                self.fit_latent_density(windows)

    def on_validation_epoch_end(self) -> None:
        windows = self._training_windows() if self.latent_density is not None else None
        if windows is not None:  # refit to this epoch's codes before drawing the generated samples
            self.fit_latent_density(windows)
        scores = self._fidelity("val")
        if not scores:
            return
        reasons = self._collapse_reasons("val", scores)
        self._validated.append((self.current_epoch + 1, reasons))
        collapsed = bool(reasons)
        loss = float(self.eval_losses["val"].means["loss"].compute())
        self.log("val/collapsed", float(collapsed), sync_dist=True)
        self.log("val/guarded_loss", self.collapse.guarded(loss, collapsed), sync_dist=True)

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.run_warnings.append(message)

    def on_fit_end(self) -> None:
        """Warn when the last validation epochs collapsed (the KL stayed below the threshold, or the
        reconstructions lost the beats, up to the end of training)."""
        trailing = list(itertools.takewhile(lambda v: v[1], reversed(self._validated)))
        if not trailing:
            return
        (last, reasons), first = trailing[0], trailing[-1][0]
        self._warn(
            f"the VAE ended training collapsed: its last {len(trailing)} validation epoch(s), "
            f"{first}-{last}, were collapsed; at epoch {last}: {'; '.join(reasons)}; {REMEDY}"
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Weights load across samplers (``+model.sampler.kind=...`` at evaluation): a ``gmm`` checkpoint
        into a ``prior`` model leaves its mixture out; a ``prior`` one into a ``gmm`` model, or a mixture
        of another size (``+model.sampler.components=...``), keeps the model's mixture unfitted, fitted
        to the training windows at test (with a warning)."""
        prefix = "latent_density."
        if self.latent_density is None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        else:
            own = {prefix + k: v for k, v in self.latent_density.state_dict().items()}
            stored = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
            if stored and any(stored[k].shape != v.shape for k, v in own.items() if k in stored):
                log.info("the checkpoint's latent mixture is of another size than model.sampler's: dropped")
                stored = {}
            if not stored:
                state_dict = {**state_dict, **own}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        epoch = checkpoint.get("epoch")
        self._loaded_epoch = None if epoch is None else int(epoch) + 1

    def _field_scores(self, inputs: np.ndarray, generated: np.ndarray) -> dict[str, Any]:
        """The discriminative score and the Fréchet distance (None, with a note, without a feature net)."""
        scores: dict[str, Any] = discriminative_score(inputs, generated, self.settings.discriminative)
        if self._features is None:
            scores["frechet_distance"] = None
            scores["frechet_features"] = "none: set model.fidelity.feature_ckpt to a classifier checkpoint"
        else:
            scores["frechet_distance"] = frechet_distance(self._features(inputs), self._features(generated))
            scores["frechet_features"] = f"CRNN.embed of {self.settings.feature_ckpt}"
        self.log_dict({f"test/{k}": v for k, v in scores.items() if isinstance(v, float)}, sync_dist=True)
        return scores

    def _sampler_scores(self, inputs: np.ndarray, generated: np.ndarray) -> dict[str, Any]:
        """What drew the generated samples; with the gmm sampler, the rhythm of N(0, I) samples beside
        it; and, when the training windows are at hand, the memorisation check (``nearest_train_ratio``)."""
        s = self.settings
        scores: dict[str, Any] = {"sampler": self.sampler.kind}
        if self.latent_density is not None:
            scores["sampler"] = f"gmm, {self.sampler.components} components"
            prior = self.generate(s.generated("test"), sampler="prior")
            scores["rhythm_plausible_prior"] = plausible_rhythm_share(prior, self.fs, **s.rhythm)
        train = self._training_windows()
        if train is not None:
            scores["nearest_train_ratio"] = nearest_train_ratio(generated, inputs, train)
        self.log_dict({f"test/{k}": v for k, v in scores.items() if isinstance(v, float)}, sync_dist=True)
        return scores

    def _check_tested(self, reasons: list[str]) -> None:
        """Warn when the tested weights are collapsed, naming their checkpoint and epoch."""
        if not reasons:
            return
        path = getattr(self.trainer, "ckpt_path", None)  # None when the weights were loaded beforehand (eval)
        where = f" {path}" if path else ""
        epoch = f" (epoch {self._loaded_epoch})" if self._loaded_epoch is not None else ""
        self._warn(f"the tested checkpoint{where}{epoch} is collapsed: {'; '.join(reasons)}; {REMEDY}")

    def on_test_epoch_end(self) -> None:
        scores = self._fidelity("test")
        logged = self.trainer.callback_metrics
        ex = self.test_examples
        field_scores = self._field_scores(ex["inputs"], ex["generated"]) if scores else {}
        if scores:
            field_scores |= self._sampler_scores(ex["inputs"], ex["generated"])
        reasons = self._collapse_reasons("test", scores) if scores else []
        self._check_tested(reasons)
        self._test_metrics = {
            "n_params": self.n_params,
            "n_windows": int(len(self.test_examples.get("inputs", []))),
            "n_generated": self.settings.generated("test"),
            **{k: float(logged[f"test/{k}"]) for k in ("mse", "wmse", "kl") if f"test/{k}" in logged},
            **{k: float(v) for k, v in scores.items() if k != "mse"},
            **field_scores,
            "collapsed": bool(reasons),
        }

    def test_outcome(self) -> TestOutcome:
        """The last test's fidelity metrics, input-versus-reconstruction overlays and generated ECGs."""
        ex = self.test_examples
        figures = {}
        title = getattr(self, "figure_title", "")  # what was tested, set by the entry point
        unit = amplitude_unit((self.run_config or {}).get("data"))
        if ex:
            figures = {
                "reconstructions.png": lambda path: plot_overlays(
                    ex["inputs"], ex["reconstructions"], self.fs, path, title=title, unit=unit
                ),
                "generated.png": lambda path: plot_signal_grid(
                    ex["generated"], self.fs, path, title, real=ex["inputs"], unit=unit
                ),
            }
        return TestOutcome(dict(self._test_metrics), figures, warnings=list(self.run_warnings))
