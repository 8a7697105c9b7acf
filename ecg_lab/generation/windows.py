"""Generation data, records → windows → items: fixed-length windows of the cleaned records, raw or
analytic (:mod:`ecg_lab.generation.analytic`: Gaussian PQRSTU components at the detected R-peaks,
with their envelope for the loss).

An item is a dict: ``x`` (1, window), ``rpeaks`` (window,) bool, ``index`` and, for analytic input,
``envelope`` (window,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import Dataset

from ecg_lab.generation.analytic import AnalyticSpec, analytic_ecg
from ecg_lab.generation.cleaning import CleanRecords


@dataclass
class Windows:
    """Fixed-length windows and where they came from."""

    x: np.ndarray  # (n, window) float32, the model's input and target
    rpeaks: np.ndarray  # (n, window) bool
    envelope: np.ndarray | None  # (n, window) float32, analytic input only
    record: np.ndarray  # (n,) index into the CleanRecords
    start: np.ndarray  # (n,) first sample of the window in its record

    def __len__(self) -> int:
        return int(self.record.size)

    def subset(self, idx: np.ndarray) -> Windows:
        env = self.envelope[idx] if self.envelope is not None else None
        return Windows(self.x[idx], self.rpeaks[idx], env, self.record[idx], self.start[idx])


def cut_windows(records: CleanRecords, window: int, stride: int, analytic: AnalyticSpec | None) -> Windows:
    """Every ``window``-sample window (step ``stride``) of every record; analytic when ``analytic`` is set."""
    xs, masks, envs, recs, starts = [], [], [], [], []
    for i in range(len(records)):
        n = int(records.lengths[i])
        if n < window:
            continue
        peaks = records.rpeaks(i)
        if analytic is not None:
            signal, env = analytic_ecg(peaks, n, records.fs, analytic)
        else:
            signal, env = records.signal(i), None
        mask = np.zeros(n, dtype=bool)
        mask[peaks[(peaks >= 0) & (peaks < n)]] = True
        s = np.arange(0, n - window + 1, stride)
        xs.append(sliding_window_view(np.asarray(signal), window)[::stride])  # views; concatenated below
        masks.append(sliding_window_view(mask, window)[::stride])
        if env is not None:
            envs.append(sliding_window_view(env, window)[::stride])
        recs.append(np.full(s.size, i, dtype=np.int64))
        starts.append(s.astype(np.int64))
    if not xs:
        raise ValueError(f"data.window={window} is longer than every record; choose a shorter window")
    return Windows(
        x=np.concatenate(xs).astype(np.float32),
        rpeaks=np.concatenate(masks),
        envelope=np.concatenate(envs).astype(np.float32) if envs else None,
        record=np.concatenate(recs),
        start=np.concatenate(starts),
    )


class WaveformDataset(Dataset):
    """Windows as dict items: ``x`` (1, window), ``rpeaks`` (window,), ``index`` and maybe ``envelope``."""

    def __init__(self, windows: Windows) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        w = self.windows
        item = {
            "x": torch.from_numpy(w.x[i]).unsqueeze(0),
            "rpeaks": torch.from_numpy(w.rpeaks[i]),
            "index": torch.tensor(i),
        }
        if w.envelope is not None:
            item["envelope"] = torch.from_numpy(w.envelope[i])
        return item
