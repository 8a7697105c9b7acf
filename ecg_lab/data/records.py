"""The record type every reader yields, and the errors readers raise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Record:
    """One single-lead recording: its id, signal in mV, sampling rate and label."""

    record_id: str
    signal: np.ndarray
    fs: float
    label: str
    path: str = ""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder is missing; the message says where we looked and how to get it."""

    def __init__(self, looked_in: Path, how_to_get: str) -> None:
        self.looked_in = Path(looked_in)
        super().__init__(f"No dataset found at {self.looked_in}. {how_to_get}")


class BadRecordError(ValueError):
    """A record that cannot be used: the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str, record_id: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.record_id = record_id or self.path.stem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out under ``on_bad_record=skip``, with the reason."""

    record_id: str
    path: str
    problem: str
