"""Preprocessing of one record: zero-phase Butterworth band-pass at the record's rate, resampling
(optional, ``resample_to``), per-record z-score, windowing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import butter, resample_poly, sosfilt, sosfilt_zi

from ecg_lab.data.records import BadRecordError, Record, check_signal
from ecg_lab.errors import ConfigError


@dataclass(frozen=True)
class ZeroPhaseFilter:
    """A Butterworth filter applied forwards and backwards, as ``scipy.signal.sosfiltfilt`` does
    (odd extension, steady-state initial conditions), with the initial conditions computed once
    per filter instead of once per call (that was half of the filtering time)."""

    sos: np.ndarray
    zi: np.ndarray
    padlen: int

    @classmethod
    def from_sos(cls, sos: np.ndarray) -> ZeroPhaseFilter:
        ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
        return cls(sos=sos, zi=sosfilt_zi(sos), padlen=3 * ntaps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = self.padlen
        if x.size <= n:
            raise ValueError(f"signal of {x.size} samples too short for zero-phase filtering (needs > {n})")
        ext = np.concatenate((2 * x[0] - x[n:0:-1], x, 2 * x[-1] - x[-2 : -(n + 2) : -1]))
        y, _ = sosfilt(self.sos, ext, zi=self.zi * ext[0])
        y, _ = sosfilt(self.sos, y[::-1], zi=self.zi * y[-1])
        return y[::-1][n:-n]


@lru_cache(maxsize=16)
def butterworth(lowcut: float | None, highcut: float | None, order: int, fs: float) -> ZeroPhaseFilter:
    """Band-, high- or low-pass Butterworth (cached per parameter set)."""
    if lowcut is None:
        sos = butter(order, highcut, btype="lowpass", fs=fs, output="sos")
    elif highcut is None:
        sos = butter(order, lowcut, btype="highpass", fs=fs, output="sos")
    else:
        sos = butter(order, [lowcut, highcut], btype="bandpass", fs=fs, output="sos")
    return ZeroPhaseFilter.from_sos(sos)


def resample_ratio(fs_in: float, fs_out: float) -> Fraction:
    """``fs_out / fs_in`` as the resampler uses it: a rational approximation, denominator up to 1000."""
    return Fraction(fs_out / fs_in).limit_denominator(1000)


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``fs_in`` to ``fs_out`` (:func:`resample_ratio`);
    float64."""
    if fs_in == fs_out:
        return np.asarray(signal, dtype=np.float64)
    ratio = resample_ratio(fs_in, fs_out)
    return resample_poly(np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator)


def resampled_size(n_samples: int, fs_in: float, fs_out: float) -> int:
    """The number of samples :func:`resample` returns for ``n_samples`` at ``fs_in``."""
    if fs_in == fs_out:
        return n_samples
    ratio = resample_ratio(fs_in, fs_out)
    return -(-n_samples * ratio.numerator // ratio.denominator)  # resample_poly: ceil(n * up / down)


def window_count(n_samples: int, window: int, stride: int) -> int:
    """Number of full windows of ``window`` samples at ``stride`` in a signal of ``n_samples``."""
    return 0 if n_samples < window else (n_samples - window) // stride + 1


@dataclass(frozen=True)
class Preprocessing:
    """The SPEC's recipe, every step configurable (``data.preprocess.*``). ``resample_to``: the rate
    (Hz) each record is resampled to after filtering at its own rate (None: kept at its own);
    ``window`` and ``stride`` count samples at the output rate."""

    lowcut: float | None = 0.5
    highcut: float | None = 40.0
    order: int = 4
    zscore: bool = True
    window: int = 1500
    stride: int = 750
    flat_std: float = 1e-6
    resample_to: float | None = None

    def __post_init__(self) -> None:
        if self.window <= 0 or self.stride <= 0:
            raise ValueError(
                f"data.preprocess.window and stride must be positive, got {self.window}, {self.stride}"
            )
        self._check_resample_to()

    def _check_resample_to(self) -> None:
        """Raise ConfigError for a rate that is not positive, or whose Nyquist frequency the highcut
        reaches (the filter would keep what resampling removes)."""
        key, rate = "data.preprocess.resample_to", self.resample_to
        if rate is None:
            return
        if not rate > 0:
            raise ConfigError(f"{key}={rate} is not a sampling rate; set a positive rate in Hz, or null")
        if self.highcut is not None and self.highcut >= rate / 2:
            raise ConfigError(
                f"{key}={rate:g} Hz has its Nyquist frequency ({rate / 2:g} Hz) at or below "
                f"data.preprocess.highcut={self.highcut:g} Hz; raise {key} above {2 * self.highcut:g} "
                "or lower the highcut"
            )

    def as_dict(self) -> dict:
        """Plain-dict form, used in cache keys and checkpoints; ``resample_to`` only when set, so the
        keys of entries prepared before it existed still match."""
        values = asdict(self)
        if self.resample_to is None:
            del values["resample_to"]
        return values

    def rate(self, fs: float) -> float:
        """The rate of the output (windows) of a record at ``fs``."""
        return fs if self.resample_to is None else float(self.resample_to)

    def output_size(self, n_samples: int, fs: float) -> int:
        """The length of the output of a record of ``n_samples`` at ``fs``."""
        return resampled_size(n_samples, fs, self.rate(fs))

    def filter(self, signal: np.ndarray, fs: float) -> np.ndarray:
        """Zero-phase band-pass (or high-/low-pass when one cutoff is None)."""
        if self.lowcut is None and self.highcut is None:
            return signal
        low = None if self.lowcut is None else float(self.lowcut)
        high = None if self.highcut is None else float(self.highcut)
        return butterworth(low, high, int(self.order), float(fs))(signal)

    def apply(self, record: Record) -> np.ndarray:
        """Check, filter, resample and normalise one record; returns float32 at :meth:`rate`. Raises
        BadRecordError."""
        where = record.path or record.record_id
        signal = record.signal
        check_signal(signal, where, record.record_id, self.flat_std)
        size = self.output_size(signal.size, record.fs)
        if size < self.window:
            at = "" if size == signal.size else f" at {self.rate(record.fs):g} Hz"
            raise BadRecordError(
                where,
                f"record is {size} samples{at}, shorter than one window ({self.window}); "
                "shorten data.preprocess.window or use data.on_bad_record=skip",
                record.record_id,
            )
        out = resample(self.filter(signal.astype(np.float64), record.fs), record.fs, self.rate(record.fs))
        if self.zscore:
            std = out.std()
            if std <= self.flat_std:
                raise BadRecordError(where, "signal is flat after filtering", record.record_id)
            out = (out - out.mean()) / std
        return out.astype(np.float32)

    def starts(self, n_samples: int) -> np.ndarray:
        """Start indices of the windows of a signal of ``n_samples``."""
        return np.arange(window_count(n_samples, self.window, self.stride), dtype=np.int64) * self.stride

    def windows(self, x: np.ndarray) -> np.ndarray:
        """The windows ``(n, window)`` of a preprocessed signal, at ``starts`` (a copy, not a view)."""
        return sliding_window_view(x, self.window)[:: self.stride].copy()
