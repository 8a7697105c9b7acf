"""The field's fidelity measures on known answers: the discriminative score, the Fréchet distance on a
classifier's features and the MMD of log spectra give about 0 for real against real and are far from 0
for real against white noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_lab.errors import ConfigError, MissingFileError
from ecg_lab.generation.analytic import AnalyticSpec, analytic_ecg
from ecg_lab.generation.discriminative import DiscriminativeSettings, discriminative_score
from ecg_lab.generation.fidelity import fidelity, spectral_mmd, step_artefact_ratio
from ecg_lab.generation.frechet import embedder, frechet_distance, load_features
from ecg_lab.models.crnn import CRNN
from ecg_lab.train import train
from tests.conftest import compose_config

FS = 100


pytestmark = pytest.mark.usefixtures("one_thread")


def real_windows(n: int, seed: int, n_samples: int = 1000) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` analytic ECG windows at 55-100 bpm with a random phase and 3% RR jitter, and their R-peaks."""
    rng = np.random.default_rng(seed)
    windows, peaks = [], []
    for _ in range(n):
        rr = 60.0 / rng.uniform(55, 100) * FS
        beats = rng.uniform(0, rr) + np.cumsum(rr * (1 + 0.03 * rng.standard_normal(20)))
        beats = np.round(beats[beats < n_samples]).astype(np.int64)
        windows.append(analytic_ecg(beats, n_samples, FS, AnalyticSpec())[0])
        peaks.append(beats)
    return np.stack(windows), peaks


def noise_like(x: np.ndarray, seed: int) -> np.ndarray:
    """White noise with the real windows' mean and standard deviation."""
    return x.mean() + x.std() * np.random.default_rng(seed).standard_normal(x.shape)


@pytest.fixture(scope="module")
def sets() -> dict[str, np.ndarray]:
    a, _ = real_windows(120, seed=0)
    b, _ = real_windows(120, seed=1)
    return {"real": a, "other_real": b, "noise": noise_like(b, 2)}


# -- discriminative score ----------------------------------------------------------------------------
def test_discriminative_score_real_against_real_is_near_zero(sets) -> None:
    scores = discriminative_score(sets["real"], sets["other_real"])
    assert scores["discriminative_score"] <= 0.15
    assert scores["discriminative_score"] == pytest.approx(abs(scores["discriminative_accuracy"] - 0.5))


def test_discriminative_score_real_against_noise_is_one_half(sets) -> None:
    assert discriminative_score(sets["real"], sets["noise"])["discriminative_score"] == pytest.approx(0.5)


def test_discriminative_score_is_repeatable_and_leaves_the_global_random_state(sets) -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = discriminative_score(sets["real"][:40], sets["other_real"][:40])
    assert torch.equal(torch.get_rng_state(), before)
    assert discriminative_score(sets["real"][:40], sets["other_real"][:40]) == first
    assert np.isnan(discriminative_score(sets["real"][:3], sets["noise"])["discriminative_score"])


def test_discriminative_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.fidelity\.discriminative\.test_fraction"):
        DiscriminativeSettings(test_fraction=1.0)


# -- Fréchet distance --------------------------------------------------------------------------------
def test_frechet_distance_of_known_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3))
    b = np.array([1.0, 2.0, 0.0]) + 2.0 * rng.standard_normal((20000, 3))
    # |mu|² = 5; each dim: 1 + 4 - 2·sqrt(1·4) = 1
    assert frechet_distance(a, b) == pytest.approx(5.0 + 3.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(frechet_distance(a[:1], b))


def test_frechet_distance_on_crnn_features_real_vs_real_and_noise(sets) -> None:
    torch.manual_seed(0)
    features = embedder(CRNN(rnn_layers=1, dropout=0.0, rnn_dropout=0.0).eval())
    real, other, noise = (features(sets[k]) for k in ("real", "other_real", "noise"))
    assert real.shape == (120, 128)
    same, far = frechet_distance(real, other), frechet_distance(real, noise)
    assert same < 0.1 * far


def test_feature_checkpoint_of_a_classifier_at_the_generators_rate(
    tmp_path: Path, cache_dir: Path, sets
) -> None:
    overrides = [
        "trainer=cpu",
        "debug=limit",
        "trainer.max_epochs=1",
        "data.synthetic.n_records=48",
        "data.synthetic.min_duration_s=10",
        "data.synthetic.max_duration_s=12",
        "data.synthetic.shares=[0.25,0.25,0.25,0.25]",
        "data.preprocess.resample_to=100",
        "data.preprocess.window=500",
        "data.preprocess.stride=250",
        "callbacks.progress.interactive=false",
    ]
    train(compose_config("train", overrides, tmp_path / "clf", cache_dir))
    ckpt = next((tmp_path / "clf" / "checkpoints").glob("best-*.ckpt"))
    torch.manual_seed(3)
    before = torch.get_rng_state()
    features = load_features(ckpt, FS)
    assert torch.equal(torch.get_rng_state(), before)  # setting a feature net does not change the training
    real, other, noise = (features(sets[k][:60]) for k in ("real", "other_real", "noise"))
    assert real.shape[0] == 60 and np.isfinite(real).all()
    assert frechet_distance(real, other) < 0.1 * frechet_distance(real, noise)
    with pytest.raises(
        ConfigError, match=r"^model\.fidelity\.feature_ckpt=.*100 Hz.*data\.fs is 250.*resample_to=250"
    ):
        load_features(ckpt, 250)


def test_feature_checkpoint_that_is_missing_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"^model\.fidelity\.feature_ckpt=.*no such checkpoint file"):
        load_features(tmp_path / "nope.ckpt", FS)


