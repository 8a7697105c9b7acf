"""Fidelity numbers on NeuroKit2-simulated ECGs: perfect, flat, scaled, shifted, noisy and inverted."""

from __future__ import annotations

import warnings
from functools import cache

import neurokit2 as nk
import numpy as np
import pytest
from scipy.signal import resample_poly

from ecg_lab.generation.fidelity import (
    detect_rpeaks,
    fidelity,
    is_plausible_rhythm,
    mmd,
    plausible_rhythm_share,
    r_amplitude_ratio,
    rpeak_recall,
)

FS = 100
HEART_RATES = (60, 70, 80, 90, 100)
KEYS = {
    "mse",
    "rpeak_recall",
    "rpeak_recall_input",
    "rpeak_recall_detectable",
    "rhythm_plausible",
    "rhythm_plausible_input",
    "r_amplitude_ratio",
    "mmd",
    "mmd_recon",
    "mmd_spectrum",
}


@cache
def simulate(heart_rate: int, seed: int, duration: int = 10) -> np.ndarray:
    """An ECG at 100 Hz, simulated at 500 Hz and resampled: NeuroKit2 0.2.13's ``ecgsyn`` can loop
    forever when asked for 100 Hz directly (e.g. heart_rate=60, random_state=0)."""
    x = nk.ecg_simulate(duration=duration, sampling_rate=500, heart_rate=heart_rate, random_state=seed)
    return resample_poly(x, 1, 5)


def ecgs(seed: int = 0, heart_rates: tuple[int, ...] = HEART_RATES) -> np.ndarray:
    return np.stack([simulate(hr, seed + i) for i, hr in enumerate(heart_rates)])


def peaks_of(x: np.ndarray) -> list[np.ndarray]:
    return [detect_rpeaks(s, FS) for s in x]


def test_simulated_ecgs_have_every_beat_detected_and_a_plausible_rhythm() -> None:
    x = ecgs()
    for hr, p in zip(HEART_RATES, peaks_of(x), strict=True):
        assert abs(len(p) - hr / 6) <= 1.5
        assert np.median(np.diff(p)) / FS == pytest.approx(60 / hr, abs=0.03)
    assert plausible_rhythm_share(x, FS) == 1.0


def test_perfect_reconstruction_scores_one() -> None:
    x = ecgs()
    peaks = peaks_of(x)
    assert rpeak_recall(peaks, x, FS) == 1.0
    assert r_amplitude_ratio(x, x, peaks, FS) == pytest.approx(1.0)
    scores = fidelity(x, x, x, peaks, FS)
    assert set(scores) == KEYS and all(type(v) is float for v in scores.values())
    assert scores["mse"] == 0.0 and scores["rpeak_recall"] == 1.0 and scores["r_amplitude_ratio"] == 1.0
    assert scores["rhythm_plausible"] == 1.0 and scores["rhythm_plausible_input"] == 1.0
    assert scores["rpeak_recall_input"] == 1.0 and scores["rpeak_recall_detectable"] == 1.0
    assert scores["mmd"] == pytest.approx(0.0, abs=1e-12) and scores["mmd_recon"] == pytest.approx(
        0.0, abs=1e-12
    )
    assert scores["mmd_spectrum"] == pytest.approx(0.0, abs=1e-12)


def test_a_peak_the_detector_cannot_see_in_the_window_lowers_only_the_ceiling() -> None:
    """An input R-peak from the whole record in a window's first 0.05 s (where NeuroKit2 finds none):
    a perfect reconstruction misses it, so rpeak_recall and its ceiling drop alike, while the recall of
    the detectable peaks stays 1; a flattened reconstruction scores 0 on all three."""
    x = ecgs()
    peaks = [np.concatenate([[3], p]) for p in peaks_of(x)]
    n = sum(len(p) for p in peaks)
    scores = fidelity(x, x, x, peaks, FS)
    assert scores["rpeak_recall"] == scores["rpeak_recall_input"] == pytest.approx(1 - len(x) / n)
    assert scores["rpeak_recall_detectable"] == 1.0
    flat = fidelity(x, np.zeros_like(x), x, peaks, FS)
    assert flat["rpeak_recall"] == flat["rpeak_recall_detectable"] == 0.0 and flat["rpeak_recall_input"] < 1


@pytest.mark.parametrize("level", [0.0, 0.7])
def test_flat_line_scores_zero(level: float) -> None:
    """A flat line has no beats and no amplitude above its baseline: recall, rhythm and ratio are 0."""
    x = ecgs()
    peaks = peaks_of(x)
    flat = np.full_like(x, level)
    assert rpeak_recall(peaks, flat, FS) == 0.0
    assert plausible_rhythm_share(flat, FS) == 0.0
    assert r_amplitude_ratio(x, flat, peaks, FS) == 0.0
    scores = fidelity(x, flat, flat, peaks, FS)
    assert scores["rhythm_plausible"] == 0.0 and scores["rhythm_plausible_input"] == 1.0
    assert scores["mmd"] > 0.1 and scores["mmd_recon"] == pytest.approx(scores["mmd"])
    assert scores["mse"] == pytest.approx(np.mean((x - level) ** 2))


