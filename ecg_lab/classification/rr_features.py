"""RR-interval features per recording (config group ``features``; off by default, ``features=rr``).

Each prepared record's R-peaks come from NeuroKit2 (``nk.ecg_peaks`` on the preprocessed signal at
its own rate, ``method`` ``neurokit`` by default: QRS complexes from the smoothed gradient's
magnitude, so either polarity; no artifact correction, which would smooth away the irregularity the
features measure). Its RR intervals become a fixed vector (:data:`NAMES`) of rate and irregularity
statistics through fixed transforms (seconds, ratios, logs, beats per minute / 100; each clipped to
``[0, CLIP]``), nothing fitted on data, so nothing but the config travels with a model. A record
with fewer than ``min_beats`` R-peaks, or on which NeuroKit2 fails, gets zeros and ``few_beats=1``.

The table of all records is computed once and cached (:func:`~ecg_lab.data.cache.cached`, kind
``rr_features``), keyed by the prepared records' cache entry, :data:`FEATURE_VERSION`, the settings and
NeuroKit2's version. The datamodule joins each record's row to its items as the network input
``rr`` (:class:`~ecg_lab.classification.inputs.RecordInputs`); ``model.net.extra_features`` must
equal :data:`WIDTH` (``features=rr`` sets both).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import neurokit2 as nk
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ecg_lab.classification.prepared import PreparedRecords
from ecg_lab.data.cache import CorruptEntryError, cached, check_finite, load_arrays
from ecg_lab.errors import ConfigError

log = logging.getLogger(__name__)

#: bump when the features or their transforms change: cached tables of other versions are not used
FEATURE_VERSION = 1
#: the feature vector, in order (RR, ΔRR in seconds unless said otherwise)
NAMES = (
    "hr",  # 60 / median RR, in beats per minute / 100
    "beats_per_min",  # R-peaks found per minute of recording / 100 (missed beats lower it, hr not)
    "rr_mean",
    "rr_median",
    "rr_min",
    "rr_max",
    "sdnn",  # standard deviation of RR
    "rmssd",  # root mean square of ΔRR
    "pnn50",  # fraction of |ΔRR| > 50 ms
    "cv_rr",  # sdnn / rr_mean
    "dmed_ratio",  # median |ΔRR| / median RR
    "frac_d10",  # fraction of |ΔRR| > 10 % of the RR before it
    "sampen",  # sample entropy of the RR series (m=2, r=0.2 SD), at least one m+1 match assumed
    "few_beats",  # 1: fewer than min_beats R-peaks or NeuroKit2 failed; every other feature is 0
)
WIDTH = len(NAMES)
CLIP = 10.0
TABLE_FILE = "rr.npz"


def sample_entropy(x: np.ndarray, m: int = 2, r: float = 0.2) -> float:
    """Sample entropy ``log(B / A)`` of ``x``: B, A pairs of templates of length m, m+1 within
    ``r * std(x)`` (Chebyshev); A counts at least 1 (a bound for short series), 0 when B is 0."""
    tol = r * float(np.std(x))
    if x.size < m + 2 or tol == 0:
        return 0.0

    def matching_pairs(k: int) -> int:
        t = sliding_window_view(x[: x.size - 1 - m + k], k)  # x.size - m templates of each length
        dist = np.abs(t[:, None, :] - t[None, :, :]).max(axis=-1)
        return int((np.count_nonzero(dist <= tol) - len(t)) // 2)

    b = matching_pairs(m)
    return float(np.log(b / max(matching_pairs(m + 1), 1))) if b else 0.0


def rr_statistics(peaks: np.ndarray, n_samples: int, fs: float) -> np.ndarray:
    """The feature vector (:data:`NAMES`, float32) of R-peaks at sample indices ``peaks`` in a
    recording of ``n_samples`` at ``fs``; at least 4 peaks (3 ΔRR)."""
    rr = np.diff(peaks.astype(np.float64)) / fs
    drr = np.abs(np.diff(rr))
    median, mean, sd = float(np.median(rr)), float(rr.mean()), float(rr.std())
    values = [
        60.0 / median / 100.0,
        peaks.size / (n_samples / fs / 60.0) / 100.0,
        mean,
        median,
        float(rr.min()),
        float(rr.max()),
        sd,
        float(np.sqrt(np.mean(drr**2))),
        float(np.mean(drr > 0.05)),
        sd / mean,
        float(np.median(drr)) / median,
        float(np.mean(drr > 0.1 * rr[:-1])),
        sample_entropy(rr),
        0.0,
    ]
    return np.clip(np.asarray(values, dtype=np.float32), 0.0, CLIP)


def no_rr() -> np.ndarray:
    """The vector of a record without usable R-peaks: zeros, ``few_beats=1``."""
    values = np.zeros(WIDTH, dtype=np.float32)
    values[NAMES.index("few_beats")] = 1.0
    return values


class RRFeatures:
    """The ``data.features`` node of ``features=rr``: the RR feature table of prepared records.

    ``method``: NeuroKit2's R-peak detector (``nk.ecg_peaks(method=...)``); ``min_beats``: fewer
    R-peaks than this give the zero vector with ``few_beats=1``."""

    TASK = "classification"
    #: the network input these features feed (``net(x, rr=...)``)
    INPUT = "rr"
    WIDTH = WIDTH

    def __init__(self, method: str = "neurokit", min_beats: int = 5) -> None:
        if min_beats < 4:
            raise ConfigError(
                f"data.features.min_beats={min_beats} is too few for the ΔRR statistics; set it to 4 or more"
            )
        self.method = method
        self.min_beats = int(min_beats)

    def peaks(self, signal: np.ndarray, fs: float) -> np.ndarray:
        """R-peak sample indices of a preprocessed signal (NeuroKit2's warnings silenced)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, info = nk.ecg_peaks(
                np.asarray(signal, dtype=np.float64),
                sampling_rate=int(round(fs)),
                method=self.method,
                correct_artifacts=False,
            )
        return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)

    def record(self, signal: np.ndarray, fs: float) -> tuple[np.ndarray, str]:
        """One record's vector and how it went: ``ok``, ``few`` (too few R-peaks) or ``failed``."""
        try:
            peaks = self.peaks(signal, fs)
        except Exception:  # any NeuroKit2 failure on one record: flag it, do not stop the run
            return no_rr(), "failed"
        if peaks.size < self.min_beats:
            return no_rr(), "few"
        return rr_statistics(peaks, signal.size, fs), "ok"

    def compute(
        self, prepared: PreparedRecords, fs: float | None = None
    ) -> tuple[np.ndarray, dict[str, int]]:
        """The table ``(records, WIDTH)`` float32 and the count of records per outcome; logs once how
        many got the zero vector. ``fs``: the prepared signals' rate (``data.preprocess.resample_to``
        when set; default ``prepared.fs``, the recordings' rate)."""
        fs = float(fs or prepared.fs)
        t0 = time.perf_counter()
        rows, counts = [], {"ok": 0, "few": 0, "failed": 0}
        for i in range(len(prepared)):
            values, outcome = self.record(prepared.signal(i), fs)
            rows.append(values)
            counts[outcome] += 1
        if counts["few"] or counts["failed"]:
            log.warning(
                "RR features: %d of %d records have fewer than %d R-peaks and NeuroKit2 failed on %d; "
                "their features are zeros with few_beats=1",
                counts["few"],
                len(prepared),
                self.min_beats,
                counts["failed"],
            )
        log.info("RR features of %d records computed in %.1f s", len(prepared), time.perf_counter() - t0)
        return np.stack(rows).astype(np.float32), counts

    def cache_key(self, prepared: PreparedRecords, fs: float | None = None) -> dict:
        """What a cached table is made from: the prepared records' entry and rate, the version and
        settings."""
        assert prepared.cache_path is not None
        return {
            "kind": "rr_features",
            "version": FEATURE_VERSION,
            "prepared": prepared.cache_path.name,
            "fs": float(fs or prepared.fs),
            "method": self.method,
            "min_beats": self.min_beats,
            "neurokit2": nk.__version__,
        }

    def table(
        self, prepared: PreparedRecords, cache_dir: Path | str | None, fs: float | None = None
    ) -> np.ndarray:
        """The table of ``prepared`` (row i: record ``prepared.ids[i]``; signals at ``fs``, see
        :meth:`compute`), through the cache when the records came from it."""
        if cache_dir is None or prepared.cache_path is None:
            return self.compute(prepared, fs)[0]

        def build(folder: Path) -> dict:
            values, counts = self.compute(prepared, fs)
            np.savez(folder / TABLE_FILE, ids=prepared.ids, values=values)
            return {"names": list(NAMES), "counts": counts}

        def load(folder: Path, info: dict) -> np.ndarray:
            arrays = load_arrays(folder / TABLE_FILE, ("ids", "values"))
            shape = (len(prepared), WIDTH)
            if arrays["values"].shape != shape or not np.array_equal(arrays["ids"], prepared.ids):
                raise CorruptEntryError(f"{TABLE_FILE} does not hold the {len(prepared)} prepared records")
            check_finite(TABLE_FILE, arrays["values"])
            return arrays["values"].astype(np.float32)

        values, _ = cached(cache_dir, "rr_features", self.cache_key(prepared, fs), build, load)
        return values
