"""Preprocessing of one record: zero-phase Butterworth band-pass, per-record z-score, windowing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import butter, sosfiltfilt

from ecg_lab.data.records import BadRecordError, Record


@lru_cache(maxsize=16)
def bandpass_sos(lowcut: float, highcut: float, order: int, fs: float) -> np.ndarray:
    """Second-order sections of a Butterworth band-pass (cached per parameter set)."""
    return butter(order, [lowcut, highcut], btype="bandpass", fs=fs, output="sos")


def window_count(n_samples: int, window: int, stride: int) -> int:
    """Number of full windows of ``window`` samples at ``stride`` in a signal of ``n_samples``."""
    return 0 if n_samples < window else (n_samples - window) // stride + 1


@dataclass(frozen=True)
class Preprocessing:
    """The SPEC's recipe, every step configurable (``data.preprocess.*``)."""

    lowcut: float | None = 0.5
    highcut: float | None = 40.0
    order: int = 4
    zscore: bool = True
    window: int = 1500
    stride: int = 750
    flat_std: float = 1e-6

    def __post_init__(self) -> None:
        if self.window <= 0 or self.stride <= 0:
            raise ValueError(
                f"data.preprocess.window and stride must be positive, got {self.window}, {self.stride}"
            )

    def as_dict(self) -> dict:
        """Plain-dict form, used in cache keys and checkpoints."""
        return asdict(self)

    def filter(self, signal: np.ndarray, fs: float) -> np.ndarray:
        """Zero-phase band-pass (or high-/low-pass when one cutoff is None)."""
        if self.lowcut is None and self.highcut is None:
            return signal
        if self.lowcut is None:
            sos = butter(self.order, self.highcut, btype="lowpass", fs=fs, output="sos")
        elif self.highcut is None:
            sos = butter(self.order, self.lowcut, btype="highpass", fs=fs, output="sos")
        else:
            sos = bandpass_sos(float(self.lowcut), float(self.highcut), int(self.order), float(fs))
        return sosfiltfilt(sos, signal)

    def apply(self, record: Record) -> np.ndarray:
        """Check, filter and normalise one record; returns float32. Raises BadRecordError."""
        where = record.path or record.record_id
        signal = record.signal
        if not np.all(np.isfinite(signal)):
            raise BadRecordError(where, "signal contains NaN or infinite values", record.record_id)
        if signal.size < self.window:
            raise BadRecordError(
                where,
                f"record is {signal.size} samples, shorter than one window ({self.window}); "
                "shorten data.preprocess.window or use data.on_bad_record=skip",
                record.record_id,
            )
        if float(np.std(signal)) <= self.flat_std:
            raise BadRecordError(where, "signal is flat (zero variance)", record.record_id)
        out = self.filter(signal.astype(np.float64), record.fs)
        if self.zscore:
            std = out.std()
            if std <= self.flat_std:
                raise BadRecordError(where, "signal is flat after filtering", record.record_id)
            out = (out - out.mean()) / std
        return out.astype(np.float32)

    def starts(self, n_samples: int) -> np.ndarray:
        """Start indices of the windows of a signal of ``n_samples``."""
        return np.arange(window_count(n_samples, self.window, self.stride), dtype=np.int64) * self.stride
