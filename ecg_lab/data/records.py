"""The record type every reader yields, and the errors readers raise."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg_lab.errors import UserError

log = logging.getLogger(__name__)
ON_BAD_RECORD = ("raise", "skip")


@dataclass(frozen=True)
class Record:
    """One single-lead recording: its id, signal in mV, sampling rate and label."""

    record_id: str
    signal: np.ndarray
    fs: float
    label: str
    path: str = ""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset folder is missing; the message says where we looked and how to get it."""

    def __init__(self, looked_in: Path, how_to_get: str) -> None:
        self.looked_in = Path(looked_in)
        super().__init__(f"No dataset found at {self.looked_in}. {how_to_get}")


class BadRecordError(UserError, ValueError):
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


def check_signal(signal: np.ndarray, where: Path | str, record_id: str, flat_std: float = 1e-6) -> None:
    """Raise BadRecordError for a signal with NaN or infinite samples, or a flat one."""
    if not np.all(np.isfinite(signal)):
        raise BadRecordError(where, "signal contains NaN or infinite values", record_id)
    if float(np.std(signal)) <= flat_std:
        raise BadRecordError(where, "signal is flat (zero variance)", record_id)


def check_on_bad_record(value: str) -> None:
    """Reject an unknown ``data.on_bad_record`` value."""
    if value not in ON_BAD_RECORD:
        raise ValueError(f"data.on_bad_record must be one of {ON_BAD_RECORD}, got {value!r}")


def skip_or_raise(err: BadRecordError, on_bad_record: str, skipped: list[SkippedRecord]) -> None:
    """Re-raise ``err`` under ``raise``; under ``skip`` warn and add it to ``skipped``."""
    if on_bad_record == "raise":
        raise err
    skipped.append(SkippedRecord(err.record_id, str(err.path), err.problem))
    log.warning("skipping %s", err)