def test_half_amplitude_on_another_baseline_gives_ratio_one_half() -> None:
    x = ecgs()
    peaks = peaks_of(x)
    half = 0.5 * x + 0.3
    assert r_amplitude_ratio(x, half, peaks, FS) == pytest.approx(0.5)
    assert rpeak_recall(peaks, half, FS) == 1.0


def test_inverted_lead_is_measured_in_its_own_polarity() -> None:
    x = ecgs()
    peaks = peaks_of(x)  # the R-peaks of the upright lead, so -x has its deflection below baseline
    assert r_amplitude_ratio(-x, -0.5 * x, peaks, FS) == pytest.approx(0.5)
    assert r_amplitude_ratio(-x, x, peaks, FS) < 0.3  # flipped back: only its S waves point that way


@pytest.mark.parametrize(
    ("shift", "tolerance_s", "kept"), [(3, 0.05, True), (10, 0.05, False), (10, 0.15, True)]
)
def test_shifted_reconstruction_keeps_recall_only_within_tolerance(
    shift: int, tolerance_s: float, kept: bool
) -> None:
    long = [simulate(hr, 10 + hr, duration=12) for hr in HEART_RATES]
    x = np.stack([s[100:1100] for s in long])
    shifted = np.stack([s[100 - shift : 1100 - shift] for s in long])  # each wave `shift` samples later
    recall = rpeak_recall(peaks_of(x), shifted, FS, tolerance_s=tolerance_s)
    assert recall >= 0.95 if kept else recall == 0.0


def test_peaks_as_boolean_mask_or_index_lists_agree() -> None:
    x = ecgs()
    peaks = peaks_of(x)
    mask = np.zeros(x.shape, dtype=bool)
    for row, p in zip(mask, peaks, strict=True):
        row[p] = True
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(x.shape)
    assert rpeak_recall(mask, noisy, FS) == rpeak_recall(peaks, noisy, FS)
    assert r_amplitude_ratio(x, noisy, mask, FS) == r_amplitude_ratio(x, noisy, peaks, FS)
    with pytest.raises(ValueError, match="R-peaks for 4 windows but 5 signals"):
        rpeak_recall(peaks[:4], x, FS)


def test_no_input_peaks_give_nan() -> None:
    x = ecgs()
    none = [np.empty(0, dtype=int)] * len(x)
    assert np.isnan(rpeak_recall(none, x, FS)) and np.isnan(r_amplitude_ratio(x, x, none, FS))


@pytest.mark.parametrize(
    ("peaks", "plausible"),
    [
        (np.arange(50, 1000, 100), True),  # 60 bpm
        (np.arange(50, 1000, 200), False),  # 30 bpm
        (np.arange(10, 1000, 30), False),  # 200 bpm
        (np.cumsum(np.tile([40, 120], 6)), False),  # RR alternating 0.4 / 1.2 s
        (np.arange(50, 300, 100), False),  # regular 60 bpm, but no beats after 3 s
    ],
)
def test_is_plausible_rhythm(peaks: np.ndarray, plausible: bool) -> None:
    assert is_plausible_rhythm(peaks, FS, 1000) is plausible


def test_fewer_than_min_beats_is_not_a_rhythm() -> None:
    two_beats = np.array([60, 160])  # 60 bpm over a 2-s window
    assert not is_plausible_rhythm(two_beats, FS, 200)
    assert is_plausible_rhythm(two_beats, FS, 200, min_beats=2)


def test_white_noise_has_no_plausible_rhythm() -> None:
    noise = np.random.default_rng(1).standard_normal((20, 1000))
    assert plausible_rhythm_share(noise, FS) == 0.0


@pytest.mark.parametrize("bad", [np.zeros(1000), np.full(1000, 2.5), np.full(1000, np.nan), np.ones(5)])
def test_detect_rpeaks_gives_empty_int_array_quietly(bad: np.ndarray) -> None:
    noisy_nan = simulate(70, 0).copy()
    noisy_nan[500] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for signal in (bad, noisy_nan):
            peaks = detect_rpeaks(signal, FS)
            assert peaks.dtype == np.int64 and peaks.size == 0


def mmd_reference(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Gretton et al.'s unbiased MMD² written out term by term."""
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    if m == n:
        xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n) if i != j) / (m * (m - 1))
    else:
        xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("n_y", [6, 9])
def test_mmd_matches_the_estimator_written_out(n_y: int) -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((6, 4)), 0.5 + rng.standard_normal((n_y, 4))
    assert mmd(x, y, bandwidth=1.7) == pytest.approx(mmd_reference(x, y, 1.7), rel=1e-10)


def test_mmd_is_unbiased_so_same_distribution_averages_zero() -> None:
    rng = np.random.default_rng(3)
    values = np.array([mmd(rng.standard_normal((20, 5)), rng.standard_normal((20, 5))) for _ in range(200)])
    assert (values < 0).any()
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))


def test_mmd_separates_real_from_flat_and_noise() -> None:
    rates = (60, 65, 70, 75, 80, 85, 90, 95)
    a, b = ecgs(seed=0, heart_rates=rates), ecgs(seed=100, heart_rates=rates)
    same = mmd(a, b)
    flat = mmd(a, np.zeros_like(b))
    noise = mmd(a, b.std() * np.random.default_rng(4).standard_normal(b.shape))
    assert mmd(a, a) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(mmd(a[:1], b))
    assert abs(same) < 0.1 * min(flat, noise)