# -- MMD of log spectra ------------------------------------------------------------------------------
def smoothed(x: np.ndarray) -> np.ndarray:
    """Each row through a 3-sample moving average: the same beats, blunted."""
    return np.stack([np.convolve(row, np.ones(3) / 3, mode="same") for row in x])


def test_mmd_of_log_spectra_real_vs_real_near_zero_noise_far(sets) -> None:
    x, peaks = real_windows(60, seed=3)
    real, other = sets["real"], sets["other_real"]
    same = fidelity(x, x, other[:60], peaks, FS)
    noise = fidelity(x, x, noise_like(x, 4), peaks, FS)
    assert abs(same["mmd_spectrum"]) < 0.01 * noise["mmd_spectrum"] and noise["mmd_spectrum"] > 0.5
    # in the time domain the same pair is far less clearly apart
    assert noise["mmd"] / abs(same["mmd"]) < noise["mmd_spectrum"] / abs(same["mmd_spectrum"])
    # graded, not saturated: blunted beats and a little noise lie between real and white noise
    slight = spectral_mmd(real, other + 0.01 * np.random.default_rng(5).standard_normal(other.shape), FS)
    blunted = spectral_mmd(real, smoothed(other), FS)
    white, flat = spectral_mmd(real, sets["noise"], FS), spectral_mmd(real, np.zeros_like(other), FS)
    assert abs(spectral_mmd(real, other, FS)) < slight < blunted < 0.5 * white < white < flat
    assert np.isfinite(flat)


# -- the decoder's 0.1-s stepping ---------------------------------------------------------------------
def stepped(x: np.ndarray, samples_per_step: int = 10, amplitude: float = 0.05) -> np.ndarray:
    """Each row plus a small pattern repeating every ``samples_per_step`` samples (a sawtooth)."""
    pattern = np.linspace(-1.0, 1.0, samples_per_step)
    return x + amplitude * x.std() * np.tile(pattern, x.shape[1] // samples_per_step)


def test_step_artefact_ratio_is_about_one_for_real_and_large_for_a_stepped_decoder(sets) -> None:
    real, other = sets["real"], sets["other_real"]
    same = step_artefact_ratio(real, other, FS, step_hz=10.0)
    assert 0.5 < same < 2.0
    # graded: a ripple of 5% of the signal's sd already breaks the bar of 2, one of 20% by far
    ripples = [step_artefact_ratio(real, stepped(other, 10, a), FS, step_hz=10.0) for a in (0.02, 0.05, 0.2)]
    assert same < ripples[0] < 2.0 < ripples[1] < ripples[2] and ripples[2] > 10
    # a pattern at another step rate (5 samples: 20 Hz) shows at its own rate
    assert step_artefact_ratio(real, stepped(other, 5, 0.2), FS, step_hz=20.0) > 10
    assert step_artefact_ratio(real, smoothed(other), FS, step_hz=10.0) < same  # blunting adds no stepping
    x, peaks = real_windows(30, seed=6)
    scores = fidelity(x, x, stepped(other[:30], 10, 0.2), peaks, FS, step_hz=10.0)
    assert scores["step_artefact_ratio"] == step_artefact_ratio(x, stepped(other[:30], 10, 0.2), FS, 10.0)
    assert "step_artefact_ratio" not in fidelity(x, x, other[:30], peaks, FS)
    with pytest.raises(ValueError, match="step_hz=60"):
        step_artefact_ratio(real, other, FS, step_hz=60.0)
