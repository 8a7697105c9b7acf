"""The generation loss (``loss=morph_mse``): morphology-weighted MSE plus β·KL with a cyclical β."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def _check_beta_schedule(cycles: int, rising_fraction: float, beta_max: float) -> None:
    if cycles < 1:
        raise ValueError(f"loss.beta.cycles={cycles} must be at least 1")
    if not 0.0 < rising_fraction <= 1.0:
        raise ValueError(f"loss.beta.rising_fraction={rising_fraction} must be in (0, 1]")
    if beta_max < 0.0:
        raise ValueError(f"loss.beta.beta_max={beta_max} must be non-negative")


def _check_total_steps(total_steps: float) -> None:
    if not math.isfinite(total_steps) or total_steps < 1:
        raise ValueError(
            f"loss.beta.total_steps={total_steps} must be a finite integer >= 1; set it, or bound training "
            f"with trainer.max_steps or trainer.max_epochs so it can be estimated"
        )


def cyclical_beta(
    step: int,
    total_steps: int,
    cycles: int = 4,
    rising_fraction: float = 0.5,
    beta_max: float = 1.0,
    warmup_fraction: float = 0.0,
) -> float:
    """KL weight of cyclical annealing (Fu et al., 2019) at optimiser step ``step``.

    β is 0 for the first ``warmup_fraction`` of ``total_steps`` (a plain autoencoder, so the decoder
    learns to use z before the KL term can close the posterior); the rest is split into ``cycles``
    equal cycles; in each, β rises linearly from 0 to ``beta_max`` over the first
    ``rising_fraction`` of the cycle and then holds. From ``step >= total_steps`` on (training past
    the estimate) β holds at ``beta_max``.
    """
    _check_beta_schedule(cycles, rising_fraction, beta_max)
    _check_total_steps(total_steps)
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"loss.beta.warmup_fraction={warmup_fraction} must be in [0, 1)")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if step >= total_steps:
        return float(beta_max)
    warmup = warmup_fraction * total_steps
    if step < warmup:
        return 0.0
    position = (step - warmup) * cycles / (total_steps - warmup)
    within_cycle = position - math.floor(position)
    return float(beta_max) * min(1.0, within_cycle / rising_fraction)


@dataclass
class CyclicalBeta:
    """Callable cyclical β schedule; ``total_steps=None`` until ``set_total_steps`` is called.

    The training module sets the total from ``trainer.estimated_stepping_batches`` unless
    ``loss.beta.total_steps`` is given.
    """

    beta_max: float = 1.0
    cycles: int = 4
    rising_fraction: float = 0.5
    total_steps: int | None = None
    warmup_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_beta_schedule(self.cycles, self.rising_fraction, self.beta_max)
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"loss.beta.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        if self.total_steps is not None:
            _check_total_steps(self.total_steps)

    def set_total_steps(self, n: int) -> None:
        """Fix the schedule's length (e.g. ``trainer.estimated_stepping_batches``)."""
        _check_total_steps(n)
        self.total_steps = int(n)

    def __call__(self, step: int) -> float:
        if self.total_steps is None:
            raise RuntimeError(
                "loss.beta.total_steps is not set; set it in the config or call "
                "set_total_steps(trainer.estimated_stepping_batches) before training"
            )
        return cyclical_beta(
            step, self.total_steps, self.cycles, self.rising_fraction, self.beta_max, self.warmup_fraction
        )


def signal_envelope(x: torch.Tensor) -> torch.Tensor:
    """Per-sample morphology envelope in [0, 1]: ``|x - median| / max|x - median|`` per signal.

    Works on ``(batch, channels, samples)`` or ``(batch, samples)``; wave deflections (P, QRS, T, U)
    are near 1, the baseline near 0, and a flat signal gives all zeros.
    """
    deviation = (x - x.median(dim=-1, keepdim=True).values).abs()
    peak = deviation.amax(dim=-1, keepdim=True)
    # deviation is 0 wherever peak is 0, so the floor only avoids 0/0
    return deviation / peak.clamp_min(torch.finfo(x.dtype).tiny)


KL_REDUCTIONS = ("mean", "sum")


