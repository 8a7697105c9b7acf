"""The VAE loss: cyclical β schedule, morphology envelope and weighting, KL term."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_lab.classification.loss import WeightedCrossEntropy
from ecg_lab.generation.loss import (
    CyclicalBeta,
    MorphologyWeightedMSE,
    cyclical_beta,
    signal_envelope,
)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),
        (6, 0.48),
        (12, 0.96),
        (13, 1.0),
        (24, 1.0),
        (25, 0.0),
        (31, 0.48),
        (99, 1.0),
        (100, 1.0),
        (150, 1.0),
    ],
)
def test_cyclical_beta_known_steps(step: int, expected: float) -> None:
    assert cyclical_beta(step, total_steps=100, cycles=4, rising_fraction=0.5, beta_max=1.0) == pytest.approx(
        expected
    )


def test_cyclical_beta_scales_with_beta_max_and_single_cycle_is_monotone() -> None:
    assert cyclical_beta(6, 100, beta_max=0.5) == pytest.approx(0.24)
    values = [cyclical_beta(s, 10, cycles=1, rising_fraction=1.0) for s in range(10)]
    assert values == pytest.approx([s / 10 for s in range(10)])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(cycles=0), "loss.beta.cycles"),
        (dict(rising_fraction=0.0), "loss.beta.rising_fraction"),
        (dict(rising_fraction=1.5), "loss.beta.rising_fraction"),
        (dict(beta_max=-0.1), "loss.beta.beta_max"),
        (dict(total_steps=0), "loss.beta.total_steps"),
        (dict(warmup_fraction=1.0), "loss.beta.warmup_fraction"),
        (dict(warmup_fraction=-0.1), "loss.beta.warmup_fraction"),
    ],
)
def test_cyclical_beta_validation_names_the_key(kwargs: dict, key: str) -> None:
    args = dict(step=0, total_steps=100) | kwargs
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cyclical_beta(**args)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        CyclicalBeta(**kwargs)


def test_warmup_holds_beta_at_zero_then_cycles_over_the_rest() -> None:
    # 100 steps, 20 of warm-up, then 4 cycles of 20 steps rising over the first 10
    values = {
        s: cyclical_beta(s, 100, 4, 0.5, 1.0, warmup_fraction=0.2) for s in (0, 19, 20, 25, 30, 39, 40, 99)
    }
    assert values == pytest.approx({0: 0.0, 19: 0.0, 20: 0.0, 25: 0.5, 30: 1.0, 39: 1.0, 40: 0.0, 99: 1.0})
    schedule = CyclicalBeta(beta_max=0.5, cycles=2, warmup_fraction=0.5, total_steps=40)
    assert [schedule(s) for s in (0, 19, 20, 25, 30, 35)] == pytest.approx([0, 0, 0, 0.5, 0, 0.5])


def test_cyclical_beta_object_needs_total_steps() -> None:
    schedule = CyclicalBeta(beta_max=2.0)
    with pytest.raises(RuntimeError, match=r"loss\.beta\.total_steps"):
        schedule(0)
    schedule.set_total_steps(100)
    assert schedule(6) == pytest.approx(0.96) and schedule(13) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"trainer\.max_steps"):
        schedule.set_total_steps(float("inf"))


def test_signal_envelope_peaks_near_one_baseline_near_zero() -> None:
    x = torch.zeros(2, 1, 100)
    x[0, 0, 50] = 3.0
    x[1, 0, 20] = -0.5
    env = signal_envelope(x)
    assert env.shape == x.shape
    assert env[0, 0, 50] == 1.0 and env[1, 0, 20] == 1.0
    assert env[0, 0, :50].abs().max() == 0.0
    assert signal_envelope(x[:, 0]).shape == (2, 100)


def test_signal_envelope_of_flat_signal_is_zero() -> None:
    env = signal_envelope(torch.full((3, 1, 50), 7.0))
    assert torch.isfinite(env).all() and (env == 0).all()


def _peak_and_flat_errors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A target with one peak at 10; reconstructions off by 1 at the peak and on the baseline."""
    target = torch.zeros(1, 1, 20)
    target[0, 0, 10] = 5.0
    at_peak, on_flat = target.clone(), target.clone()
    at_peak[0, 0, 10] += 1.0
    on_flat[0, 0, 3] += 1.0
    envelope = torch.zeros(1, 20)
    envelope[0, 10] = 1.0
    return target, at_peak, on_flat, envelope


@pytest.mark.parametrize("given_envelope", [True, False])
def test_peak_error_costs_more_than_flat_error(given_envelope: bool) -> None:
    target, at_peak, on_flat, envelope = _peak_and_flat_errors()
    loss = MorphologyWeightedMSE(peak_weight=10.0)
    mu = logvar = torch.zeros(1, 4)
    env = envelope if given_envelope else None
    peak = loss(at_peak, target, mu, logvar, envelope=env)
    flat = loss(on_flat, target, mu, logvar, envelope=env)
    assert peak["mse"] == pytest.approx(flat["mse"].item())
    assert peak["wmse"] > 5 * flat["wmse"]


