"""Analytic ECGs: Gaussian P, Q, R, S, T and U components placed around each detected R-peak.

Each component is ``amplitude * exp(-((t - t_R - offset) / width)**2 / 2)`` (offset and width in
seconds, amplitude in the units of the signal, R = 1 by default). ``r_amplification`` multiplies the
R component, to stress-test how faithfully a decoder keeps amplitude. Alongside the signal comes its
*envelope*: per sample, the largest of the components' normalised bumps (0 on flat segments, 1 at a
component's peak), which the morphology-weighted loss uses as its weight map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

WAVES: tuple[str, ...] = ("P", "Q", "R", "S", "T", "U")


@dataclass(frozen=True)
class Wave:
    """One Gaussian component: offset from the R-peak (s), width (standard deviation, s), amplitude."""

    offset_s: float
    width_s: float
    amplitude: float

    def __post_init__(self) -> None:
        for name in ("offset_s", "width_s", "amplitude"):
            object.__setattr__(self, name, float(getattr(self, name)))


def _default_waves() -> dict[str, Wave]:
    # Typical lead-II timings and relative amplitudes (PR ~0.16-0.2 s, QRS ~0.08 s, QT ~0.4 s).
    return {
        "P": Wave(-0.20, 0.025, 0.15),
        "Q": Wave(-0.03, 0.008, -0.12),
        "R": Wave(0.0, 0.010, 1.0),
        "S": Wave(0.03, 0.008, -0.25),
        "T": Wave(0.28, 0.040, 0.30),
        "U": Wave(0.45, 0.025, 0.04),
    }


@dataclass(frozen=True)
class AnalyticSpec:
    """The components (``waves``: name → :class:`Wave`) and the R amplification factor."""

    waves: dict[str, Wave] = field(default_factory=_default_waves)
    r_amplification: float = 1.0

    def __post_init__(self) -> None:
        waves = {str(k).upper(): w if isinstance(w, Wave) else Wave(**w) for k, w in dict(self.waves).items()}
        unknown = sorted(set(waves) - set(WAVES))
        if unknown:
            raise ValueError(f"data.analytic.waves: unknown components {unknown}; use some of {list(WAVES)}")
        for name, w in waves.items():
            if w.width_s <= 0:
                raise ValueError(f"data.analytic.waves.{name}.width_s must be > 0, got {w.width_s}")
        if float(self.r_amplification) <= 0:
            raise ValueError(f"data.analytic.r_amplification must be > 0, got {self.r_amplification}")
        object.__setattr__(self, "waves", waves)
        object.__setattr__(self, "r_amplification", float(self.r_amplification))

    def as_dict(self) -> dict:
        """Plain values (for cache keys and reports)."""
        return asdict(self)

    def amplitude(self, name: str) -> float:
        """The component's amplitude, with the R amplification applied to R."""
        w = self.waves[name]
        return w.amplitude * (self.r_amplification if name == "R" else 1.0)


def analytic_ecg(
    rpeaks: np.ndarray, n_samples: int, fs: float, spec: AnalyticSpec
) -> tuple[np.ndarray, np.ndarray]:
    """The analytic signal and its envelope (both float32, ``n_samples`` long) for R-peaks at ``rpeaks``.

    Components of beats near the edges are cut off by the signal's ends, as in a real recording.
    """
    t = np.arange(n_samples, dtype=np.float64) / fs
    signal = np.zeros(n_samples)
    envelope = np.zeros(n_samples)
    r_times = np.asarray(rpeaks, dtype=np.float64) / fs
    if r_times.size == 0:
        return signal.astype(np.float32), envelope.astype(np.float32)
    for name, w in spec.waves.items():
        amp = spec.amplitude(name)
        # only the beats within 5 widths matter for each sample: a banded sum over the nearest beats
        centres = r_times + w.offset_s
        lo = np.searchsorted(centres, t - 5 * w.width_s)
        hi = np.searchsorted(centres, t + 5 * w.width_s)
        for k in range(int((hi - lo).max(initial=0))):
            idx = lo + k
            valid = idx < hi
            c = centres[np.minimum(idx, centres.size - 1)]
            bump = np.where(valid, np.exp(-0.5 * ((t - c) / w.width_s) ** 2), 0.0)
            signal += amp * bump
            if amp != 0:
                envelope = np.maximum(envelope, bump)
    return signal.astype(np.float32), envelope.astype(np.float32)
