"""Fidelity of reconstructed and generated ECG windows, as numbers.

Signals are 2-D float arrays ``(n_signals, n_samples)`` sampled at ``fs`` Hz. Input R-peaks are a
list of sample-index arrays, one per window, or a boolean mask of the signals' shape.
R-peaks of reconstructions and generated samples are found with NeuroKit2's ``neurokit`` detector;
on ``nk.ecg_simulate`` ECGs at 100 Hz it finds every beat except those in a window's first 0.3 s
or cut by its end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecg_lab.generation.rpeaks import detect_rpeaks

__all__ = [
    "detect_rpeaks",
    "fidelity",
    "mmd",
    "nearest_train_ratio",
    "plausible_rhythm_share",
    "r_amplitude_ratio",
    "rpeak_recall",
    "spectral_mmd",
    "step_artefact_ratio",
]
Peaks = Sequence[np.ndarray] | np.ndarray


def _peak_list(peaks: Peaks, n_signals: int) -> list[np.ndarray]:
    """Per-window int index arrays from a list of index arrays or a boolean ``(n, L)`` mask."""
    if isinstance(peaks, np.ndarray) and peaks.dtype == bool:
        out = [np.flatnonzero(row) for row in np.atleast_2d(peaks)]
    else:
        out = [np.asarray(p, dtype=np.int64).reshape(-1) for p in peaks]
    if len(out) != n_signals:
        raise ValueError(f"got R-peaks for {len(out)} windows but {n_signals} signals")
    return out


def _matched(reference: np.ndarray, found: np.ndarray, tolerance: float) -> np.ndarray:
    """For each reference index, whether some found index lies within ``tolerance`` samples."""
    if found.size == 0:
        return np.zeros(reference.shape, dtype=bool)
    found = np.sort(found)
    j = np.searchsorted(found, reference)
    left = found[np.clip(j - 1, 0, found.size - 1)]
    right = found[np.clip(j, 0, found.size - 1)]
    distance = np.minimum(np.abs(reference - left), np.abs(reference - right))
    return distance <= tolerance + 1e-9


def _detected(signals: np.ndarray, fs: float) -> list[np.ndarray]:
    """NeuroKit2's R-peaks of each row."""
    return [detect_rpeaks(s, fs) for s in np.atleast_2d(signals)]


def _recall(reference: list[np.ndarray], found: list[np.ndarray], tolerance: float) -> float:
    """Share of all ``reference`` peaks (pooled) with a ``found`` peak of the same window within
    ``tolerance`` samples; nan without reference peaks."""
    hits = [_matched(ref, f, tolerance) for ref, f in zip(reference, found, strict=True)]
    pooled = np.concatenate([np.empty(0, dtype=bool), *hits])
    return float(pooled.mean()) if pooled.size else float("nan")


def rpeak_recall(
    input_peaks: Peaks, reconstructions: np.ndarray, fs: float, tolerance_s: float = 0.05
) -> float:
    """Share of all input R-peaks (pooled over windows) with a detected R-peak in the corresponding
    reconstruction within ±``tolerance_s``; nan only when there are no input peaks at all.

    The input R-peaks come from the whole record, so a perfect reconstruction scores below 1 where the
    detector cannot see a peak in the window alone (its first ~0.3 s, the edges):
    :func:`fidelity` reports that ceiling (``rpeak_recall_input``) and the recall of the peaks the
    detector finds in the input window itself (``rpeak_recall_detectable``, 1 when perfect)."""
    recs = np.atleast_2d(reconstructions)
    return _recall(_peak_list(input_peaks, len(recs)), _detected(recs, fs), tolerance_s * fs)