def test_perfect_reconstruction_at_the_prior_costs_nothing() -> None:
    x = torch.randn(3, 1, 50)
    out = MorphologyWeightedMSE()(x.clone(), x, torch.zeros(3, 8), torch.zeros(3, 8))
    assert set(out) == {"loss", "mse", "wmse", "kl", "beta"}
    for value in out.values():
        assert value.dim() == 0
    assert out["loss"] == 0.0 and out["kl"] == 0.0 and out["beta"] == 1.0


def test_kl_matches_closed_form_and_beta_scales_it() -> None:
    mu = torch.tensor([[1.0, -2.0], [0.0, 0.5]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [math.log(0.25), 0.0]])
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2 per dimension
    per_dim = (logvar.exp() + mu.square() - 1 - logvar) / 2
    expected = per_dim.sum(dim=1).mean().item()
    x = torch.randn(2, 1, 30)
    schedule = CyclicalBeta(total_steps=100)
    out = MorphologyWeightedMSE(beta=schedule)(x, x, mu, logvar, step=6)
    assert out["kl"].item() == pytest.approx(expected)
    assert out["beta"].item() == pytest.approx(0.48)
    assert out["loss"].item() == pytest.approx(0.48 * expected)
    summed = MorphologyWeightedMSE(kl_reduction="sum")(x, x, mu, logvar)
    assert summed["kl"].item() == pytest.approx(2 * expected)


def test_wmse_equals_mse_for_zero_envelope_and_unit_peak_weight() -> None:
    recon, target = torch.randn(4, 1, 40), torch.randn(4, 1, 40)
    mu = logvar = torch.zeros(4, 2)
    out = MorphologyWeightedMSE(peak_weight=10.0)(recon, target, mu, logvar, envelope=torch.zeros(4, 40))
    assert out["wmse"].item() == pytest.approx(out["mse"].item())
    unit = MorphologyWeightedMSE(peak_weight=1.0)(recon, target, mu, logvar)
    assert unit["wmse"].item() == pytest.approx(unit["mse"].item())


def test_loss_validation_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"loss\.peak_weight"):
        MorphologyWeightedMSE(peak_weight=0.5)
    with pytest.raises(ValueError, match=r"loss\.kl_reduction"):
        MorphologyWeightedMSE(kl_reduction="batchmean")
    x = torch.zeros(2, 1, 10)
    with pytest.raises(ValueError, match="envelope"):
        MorphologyWeightedMSE()(x, x, torch.zeros(2, 2), torch.zeros(2, 2), envelope=torch.zeros(2, 9))


def test_loss_gradient_reaches_reconstruction_and_latents() -> None:
    recon = torch.randn(2, 1, 30, requires_grad=True)
    mu = torch.randn(2, 4, requires_grad=True)
    logvar = torch.randn(2, 4, requires_grad=True)
    MorphologyWeightedMSE()(recon, torch.randn(2, 1, 30), mu, logvar)["loss"].backward()
    for t in (recon, mu, logvar):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_task_tags() -> None:
    assert MorphologyWeightedMSE.TASK == "generation"
    assert WeightedCrossEntropy.TASK == "classification"


def test_free_bits_stop_pushing_dimensions_below_them_and_report_the_true_kl() -> None:
    """Free bits: a dimension whose batch-mean KL is under ``free_bits`` nats gets no KL gradient (the
    posterior cannot close any further); the reported ``kl`` is the true one, and ``free_bits=0`` is the
    plain loss."""
    x = torch.zeros(3, 1, 20)
    mu = torch.tensor([[0.1, 2.0], [-0.1, 1.5], [0.0, 2.5]], requires_grad=True)  # dim 0 nearly closed
    logvar = torch.zeros(3, 2, requires_grad=True)
    plain = MorphologyWeightedMSE(beta=None)(x, x, mu, logvar)
    out = MorphologyWeightedMSE(beta=None, free_bits=0.5)(x, x, mu, logvar)
    assert out["kl"].item() == pytest.approx(plain["kl"].item())  # the true KL either way
    per_dim = (mu.square() / 2).mean(0).detach()
    assert per_dim[0] < 0.5 < per_dim[1]
    assert out["loss"].item() == pytest.approx(0.5 + per_dim[1].item())  # dim 0 counted as 0.5 nats
    out["loss"].backward()
    assert torch.all(mu.grad[:, 0] == 0) and torch.all(mu.grad[:, 1] != 0)
    with pytest.raises(ValueError, match=r"loss\.free_bits=-1"):
        MorphologyWeightedMSE(free_bits=-1.0)
