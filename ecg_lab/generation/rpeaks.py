"""R-peak detection with NeuroKit2, safe on flat, constant, short or broken signals."""

from __future__ import annotations

import warnings

import numpy as np

EMPTY = np.zeros(0, dtype=np.int64)


def detect_rpeaks(signal: np.ndarray, fs: float, clean: bool = True) -> np.ndarray:
    """R-peak sample indices found by NeuroKit2 (``ecg_clean`` unless ``clean=False``, then
    ``ecg_peaks``, method ``neurokit``); an empty array, never an exception, when none can be found."""
    import neurokit2 as nk

    x = np.asarray(signal, dtype=np.float64).ravel()
    if x.size < 2 * fs or not np.all(np.isfinite(x)) or float(np.std(x)) < 1e-8:
        return EMPTY.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if clean:
                x = np.asarray(nk.ecg_clean(x, sampling_rate=int(fs), method="neurokit"), dtype=np.float64)
            _, info = nk.ecg_peaks(x, sampling_rate=int(fs), method="neurokit")
        except Exception:  # noqa: BLE001 - NeuroKit2 raises many types on signals without beats
            return EMPTY.copy()
    peaks = np.asarray(info.get("ECG_R_Peaks", []), dtype=np.int64)
    return np.unique(peaks[(peaks >= 0) & (peaks < x.size)])