def is_plausible_rhythm(
    peaks: np.ndarray,
    fs: float,
    n_samples: int,
    hr_range: tuple[float, float] = (40, 180),
    max_rr_cv: float = 0.2,
    min_beats: int = 3,
) -> bool:
    """Whether R-peaks form a plausible regular rhythm over a window of ``n_samples``.

    Needs at least ``min_beats`` peaks, a heart rate from the median RR within ``hr_range`` (bpm),
    RR intervals with a coefficient of variation ≤ ``max_rr_cv``, and beats covering the window:
    neither edge gap (start to first peak, last peak to end) longer than 1.5 median RR + 0.3 s
    (NeuroKit2's detector skips peaks in a window's first 0.3 s).
    """
    p = np.unique(np.asarray(peaks, dtype=np.int64))
    if p.size < max(min_beats, 2):
        return False
    rr = np.diff(p) / fs
    median_rr = float(np.median(rr))
    hr_ok = hr_range[0] <= 60.0 / median_rr <= hr_range[1]
    regular = float(rr.std() / rr.mean()) <= max_rr_cv
    covered = max(p[0], n_samples - 1 - p[-1]) / fs <= 1.5 * median_rr + 0.3
    return bool(hr_ok and regular and covered)


def plausible_rhythm_share(signals: np.ndarray, fs: float, **kw: float | tuple[float, float]) -> float:
    """Share of signals whose detected R-peaks form a plausible rhythm (``kw`` as in
    :func:`is_plausible_rhythm`); nan for no signals."""
    sig = np.atleast_2d(signals)
    return _plausible_share(_detected(sig, fs), fs, sig.shape[1], **kw) if len(sig) else float("nan")


def _plausible_share(
    peaks: list[np.ndarray], fs: float, n_samples: int, **kw: float | tuple[float, float]
) -> float:
    """:func:`plausible_rhythm_share` of windows whose R-peaks are already detected."""
    return float(np.mean([is_plausible_rhythm(p, fs, n_samples, **kw) for p in peaks]))


def r_amplitude_ratio(
    inputs: np.ndarray, reconstructions: np.ndarray, input_peaks: Peaks, fs: float, search_s: float = 0.03
) -> float:
    """Median over all input R-peaks of reconstruction R amplitude / input R amplitude.

    Amplitudes are deviations from each signal's median (its baseline), taken within ±``search_s``
    of the peak for both signals, so a one-sample offset in the given peaks does not matter and a
    perfect reconstruction gives exactly 1. The input's amplitude is its largest deviation there
    (keeping its sign, so inverted leads work); the reconstruction's is its largest deviation in
    the same direction. 1 is faithful, < 1 flattened (or of flipped polarity), 0 a flat line.
    Peaks whose input amplitude is negligible (≤ 1e-6 of the input's std) are ignored; nan when
    no peak is left.
    """
    x = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
    r = np.atleast_2d(np.asarray(reconstructions, dtype=np.float64))
    x_dev = x - np.median(x, axis=1, keepdims=True)
    r_dev = r - np.median(r, axis=1, keepdims=True)
    offsets = np.arange(-round(search_s * fs), round(search_s * fs) + 1)
    ratios = []
    for i, p in enumerate(_peak_list(input_peaks, len(x))):
        idx = np.clip(p[:, None] + offsets, 0, x.shape[1] - 1)
        seg = x_dev[i, idx]
        amp = np.take_along_axis(seg, np.abs(seg).argmax(axis=1)[:, None], axis=1)[:, 0]
        keep = np.abs(amp) > 1e-6 * x_dev[i].std()
        rec_amp = (np.sign(amp[keep, None]) * r_dev[i, idx[keep]]).max(axis=1)
        ratios.append(rec_amp / np.abs(amp[keep]))
    pooled = np.concatenate([np.empty(0), *ratios])
    return float(np.median(pooled)) if pooled.size else float("nan")


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b``."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """Median heuristic: the median of the non-zero pairwise Euclidean distances between the rows of
    ``x`` (1.0 when all rows coincide)."""
    z = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    d = _sq_dists(z, z)[np.triu_indices(len(z), 1)]
    d = d[d > 0]
    return float(np.sqrt(np.median(d))) if d.size else 1.0


def mmd(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy MMD² between the sets of rows of
    ``x`` and ``y`` (Gretton et al. 2012), Gaussian kernel ``exp(-|a-b|² / (2 bandwidth²))``.

    Returned as is, not clipped nor square-rooted: 0 in expectation when both sets come from one
    distribution, so it can come out slightly negative; 0 for ``mmd(x, x)``. With equal
    set sizes the cross term leaves out the pairs ``(x[i], y[i])`` (Gretton's equal-size
    U-statistic), so paired sets such as inputs and their reconstructions are not favoured.
    ``bandwidth`` None: :func:`median_bandwidth` of the pooled rows. nan when a set has < 2 rows.
    """
    a = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    b = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        return float("nan")
    sigma = median_bandwidth(np.concatenate([a, b])) if bandwidth is None else float(bandwidth)
    gamma = 1.0 / (2.0 * sigma**2)
    k_xx = np.exp(-gamma * _sq_dists(a, a))
    k_yy = np.exp(-gamma * _sq_dists(b, b))
    k_xy = np.exp(-gamma * _sq_dists(a, b))
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    xy = (k_xy.sum() - np.trace(k_xy)) / (m * (m - 1)) if m == n else k_xy.mean()
    return float(xx + yy - 2.0 * xy)