def _envelope_fits(envelope: torch.Tensor, target: torch.Tensor) -> bool:
    """Same batch and length as ``target``; channel dimension equal or 1."""
    e, t = envelope.shape, target.shape
    if len(e) != len(t):
        return False
    return e[0] == t[0] and e[-1] == t[-1] and all(a in (1, b) for a, b in zip(e[1:-1], t[1:-1], strict=True))


class MorphologyWeightedMSE(nn.Module):
    """VAE loss: morphology-weighted MSE plus β·KL(q(z|x) ‖ N(0, I)).

    Each sample's squared error is weighted by ``1 + (peak_weight - 1) * envelope``, where the
    envelope in [0, 1] comes from the data when given (``(batch, samples)`` or the target's shape)
    and from ``signal_envelope(target)`` otherwise. β follows ``beta`` at the given step, or is 1
    when ``beta`` is None. The KL is summed over latent dimensions and averaged (``kl_reduction=mean``)
    or summed (``sum``) over the batch. ``free_bits`` > 0 (nats per latent dimension, Kingma et al.
    2016): the loss weighs each dimension's batch-mean KL as at least ``free_bits``, so no gradient
    pushes a dimension below it and the posterior cannot close; the reported ``kl`` stays the true KL.
    """

    TASK = "generation"

    def __init__(
        self,
        peak_weight: float = 10.0,
        beta: CyclicalBeta | None = None,
        kl_reduction: str = "mean",
        free_bits: float = 0.0,
    ) -> None:
        super().__init__()
        if peak_weight < 1.0:
            raise ValueError(f"loss.peak_weight={peak_weight} must be >= 1 (1 gives plain MSE)")
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"loss.kl_reduction must be one of {KL_REDUCTIONS}, got {kl_reduction!r}")
        if not (math.isfinite(free_bits) and free_bits >= 0.0):
            raise ValueError(f"loss.free_bits={free_bits} must be a finite number of nats >= 0 (0: off)")
        self.peak_weight = peak_weight
        self.beta = beta
        self.kl_reduction = kl_reduction
        self.free_bits = float(free_bits)

    def beta_at(self, step: int | None) -> float:
        """β at optimiser step ``step``; ``beta_max`` for ``None``; 1 without a schedule."""
        if self.beta is None:
            return 1.0
        return float(self.beta.beta_max) if step is None else self.beta(step)

    def weights(self, target: torch.Tensor, envelope: torch.Tensor | None) -> torch.Tensor:
        """Per-sample weights, broadcast to ``target``'s shape."""
        if envelope is None:
            envelope = signal_envelope(target)
        elif envelope.dim() == target.dim() - 1:
            envelope = envelope.unsqueeze(-2)
        if not _envelope_fits(envelope, target):
            raise ValueError(
                f"envelope of shape {tuple(envelope.shape)} does not match the target {tuple(target.shape)}; "
                f"the data must give one envelope value per sample, (batch, samples)"
            )
        envelope = envelope.to(target.dtype)
        return (1.0 + (self.peak_weight - 1.0) * envelope).expand_as(target)

    def forward(
        self,
        recon: torch.Tensor,
        target: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        envelope: torch.Tensor | None = None,
        step: int | None = 0,
    ) -> dict[str, torch.Tensor]:
        """The loss terms; ``step=None`` (evaluation) weighs the KL with the schedule's ``beta_max``."""
        squared = (recon - target).square()
        w = self.weights(target, envelope)
        wmse = (w * squared).sum() / w.sum()
        kl_dims = (-0.5 * (1.0 + logvar - mu.square() - logvar.exp())).mean(dim=0)  # batch mean per dim
        scale = 1.0 if self.kl_reduction == "mean" else float(len(mu))
        kl = kl_dims.sum() * scale
        kl_term = kl_dims.clamp_min(self.free_bits).sum() * scale if self.free_bits else kl
        beta = torch.tensor(self.beta_at(step), dtype=wmse.dtype, device=wmse.device)
        return {"loss": wmse + beta * kl_term, "mse": squared.mean(), "wmse": wmse, "kl": kl, "beta": beta}
