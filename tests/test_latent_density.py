"""The gmm sampler's latent mixture (ex-post density estimation) and the memorisation check: known answers
on drawn data, the edge runtime's NumPy draw from the exported mixture, weights that load across
samplers, and clear errors."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from ecg_lab.edge.runtime import latents
from ecg_lab.generation.fidelity import nearest_train_ratio
from ecg_lab.generation.latent_density import LatentDensity, SamplerSettings
from ecg_lab.generation.module import ECGGenerator
from ecg_lab.models.lstm_vae import LSTMVAE

CENTRES = np.array([[4.0, 0.0, 0.0], [-4.0, 2.0, 0.0]])


def two_clusters(n: int, seed: int = 0) -> np.ndarray:
    """30% of ``n`` codes around the first centre, 70% around the second, sd 0.5."""
    rng = np.random.default_rng(seed)
    which = rng.random(n) < 0.3
    return np.where(which[:, None], CENTRES[0], CENTRES[1]) + 0.5 * rng.standard_normal((n, 3))


def share_near_first(z: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(z - CENTRES[0], axis=1) < np.linalg.norm(z - CENTRES[1], axis=1)))


def test_the_mixture_draws_where_the_codes_are() -> None:
    density = LatentDensity(latent_dim=3, components=2)
    assert not bool(density.fitted)
    density.fit(two_clusters(2000), seed=0)
    assert bool(density.fitted)
    z = density.sample(4000, torch.Generator().manual_seed(1)).numpy()
    assert abs(share_near_first(z) - 0.3) < 0.03
    far = np.minimum(*(np.linalg.norm(z - c, axis=1) for c in CENTRES))
    assert np.median(far) < 1.0  # N(0, I) in between the clusters would put them ~4 away
    again = density.sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(again, density.sample(5, torch.Generator().manual_seed(1)))  # seeded


def test_the_edge_runtime_draws_from_the_exported_mixture() -> None:
    density = LatentDensity(latent_dim=3, components=2)
    density.fit(two_clusters(2000), seed=0)
    config = {"hyperparameters": {"latent_dim": 3}, "latent_density": density.as_dict()}
    z = latents(config, 4000, seed=0)
    assert z.shape == (4000, 3) and z.dtype == np.float32
    assert abs(share_near_first(z) - 0.3) < 0.03
    np.testing.assert_array_equal(z, latents(config, 4000, seed=0))
    prior = latents({"hyperparameters": {"latent_dim": 3}}, 4000, seed=0)  # no mixture: N(0, I)
    assert abs(prior.mean()) < 0.05 and abs(prior.std() - 1) < 0.05


def test_too_few_codes_and_bad_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="model.sampler.components=2"):
        LatentDensity(latent_dim=3, components=2).fit(np.zeros((1, 3)))
    with pytest.raises(RuntimeError, match="not fitted"):
        LatentDensity(latent_dim=3, components=2).sample(4)
    with pytest.raises(ValueError, match="model.sampler.kind"):
        SamplerSettings(kind="flow")


def test_nearest_train_ratio_tells_copies_from_new_signals() -> None:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 500)
    signals = np.sin(2 * np.pi * rng.uniform(0.8, 1.6, (600, 1)) * t + rng.uniform(0, 6.3, (600, 1)))
    signals += 0.1 * rng.standard_normal(signals.shape)
    train, held_out, new = signals[:400], signals[400:500], signals[500:]
    assert 0.8 < nearest_train_ratio(new, held_out, train) < 1.25  # as far as held-out windows are
    copies = train[:100] + 0.01 * rng.standard_normal((100, 500))
    assert nearest_train_ratio(copies, held_out, train) < 0.1  # copies of training windows


def generator(kind: str) -> ECGGenerator:
    net = LSTMVAE(seq_len=200, latent_dim=3, conv_channels=4, encoder_hidden=16, decoder_hidden=16)
    return ECGGenerator(net, functools.partial(torch.optim.Adam, lr=1e-3), sampler={"kind": kind})


def test_weights_load_across_samplers() -> None:
    fitted = generator("gmm")
    fitted.latent_density.fit(two_clusters(200), seed=0)
    as_prior = generator("prior")
    as_prior.load_state_dict(fitted.state_dict())  # the mixture is left out, the network loads
    assert as_prior.latent_density is None
    for name, value in as_prior.net.state_dict().items():
        assert torch.equal(value, fitted.net.state_dict()[name]), name
    as_gmm = generator("gmm")
    as_gmm.load_state_dict(as_prior.state_dict())  # no mixture stored: it stays unfitted (fitted at test)
    assert not bool(as_gmm.latent_density.fitted)
    with pytest.raises(RuntimeError, match="Unexpected key"):  # other keys are still checked
        as_gmm.load_state_dict({**fitted.state_dict(), "stray.weight": torch.zeros(1)})