#: multiples of the median-heuristic bandwidth the spectral MMD averages over, so it grades differences
#: from slight (a little noise) to gross (white noise) instead of saturating at the first
SPECTRUM_SCALES = (1.0, 2.0, 4.0, 8.0, 16.0)


def welch_spectra(signals: np.ndarray, fs: float, segment_s: float = 2.56) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies and each row's power spectral density (Welch, ``segment_s``-long Hann segments,
    mean removed)."""
    from scipy.signal import welch

    x = np.atleast_2d(np.asarray(signals, dtype=np.float64))
    return welch(x, fs=fs, nperseg=min(x.shape[1], max(8, round(segment_s * fs))), axis=-1)


def power_spectra(signals: np.ndarray, fs: float, segment_s: float = 2.56) -> np.ndarray:
    """Each row's power spectral density (:func:`welch_spectra`)."""
    return welch_spectra(signals, fs, segment_s)[1]


def step_artefact_ratio(
    real: np.ndarray, generated: np.ndarray, fs: float, step_hz: float, half_width_hz: float = 0.5
) -> float:
    """The decoder's per-step pattern in numbers: the generated samples' mean power within
    ±``half_width_hz`` of ``step_hz`` (``fs / samples_per_step``: 10 Hz for 10 samples a step at 100 Hz)
    and of each harmonic below the Nyquist frequency, over the real windows' power there; the largest
    of these ratios. About 1 or less: no more stepping than real ECGs show."""
    freqs, p_real = welch_spectra(real, fs)
    p_gen = welch_spectra(generated, fs)[1]
    ratios, floor = [], np.finfo(np.float64).tiny
    for k in range(1, int(fs / 2 // step_hz) + 1):
        band = np.abs(freqs - k * step_hz) <= half_width_hz
        if k * step_hz + half_width_hz < fs / 2 and band.any():
            ratios.append(float(p_gen[:, band].mean() / max(float(p_real[:, band].mean()), floor)))
    if not ratios:
        raise ValueError(f"no harmonic of step_hz={step_hz} lies below the Nyquist frequency of fs={fs}")
    return max(ratios)


def spectral_mmd(real: np.ndarray, generated: np.ndarray, fs: float, relative_floor: float = 0.01) -> float:
    """MMD² between the log power spectra of ``real`` and ``generated`` windows, averaged over kernel
    bandwidths :data:`SPECTRUM_SCALES` × the median heuristic of the real spectra.

    In the time domain two ECGs whose beats fall at different times are as far apart as an ECG and
    noise; in the spectrum rhythm and morphology count, not phase, and white noise (flat spectrum) sits
    far from an ECG. Powers are floored at ``relative_floor`` × the real windows' mean power (-20 dB), so
    bins where the real ECGs have next to nothing do not dominate, and a flat signal stays finite.
    """
    p_real, p_gen = power_spectra(real, fs), power_spectra(generated, fs)
    floor = max(relative_floor * float(p_real.mean()), np.finfo(np.float64).tiny)
    a, b = np.log10(p_real + floor), np.log10(p_gen + floor)
    bandwidth = median_bandwidth(a)
    return float(np.mean([mmd(a, b, scale * bandwidth) for scale in SPECTRUM_SCALES]))


def _nearest_distance(signals: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Each signal's RMS distance to its nearest training window."""
    return np.sqrt(np.maximum(_sq_dists(signals, train).min(axis=1), 0.0) / signals.shape[1])


def nearest_train_ratio(generated: np.ndarray, held_out: np.ndarray, train: np.ndarray) -> float:
    """A memorisation check: the median RMS distance from the generated samples to their nearest
    training window, over the same for held-out real windows. About 1: generated ECGs are as far from
    the training set as new real ones; well below 1: they copy training windows."""
    g, h, t = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (generated, held_out, train))
    return float(np.median(_nearest_distance(g, t)) / np.median(_nearest_distance(h, t)))


def fidelity(
    inputs: np.ndarray,
    reconstructions: np.ndarray,
    generated: np.ndarray,
    input_peaks: Peaks,
    fs: float,
    tolerance_s: float = 0.05,
    hr_range: tuple[float, float] = (40, 180),
    max_rr_cv: float = 0.2,
    step_hz: float | None = None,
) -> dict[str, float]:
    """All fidelity numbers for one validation pass (plain floats).

    ``mmd`` (inputs vs generated) and ``mmd_recon`` (inputs vs reconstructions) share one kernel
    bandwidth, the median heuristic on the inputs alone, so they are comparable with each other and,
    on a fixed validation set, across epochs. ``mmd_spectrum`` compares the inputs' and the generated
    samples' log power spectra (:func:`spectral_mmd`). With ``step_hz`` (the decoder's step rate),
    ``step_artefact_ratio`` (:func:`step_artefact_ratio`). ``rpeak_recall`` is measured against
    ``input_peaks``; ``rpeak_recall_input`` is the same for the inputs themselves (the most a perfect
    reconstruction can score) and ``rpeak_recall_detectable`` against the peaks detected in the input
    windows (1 for a perfect reconstruction).
    """
    x = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
    r = np.atleast_2d(np.asarray(reconstructions, dtype=np.float64))
    g = np.atleast_2d(np.asarray(generated, dtype=np.float64))
    rhythm = {"hr_range": hr_range, "max_rr_cv": max_rr_cv}
    bandwidth = median_bandwidth(x)
    reference, tolerance = _peak_list(input_peaks, len(x)), tolerance_s * fs
    in_inputs, in_recons = _detected(x, fs), _detected(r, fs)  # each detected once
    step = {} if step_hz is None else {"step_artefact_ratio": step_artefact_ratio(x, g, fs, step_hz)}
    return {
        "mse": float(np.mean((x - r) ** 2)),
        "rpeak_recall": _recall(reference, in_recons, tolerance),
        "rpeak_recall_input": _recall(reference, in_inputs, tolerance),
        "rpeak_recall_detectable": _recall(in_inputs, in_recons, tolerance),
        "rhythm_plausible": plausible_rhythm_share(g, fs, **rhythm),
        "rhythm_plausible_input": _plausible_share(in_inputs, fs, x.shape[1], **rhythm),
        "r_amplitude_ratio": r_amplitude_ratio(x, r, input_peaks, fs),
        "mmd": mmd(x, g, bandwidth),
        "mmd_recon": mmd(x, r, bandwidth),
        "mmd_spectrum": spectral_mmd(x, g, fs),
        **step,
    }
