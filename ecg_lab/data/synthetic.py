"""Synthetic single-lead ECG dataset in the PhysioNet/CinC 2017 layout: the framework's default data.

Records are built from NeuroKit2's ECGSYN model (McSharry et al., 2003). For each record a few
beat cycles of a randomly drawn morphology are simulated at a constant rate; the record is then
rendered beat by beat onto a rhythm drawn for its class (a piecewise-linear time map keeps P, QRS
and T at their natural speed and stretches or squeezes diastole), and noise is added:

- ``N``: sinus rhythm at 55-100 bpm with respiratory/Mayer-wave variability, P waves present.
- ``A``: atrial fibrillation: irregularly irregular RR (independent draws, varying degree), no
  P waves, 4-9 Hz fibrillatory f-waves.
- ``O``: other rhythms: premature atrial or ventricular beats (with compensatory pauses, bigeminy,
  trigeminy), brady- or tachycardia, sometimes wide QRS, inverted T or a long PR interval.
- ``~``: any rhythm buried under strong muscle noise, baseline wander, electrode-motion steps and
  spikes, lead-off stretches and clipping.

Every record is a function of ``(seed, record index)`` only, so serial and parallel generation
write byte-identical files. :meth:`SyntheticSpec.ensure` caches a dataset under
``cache_dir/synthetic/<key>/training2017``, created atomically; the result is read back by
:func:`ecg_lab.data.physionet2017.read_records` like the real data. Command line::

    python -m ecg_lab.data.synthetic --out DIR [--n-records N] [--seed S]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.signal

from ecg_lab.data.physionet2017 import CLASSES

log = logging.getLogger(__name__)

#: Bump whenever the generated signals or files change, so cached datasets are regenerated.
GENERATOR_VERSION = 1
GAIN = 1000  # counts per mV, as in the real data


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: record count, durations (s), sampling rate, seed, class shares (N, A, O, ~)."""

    n_records: int = 300
    min_duration_s: float = 12.0
    max_duration_s: float = 24.0
    fs: int = 300
    seed: int = 0
    shares: tuple[float, float, float, float] = (0.5, 0.15, 0.25, 0.10)  # N, A, O, ~
    n_jobs: int = 2  # processes used to simulate; does not change the output

    def __post_init__(self) -> None:
        # Normalise types (Hydra hands over ints for floats and lists for tuples) so keys are stable.
        for name, cast in (
            ("n_records", int),
            ("min_duration_s", float),
            ("max_duration_s", float),
            ("fs", int),
            ("seed", int),
            ("n_jobs", int),
        ):
            object.__setattr__(self, name, cast(getattr(self, name)))
        object.__setattr__(self, "shares", tuple(float(s) for s in self.shares))
        if self.n_records < 1:
            raise ValueError(f"n_records must be >= 1, got {self.n_records}")
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise ValueError(
                f"need 0 < min_duration_s <= max_duration_s, got "
                f"{self.min_duration_s} and {self.max_duration_s}"
            )
        if self.fs <= 0:
            raise ValueError(f"fs must be positive, got {self.fs}")
        if len(self.shares) != len(CLASSES) or min(self.shares) < 0 or sum(self.shares) <= 0:
            raise ValueError(
                f"shares must be {len(CLASSES)} non-negative numbers (N, A, O, ~) with a "
                f"positive sum, got {self.shares}"
            )

    def key(self) -> str:
        """Short stable hash of the generator version and all fields but ``n_jobs`` (output-neutral)."""
        fields = {k: v for k, v in asdict(self).items() if k != "n_jobs"}
        blob = json.dumps({"version": GENERATOR_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def ensure(self, cache_dir: str | Path) -> Path:
        """Return ``cache_dir/synthetic/<key>/training2017``, generating it first if it is missing.

        Generation writes into a temporary folder beside the target and renames it into place, so
        a concurrent or interrupted run never leaves a half-written folder under the final name.
        """
        base = Path(cache_dir).expanduser() / "synthetic"
        final = base / self.key()
        record_dir = final / "training2017"
        if (record_dir / "REFERENCE.csv").is_file():
            log.info("Using cached synthetic dataset %s", record_dir)
            return record_dir
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(base)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.key()}-", dir=base))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            log.info(
                "Generating synthetic ECG dataset (%d records, seed %d) into %s",
                self.n_records,
                self.seed,
                record_dir,
            )
            start = time.perf_counter()
            write_dataset(self, tmp / "training2017")
            (tmp / "spec.json").write_text(
                json.dumps({"generator_version": GENERATOR_VERSION, **asdict(self)}, indent=2) + "\n"
            )
            if final.exists() and not (record_dir / "REFERENCE.csv").is_file():
                # Left over by something else (not by us: we only ever rename complete folders).
                log.warning("Replacing incomplete synthetic dataset folder %s", final)
                shutil.rmtree(final)
            try:
                os.replace(tmp, final)
            except OSError:
                if not (record_dir / "REFERENCE.csv").is_file():
                    raise
                log.info("Another process generated %s first; using it", record_dir)
            else:
                log.info("Synthetic dataset ready in %.1f s: %s", time.perf_counter() - start, record_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return record_dir


def _remove_stale_temps(base: Path, max_age_s: float = 24 * 3600) -> None:
    """Delete temporary folders of runs that were killed long ago (recent ones may still be in use)."""
    for path in base.glob(".tmp-*"):
        try:
            if time.time() - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def class_counts(n_records: int, shares: Sequence[float]) -> list[int]:
    """Split ``n_records`` by ``shares`` (largest-remainder rounding, so the counts sum to ``n_records``)."""
    raw = np.asarray(shares, dtype=float) / float(np.sum(shares)) * n_records
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n_records - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def assign_labels(spec: SyntheticSpec) -> list[str]:
    """Labels of records ``0..n_records-1``: class counts follow ``spec.shares``, order shuffled by seed."""
    labels = np.repeat(np.array(CLASSES), class_counts(spec.n_records, spec.shares))
    return np.random.default_rng([spec.seed, 1]).permutation(labels).tolist()


def _record_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators (metadata, signal) derived from ``(seed, index)`` alone."""
    meta, sig = np.random.SeedSequence([seed, 0], spawn_key=(index,)).spawn(2)
    return np.random.default_rng(meta), np.random.default_rng(sig)


# --------------------------------------------------------------------------------------------------
# Beat morphology: ECGSYN cycles
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Morphology:
    """ECGSYN wave parameters for (P, Q, R, S, T): angles (degrees), amplitudes, widths (radians)."""

    ti: tuple[float, ...]
    ai: tuple[float, ...]
    bi: tuple[float, ...]


@dataclass(frozen=True)
class _Source:
    """R-to-R cycles sampled at ``fs``, in units of the R amplitude (isoelectric 0, both ends = R apex).

    ``keep_after``/``keep_before`` (s) are the spans after/before R (S-T and P-Q) rendered at their
    natural speed; only the part between them is stretched to fit a beat's RR interval.
    """

    cycles: tuple[np.ndarray, ...]
    fs: int
    keep_after: float
    keep_before: float

    @property
    def rr(self) -> float:
        """Nominal R-to-R interval (s)."""
        return (self.cycles[0].size - 1) / self.fs


@functools.cache
def _source_fs() -> int:
    """Sampling rate for ECGSYN sources (rendered down to the record's fs later).

    NeuroKit2's ECGSYN loops forever when its RR series, upsampled with ``scipy.ndimage.zoom``, ends in
    a spurious zero, which happens for some lengths (e.g. 8 s at 600 Hz): pick a rate free of that.
    """
    from neurokit2.signal import signal_resample

    for fs in (1000, 1200, 800, 500):
        if all(
            signal_resample(np.ones(n), sampling_rate=1, desired_sampling_rate=fs).min() > 0.5
            for n in (4, 8, 16)
        ):
            return fs
    raise RuntimeError("no safe sampling rate for NeuroKit2's ECGSYN found")


def _normal_morphology(rng: np.random.Generator, p_wave: bool = True) -> _Morphology:
    """A randomly varied normal beat (ECGSYN defaults jittered); ``p_wave=False`` drops the P wave."""
    u = rng.uniform
    return _Morphology(
        ti=(-70 + u(-8, 8), -15 + u(-2, 2), 0.0, 15 + u(-2, 2), 100 + u(-10, 10)),
        ai=(
            1.2 * u(0.6, 1.5) if p_wave else 0.0,
            -5 * u(0.3, 1.6),
            30 * u(0.8, 1.2),
            -7.5 * u(0.3, 1.8),
            0.75 * u(0.4, 1.4),
        ),
        bi=(0.25 * u(0.8, 1.2), *(0.1 * u(0.85, 1.3) for _ in range(3)), 0.4 * u(0.8, 1.2)),
    )


def _abnormal_morphology(m: _Morphology, rng: np.random.Generator) -> _Morphology:
    """One conduction/repolarisation abnormality: wide QRS, inverted T, or long PR."""
    ti, ai, bi = list(m.ti), list(m.ai), list(m.bi)
    kind = rng.integers(3)
    if kind == 0:  # bundle-branch-block-like wide QRS with a deep, broad S
        bi[1:4] = [b * rng.uniform(1.8, 2.5) for b in bi[1:4]]
        ai[3] *= rng.uniform(1.3, 2.0)
        ti[3] += rng.uniform(5, 15)
    elif kind == 1:  # inverted T wave
        ai[4] = -abs(ai[4]) * rng.uniform(0.6, 1.5)
    else:  # first-degree AV block: P wave further ahead of QRS
        ti[0] = -rng.uniform(90, 110)
    return _Morphology(tuple(ti), tuple(ai), tuple(bi))


def _ventricular_morphology(rng: np.random.Generator) -> _Morphology:
    """A premature ventricular beat: no P wave, wide QRS, large discordant T wave."""
    u = rng.uniform
    return _Morphology(
        ti=(-70.0, -25 + u(-5, 5), 0.0, 30 + u(-5, 5), 115 + u(-10, 10)),
        ai=(0.0, -u(1, 4), 25 * u(0.8, 1.2), -u(8, 20), -u(1.0, 2.5)),
        bi=(0.25, u(0.2, 0.3), u(0.2, 0.28), u(0.2, 0.3), u(0.45, 0.6)),
    )


def _simulate_source(m: _Morphology, hr: float, seed: int, gain: float = 1.0) -> _Source:
    """Simulate ECGSYN at a constant ``hr`` and cut its steady-state R-to-R cycles, normalised to R = 1."""
    import neurokit2 as nk  # slow import, only needed when simulating

    rr = 60.0 / hr
    # At a constant rate the model's phase turns uniformly and R (angle 0) falls at multiples of rr.
    # Keep >= 3 R peaks after the 1.2-s start-up transient; ECGSYN integrates over the next power of
    # two of seconds, so stay just under one.
    for limit in (3.95, 7.95, 15.95):
        duration = rr * np.floor(limit / rr)
        beats = np.arange(np.ceil(1.2 / rr), np.floor((duration - 0.05) / rr) + 1)
        if beats.size >= 3:
            break
    fs = _source_fs()
    sig = np.asarray(
        nk.ecg_simulate(
            duration=duration,
            sampling_rate=fs,
            heart_rate=hr,
            heart_rate_std=0,
            noise=0,
            method="ecgsyn",
            random_state=seed,
            ti=m.ti,
            ai=m.ai,
            bi=m.bi,
        ),
        dtype=float,
    )
    half = int(0.1 * rr * fs)
    peaks = [int(c) - half + int(np.argmax(sig[int(c) - half : int(c) + half])) for c in beats * rr * fs]
    # Isoelectric level: the most frequent value (flat PR, ST and TP segments).
    hist, edges = np.histogram(sig[peaks[0] :], bins=np.arange(sig.min(), sig.max() + 0.01, 0.005))
    iso = edges[np.argmax(hist)] + 0.0025
    x = (sig - iso) / (np.median(sig[peaks]) - iso) * gain
    cycles = []
    for a, b in zip(peaks[:-1], peaks[1:], strict=True):
        c = x[a : b + 1]
        cycles.append(c - np.linspace(c[0] - gain, c[-1] - gain, c.size))  # both ends exactly at the R apex
    # Spans that keep their natural speed, from the wave angles as ECGSYN rescales them for the rate.
    f1, f2 = np.sqrt(hr / 60), (hr / 60) ** 0.25
    t_end = np.deg2rad(m.ti[4]) * f2 + 2.5 * m.bi[4] * f1
    onset = (
        (np.deg2rad(-m.ti[0]) * f2 + 2.5 * m.bi[0] * f1)
        if m.ai[0]
        else (np.deg2rad(-m.ti[1]) * f1 + 2.5 * m.bi[1] * f1)
    )
    after, before = t_end / (2 * np.pi) * rr, onset / (2 * np.pi) * rr
    shrink = min(1.0, 0.9 * rr / (after + before))
    return _Source(tuple(cycles), fs, after * shrink, before * shrink)


def _map_cycle(src: _Source, cycle: np.ndarray, tau: np.ndarray, rr: float) -> np.ndarray:
    """Sample ``cycle`` (source R-to-R) at times ``tau`` of a target R-to-R interval of length ``rr``."""
    rr0 = (cycle.size - 1) / src.fs
    s = min(1.0, rr / rr0)
    src_t = np.interp(
        tau,
        [0.0, src.keep_after * s, rr - src.keep_before * s, rr],
        [0.0, src.keep_after, rr0 - src.keep_before, rr0],
    )
    return np.interp(src_t * src.fs, np.arange(cycle.size), cycle)


def _render(
    beats: np.ndarray,
    kinds: np.ndarray,
    sources: Sequence[_Source],
    n: int,
    fs: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render R peaks at times ``beats`` (s; first <= 0, last >= n/fs) using ``sources[kinds[k]]``.

    Each R-to-R interval takes its first half (S, T) from the beat that starts it and its second half
    (P, Q) from the beat that ends it, cross-faded in diastole. Beat amplitudes vary a little.
    """
    t = np.arange(n) / fs
    out = np.zeros(n)
    bounds = np.searchsorted(t, beats)
    picks = [rng.integers(len(s.cycles), size=len(beats)) for s in sources]
    for k in range(len(beats) - 1):
        i0, i1 = bounds[k], bounds[k + 1]
        if i0 == i1:
            continue
        tau, rr = t[i0:i1] - beats[k], beats[k + 1] - beats[k]
        first, second = sources[kinds[k]], sources[kinds[k + 1]]
        y = _map_cycle(first, first.cycles[picks[kinds[k]][k]], tau, rr)
        if kinds[k + 1] != kinds[k]:
            s = min(1.0, rr / first.rr)
            split = 0.5 * (first.keep_after * s + rr - second.keep_before * s)
            w = np.clip((tau - split) / 0.06 + 0.5, 0.0, 1.0)
            y2 = _map_cycle(second, second.cycles[picks[kinds[k + 1]][k + 1]], tau, rr)
            y = (1 - w) * y + w * y2
        out[i0:i1] = y
    # Respiratory amplitude modulation plus per-beat jitter.
    env = 1 + rng.uniform(0.02, 0.12) * _sine(t, rng.uniform(0.15, 0.4), rng)
    env *= np.interp(t, beats, 1 + rng.normal(0, 0.02, len(beats)))
    return out * env


# --------------------------------------------------------------------------------------------------
# Rhythms: R-peak times per class
# --------------------------------------------------------------------------------------------------
def _sinus_times(
    duration: float,
    hr: float,
    rng: np.random.Generator,
    variability: float = 1.0,
) -> np.ndarray:
    """R times of sinus rhythm: respiratory sinus arrhythmia, a 0.1-Hz Mayer wave and beat jitter."""
    rr0 = 60.0 / hr
    rsa, f_r, ph_r = variability * rng.uniform(0.005, 0.05), rng.uniform(0.15, 0.4), rng.uniform(0, 2 * np.pi)
    lf, ph_l = variability * rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi)
    jitter = variability * rng.uniform(0.003, 0.015)
    times = [-rng.uniform(0.05, 1.0) * rr0]
    while times[-1] < duration:
        tk = times[-1]
        times.append(
            tk
            + rr0
            * (
                1
                + rsa * np.sin(2 * np.pi * f_r * tk + ph_r)
                + lf * np.sin(2 * np.pi * 0.1 * tk + ph_l)
                + jitter * rng.standard_normal()
            )
        )
    return np.array(times)


def _sinus(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Normal sinus rhythm, 55-100 bpm, in R-amplitude units."""
    hr = rng.uniform(55, 100)
    src = _simulate_source(_normal_morphology(rng), hr, int(rng.integers(2**31)))
    beats = _sinus_times(n / fs, hr, rng)
    return _render(beats, np.zeros(len(beats), int), [src], n, fs, rng)


def _atrial_fibrillation(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """AF: independently drawn RR intervals (irregularity varies by record), no P waves, f-waves."""
    hr = rng.uniform(65, 145)
    rr0, irregularity = 60.0 / hr, rng.uniform(0.2, 1.0)
    times = [-rng.uniform(0.05, 1.0) * rr0]
    while times[-1] < n / fs:
        times.append(times[-1] + max(0.27, rr0 * (1 + irregularity * (rng.uniform(0.6, 1.45) - 1.025))))
    src = _simulate_source(_normal_morphology(rng, p_wave=False), hr, int(rng.integers(2**31)))
    ecg = _render(np.array(times), np.zeros(len(times), int), [src], n, fs, rng)
    # Fibrillatory waves: a drifting 4-9 Hz oscillation with a harmonic and slow amplitude changes.
    t = np.arange(n) / fs
    knots = np.arange(int(t[-1]) + 2, dtype=float)
    drift = np.interp(t, knots, rng.normal(0, 0.4, knots.size))
    phase = 2 * np.pi * np.cumsum(np.clip(rng.uniform(4, 9) + drift, 3.5, 10)) / fs
    amp = rng.uniform(0.005, 0.02) if rng.random() < 0.15 else rng.uniform(0.02, 0.15)
    am = 1 + 0.4 * _sine(t, rng.uniform(0.05, 0.3), rng)
    return ecg + amp * am * (np.sin(phase) + 0.3 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))


def _other_rhythm(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Other rhythms: brady/tachycardia and/or frequent premature beats, sometimes abnormal morphology."""
    rate = rng.choice(["brady", "tachy", "normal"], p=[0.3, 0.35, 0.35])
    hr = {"brady": rng.uniform(40, 55), "tachy": rng.uniform(105, 150), "normal": rng.uniform(60, 100)}[rate]
    morph = _normal_morphology(rng)
    if rng.random() < 0.35:
        morph = _abnormal_morphology(morph, rng)
    sources = [_simulate_source(morph, hr, int(rng.integers(2**31)))]
    sinus = _sinus_times(n / fs + 3 * 60 / hr, hr, rng, variability=0.5 if rate == "tachy" else 1.0)
    if rate != "normal" and rng.random() > 0.4:  # regular brady/tachycardia without ectopy
        return _render(sinus, np.zeros(len(sinus), int), sources, n, fs, rng)
    ventricular = rng.random() < 0.55
    if ventricular:
        sign = -1.0 if rng.random() < 0.4 else 1.0
        sources.append(
            _simulate_source(
                _ventricular_morphology(rng), hr, int(rng.integers(2**31)), gain=sign * rng.uniform(1.1, 2.0)
            )
        )
    every = int(rng.choice([0, 2, 3], p=[0.7, 0.15, 0.15]))  # 0: random, 2: bigeminy, 3: trigeminy
    p_ectopic = rng.uniform(0.08, 0.3)
    times, kinds = [sinus[0]], [0]
    rrs = np.diff(sinus)
    for k, rr in enumerate(rrs):
        ectopic = (k % every == every - 1) if every else (rng.random() < p_ectopic)
        if ectopic and kinds[-1] == 0 and k > 0:
            c = rng.uniform(0.5, 0.75) if ventricular else rng.uniform(0.55, 0.8)
            pause = (2 - c) if ventricular else rng.uniform(1.0, 1.25)
            times += [times[-1] + c * rr, times[-1] + (c + pause) * rr]
            kinds += [int(ventricular), 0]
        else:
            times.append(times[-1] + rr)
            kinds.append(0)
        if times[-1] >= n / fs:
            break
    return _render(np.array(times), np.array(kinds), sources, n, fs, rng)


# --------------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------------
def _sine(t: np.ndarray, freq: float, rng: np.random.Generator) -> np.ndarray:
    """A unit sine of frequency ``freq`` (Hz) at times ``t`` with a random phase."""
    return np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def _emg(n: int, fs: int, rng: np.random.Generator, sd: float, bursty: bool) -> np.ndarray:
    """Muscle noise: broadband (> 5 Hz) Gaussian noise of standard deviation ~``sd`` mV."""
    b, a = scipy.signal.butter(2, 5 / (fs / 2), "highpass")
    x = scipy.signal.lfilter(b, a, rng.standard_normal(n))
    if bursty:
        t = np.arange(n) / fs
        x *= np.clip(0.4 + _sine(t, rng.uniform(0.05, 0.4), rng), 0.15, None)
    return sd * x / (x.std() + 1e-12)


def _wander(n: int, fs: int, rng: np.random.Generator, amp: float, f_max: float = 0.5) -> np.ndarray:
    """Baseline wander: a few slow sinusoids plus a smooth random walk, peak amplitude ~``amp`` mV."""
    t = np.arange(n) / fs
    x = sum(rng.uniform(0.3, 1) * _sine(t, rng.uniform(0.05, f_max), rng) for _ in range(3))
    walk = np.cumsum(rng.standard_normal(n))
    b, a = scipy.signal.butter(1, 0.3 / (fs / 2))
    walk = scipy.signal.filtfilt(b, a, walk - np.linspace(walk[0], walk[-1], n))
    x = x + walk / (np.abs(walk).max() + 1e-12)
    return amp * x / (np.abs(x).max() + 1e-12)


def _motion(n: int, fs: int, rng: np.random.Generator, count: int, amp: float) -> np.ndarray:
    """Electrode-motion artefacts: baseline steps with slow recovery and short sharp spikes (mV)."""
    x = np.zeros(n)
    t = np.arange(n) / fs
    for _ in range(count):
        i0, size = int(rng.integers(n)), amp * rng.uniform(0.3, 1) * rng.choice([-1, 1])
        if rng.random() < 0.5:
            x[i0:] += size * np.exp(-(t[i0:] - t[i0]) / rng.uniform(0.2, 2.0))
        else:
            width = rng.uniform(0.01, 0.06)
            dt = t - t[i0]
            x += size * np.exp(-0.5 * (dt / width) ** 2) * np.sin(2 * np.pi * dt / (4 * width))
    return x


def _recording_noise(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Everyday noise of a handheld single-lead recording (mV): mild EMG, wander, rare motion."""
    x = _emg(n, fs, rng, np.exp(rng.uniform(np.log(0.004), np.log(0.05))), bursty=rng.random() < 0.3)
    x += _wander(n, fs, rng, rng.uniform(0.02, 0.3))
    if rng.random() < 0.15:
        x += _motion(n, fs, rng, 1, rng.uniform(0.2, 0.8))
    return x


def _noisy(n: int, fs: int, rng: np.random.Generator, amp: float) -> np.ndarray:
    """An unreadable recording (mV): some rhythm buried under at least two strong artefact kinds."""
    underlying = (_sinus, _atrial_fibrillation, _other_rhythm)[rng.choice(3, p=[0.7, 0.15, 0.15])]
    ecg = amp * underlying(n, fs, rng)
    chosen = rng.random(4) < [0.85, 0.6, 0.6, 0.35]
    while chosen.sum() < 2:
        chosen[rng.integers(4)] = True
    if chosen[3]:  # lead off / poor contact: the ECG nearly vanishes for a stretch
        length = int(n * rng.uniform(0.2, 0.7))
        i0 = int(rng.integers(n - length + 1))
        ecg[i0 : i0 + length] *= rng.uniform(0.0, 0.1)
    x = ecg + _recording_noise(n, fs, rng)
    if chosen[0]:
        x += _emg(n, fs, rng, rng.uniform(0.1, 0.6), bursty=rng.random() < 0.5)
    if chosen[1]:
        x += _wander(n, fs, rng, rng.uniform(0.5, 3.0), f_max=2.0)
    if chosen[2]:
        x += _motion(n, fs, rng, int(rng.integers(2, 9)), rng.uniform(0.5, 4.0))
    if rng.random() < 0.2:  # amplifier saturation
        limit = rng.uniform(2.0, 5.0)
        x = np.clip(x, -limit, limit)
    return x


def simulate_record(label: str, duration_s: float, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Simulate one record of class ``label`` (N, A, O or ~): ``round(duration_s * fs)`` samples in mV."""
    n = int(round(duration_s * fs))
    amp = np.exp(rng.uniform(np.log(0.5), np.log(2.0))) * (-1.0 if rng.random() < 0.05 else 1.0)
    if label == "~":
        return _noisy(n, fs, rng, amp)
    rhythms = {"N": _sinus, "A": _atrial_fibrillation, "O": _other_rhythm}
    if label not in rhythms:
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES}")
    return amp * rhythms[label](n, fs, rng) + _recording_noise(n, fs, rng)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------
def _write_record(args: tuple[SyntheticSpec, int, str, Path]) -> str:
    """Simulate record ``index`` and write its ``.mat``/``.hea`` pair; return the record id."""
    spec, index, label, out_dir = args
    meta, sig_rng = _record_rngs(spec.seed, index)
    duration = meta.uniform(spec.min_duration_s, spec.max_duration_s)
    stamp = (
        f"{meta.integers(24):02d}:{meta.integers(60):02d}:{meta.integers(60):02d} "
        f"{meta.integers(1, 29)}/{meta.integers(1, 13):02d}/2000"
    )
    signal = simulate_record(label, duration, spec.fs, sig_rng)
    counts = np.clip(np.round(signal * GAIN), -32768, 32767).astype(np.int16)
    record_id = f"A{index + 1:05d}"
    scipy.io.savemat(out_dir / f"{record_id}.mat", {"val": counts[None, :]}, format="4")
    checksum = (int(counts.astype(np.int64).sum()) + 32768) % 65536 - 32768  # int16 sum, as in WFDB
    (out_dir / f"{record_id}.hea").write_bytes(
        f"{record_id} 1 {spec.fs} {counts.size} {stamp} \r\n"
        f"{record_id}.mat 16+24 {GAIN}/mV 16 0 {counts[0]} {checksum} 0 ECG \r\n".encode()
    )
    return record_id


def write_dataset(spec: SyntheticSpec, out_dir: Path) -> None:
    """Write ``spec``'s records, ``RECORDS`` and (last) ``REFERENCE.csv`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = assign_labels(spec)
    tasks = [(spec, i, label, out_dir) for i, label in enumerate(labels)]
    if spec.n_jobs <= 1:
        ids = [_write_record(task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=spec.n_jobs) as pool:
            ids = list(pool.map(_write_record, tasks, chunksize=max(1, len(tasks) // (8 * spec.n_jobs))))
    (out_dir / "RECORDS").write_text("".join(f"{i}\n" for i in ids), newline="\n")
    reference = "".join(f"{i},{lab}\n" for i, lab in zip(ids, labels, strict=True))
    (out_dir / "REFERENCE.csv").write_text(reference, newline="\n")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write a synthetic dataset in the PhysioNet 2017 layout into ``--out``."""
    d = SyntheticSpec()
    parser = argparse.ArgumentParser(
        prog="python -m ecg_lab.data.synthetic",
        description="Write a synthetic ECG dataset in the PhysioNet 2017 layout",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write (will hold REFERENCE.csv)")
    parser.add_argument("--n-records", type=int, default=d.n_records)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--min-duration", type=float, default=d.min_duration_s, help="seconds")
    parser.add_argument("--max-duration", type=float, default=d.max_duration_s, help="seconds")
    parser.add_argument("--jobs", type=int, default=d.n_jobs, help="processes used to simulate")
    args = parser.parse_args(argv)
    spec = SyntheticSpec(
        n_records=args.n_records,
        seed=args.seed,
        min_duration_s=args.min_duration,
        max_duration_s=args.max_duration,
        n_jobs=args.jobs,
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    write_dataset(spec, args.out)
    log.info("Wrote %d records to %s in %.1f s", spec.n_records, args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
