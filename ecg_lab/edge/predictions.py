"""Per-recording predictions as tables, written alike by a run's test, ``ecg_lab.eval`` and
``python -m ecg_lab.edge classify --predictions OUT.csv``:

- ``predictions.csv``: one row per recording: ``record``, ``label`` (the true class; empty when
  unknown), ``predicted`` (under the calibration when one is applied), ``predicted_uncalibrated``
  (only then: the argmax of the probabilities), ``n_windows`` and ``prob_<class>``, the mean of its
  windows' probabilities (before any calibration: what the uncalibrated decision takes the argmax of);
- ``window_predictions.csv`` (:func:`window_file`: ``window_`` before the name): one row per window:
  ``record``, ``window`` (its index in the recording), ``start`` (its first sample, at the rate the
  network sees, after any resampling) and ``prob_<class>``.

Probabilities are written with 9 significant digits, so a float32 value reads back exactly. NumPy and
the standard library only: the edge runtime writes these files too.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS = "predictions.csv"


def window_file(path: str | Path) -> Path:
    """The companion file of the per-window probabilities: ``window_<name>`` beside ``path``."""
    path = Path(path)
    return path.with_name(f"window_{path.name}")


def window_positions(window_record: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Each window's index within its recording, counting windows in ``order_key`` order."""
    order = np.lexsort((order_key, window_record))
    sorted_records = window_record[order]
    first = np.searchsorted(sorted_records, sorted_records, side="left")
    index = np.empty(len(order), dtype=np.int64)
    index[order] = np.arange(len(order)) - first
    return index


@dataclass
class Predictions:
    """The predictions of ``records`` over ``classes``: per recording its true class index (``targets``,
    -1: unknown), mean window ``probabilities`` (n, classes) and ``predicted`` class index, under the
    calibration when ``calibrated``; per window its recording's row (``window_record``), its index in
    the recording, its start sample and its ``window_probabilities`` (m, classes)."""

    classes: Sequence[str]
    records: Sequence[str]
    targets: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray
    window_record: np.ndarray
    window_index: np.ndarray
    window_start: np.ndarray
    window_probabilities: np.ndarray
    calibrated: bool = False

    @property
    def n_windows(self) -> np.ndarray:
        """Windows per recording."""
        return np.bincount(self.window_record, minlength=len(self.records))

    def write(self, path: str | Path) -> list[Path]:
        """``path`` (the recordings) and :func:`window_file` of it (the windows); returns both."""
        path = Path(path)
        probs = [f"prob_{c}" for c in self.classes]
        uncalibrated = ["predicted_uncalibrated"] if self.calibrated else []
        header = ["record", "label", "predicted", *uncalibrated, "n_windows", *probs]
        rows = []
        for i, record in enumerate(self.records):
            label = self.classes[int(self.targets[i])] if self.targets[i] >= 0 else ""
            argmax = [self.classes[int(np.argmax(self.probabilities[i]))]] if self.calibrated else []
            predicted = self.classes[int(self.predicted[i])]
            n = int(self.n_windows[i])
            rows.append([record, label, predicted, *argmax, n, *_numbers(self.probabilities[i])])
        _write_rows(path, header, rows)
        order = np.lexsort((self.window_index, self.window_record))  # by recording, then window
        windows = [
            [self.records[int(self.window_record[i])], int(self.window_index[i]), int(self.window_start[i])]
            + _numbers(self.window_probabilities[i])
            for i in order
        ]
        _write_rows(window_file(path), ["record", "window", "start", *probs], windows)
        return [path, window_file(path)]


def _numbers(values: np.ndarray) -> list[str]:
    return [f"{float(v):.9g}" for v in values]


def _write_rows(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def reference_labels(path: str | Path, classes: Sequence[str]) -> dict[str, str]:
    """``record → label`` of a ``REFERENCE.csv`` (``--reference``); BadRecordError naming the file for a
    label that is not one of ``classes``."""
    from ecg_lab.data.physionet2017 import read_reference
    from ecg_lab.data.records import BadRecordError

    rows = read_reference(Path(path))
    for record, label in rows:
        if label not in classes:
            raise BadRecordError(
                path,
                f"record {record} has label {label!r}, not one of the export's classes {list(classes)}; "
                "fix the row or give the REFERENCE.csv of these recordings",
            )
    return dict(rows)


def recording_predictions(
    config: dict[str, Any], records: Sequence[str], labels: Sequence[str], window_probs: Sequence[np.ndarray]
) -> Predictions:
    """The :class:`Predictions` of recordings an export classified: their ids, true labels (``""``:
    unknown) and windows' probabilities, each recording's the mean of its windows', decided under the
    export's calibration when it has one, windows starting every ``stride`` samples."""
    from ecg_lab.edge.preprocess import Preprocessing
    from ecg_lab.edge.runtime import calibrated

    classes = list(config["classes"])
    probabilities = np.stack([p.mean(0) for p in window_probs])
    calibration = config.get("calibration")
    counts = [len(p) for p in window_probs]
    index = np.concatenate([np.arange(n) for n in counts])
    return Predictions(
        classes=classes,
        records=list(records),
        targets=np.asarray([classes.index(label) if label else -1 for label in labels], dtype=np.int64),
        probabilities=probabilities,
        predicted=calibrated(probabilities, calibration)[1],
        window_record=np.repeat(np.arange(len(records)), counts),
        window_index=index,
        window_start=index * Preprocessing(**config["preprocess"]).stride,
        window_probabilities=np.concatenate(list(window_probs)),
        calibrated=bool(calibration),
    )
