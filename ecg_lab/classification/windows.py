"""Windows over preprocessed records, served as ``(window, label, record_index)`` items."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from ecg_lab.classification.prepared import PreparedRecords
from ecg_lab.edge.preprocess import Preprocessing


class WindowDataset(Dataset):
    """Fixed-length windows of the selected records; each item is ``(x[1, window], label, record)``."""

    def __init__(
        self, prepared: PreparedRecords, record_indices: np.ndarray, preprocess: Preprocessing
    ) -> None:
        self.prepared = prepared
        self.window = preprocess.window
        starts, labels, recs = [], [], []
        for r in record_indices:
            s = preprocess.starts(int(prepared.lengths[r]))
            starts.append(prepared.offsets[r] + s)
            labels.append(np.full(s.size, prepared.labels[r], dtype=np.int64))
            recs.append(np.full(s.size, r, dtype=np.int64))
        empty = np.zeros(0, dtype=np.int64)
        self.starts = np.concatenate(starts) if starts else empty
        self.labels = np.concatenate(labels) if labels else empty
        self.records = np.concatenate(recs) if recs else empty

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        s = int(self.starts[i])
        x = torch.from_numpy(np.array(self.prepared.signals[s : s + self.window], dtype=np.float32))
        return x.unsqueeze(0), int(self.labels[i]), int(self.records[i])

    def __getstate__(self) -> dict:
        """Pickle (DataLoader workers under ``spawn``) a cached signal array as its path, not its data."""
        state = self.__dict__.copy()
        signals = self.prepared.signals
        if isinstance(signals, np.memmap) and signals.filename:
            state["prepared"] = replace(self.prepared, signals=np.empty(0, dtype=signals.dtype))
            state["_signals_file"] = (signals.filename, signals.dtype.str, signals.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        signals_file = state.pop("_signals_file", None)
        self.__dict__.update(state)
        if signals_file is not None:
            path, dtype, shape = signals_file
            signals = np.memmap(path, dtype=dtype, mode="r", shape=shape)
            self.prepared = replace(self.prepared, signals=signals)

    def class_counts(self, n_classes: int) -> np.ndarray:
        """Windows per class."""
        return np.bincount(self.labels, minlength=n_classes)
