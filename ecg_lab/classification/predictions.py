"""A classifier's test predictions, record by record and window by window (``predictions.csv`` and
``window_predictions.csv`` in the run folder, :mod:`ecg_lab.edge.predictions` says what they hold), and
the bootstrap intervals of its test scores.

The test step keeps each window's probabilities, true class and record index (``ECGClassifier._outputs``);
:func:`with_items` adds the position of each window in the test dataset, which the loader's sampler
gives in serving order on each rank, so that after the rows of every rank are gathered each window's
index and start sample in its recording are known (under DDP, ranks serve interleaved windows).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ecg_lab.classification.metrics import bootstrap_intervals
from ecg_lab.edge.predictions import Predictions, window_positions
from ecg_lab.edge.runtime import calibrated


def served_items(module: Any, n: int) -> torch.Tensor:
    """The test dataset positions of the first ``n`` items this rank's test loader served, in order
    (``arange(n)`` outside a trainer)."""
    trainer = getattr(module, "_trainer", None)
    loaders = trainer.test_dataloaders if trainer is not None else None
    loader = loaders[0] if isinstance(loaders, Sequence) else loaders
    if loader is None or getattr(loader, "sampler", None) is None:
        return torch.arange(n)
    served = list(itertools.islice(iter(loader.sampler), n))
    if len(served) != n:
        raise RuntimeError(f"the test loader's sampler lists {len(served)} items for {n} test outputs")
    return torch.as_tensor(served, dtype=torch.int64)


def with_items(module: Any, stage: str, rows: torch.Tensor) -> torch.Tensor:
    """Test rows ``(probabilities, class, record)`` with a last column: each window's test dataset
    position (:func:`served_items`); other stages' rows as they are."""
    if stage != "test":
        return rows
    items = served_items(module, len(rows)).to(device=rows.device, dtype=rows.dtype)
    return torch.cat([rows, items[:, None]], 1)


def predictions_of(
    module: Any, rows: torch.Tensor, record_probs: np.ndarray, calibration: dict[str, Any] | None
) -> Predictions:
    """The :class:`~ecg_lab.edge.predictions.Predictions` of gathered test rows (``with_items``'s),
    whose recordings' probabilities (by ascending record index) are ``record_probs``; record ids and
    window starts from the module's datamodule (without one: record indices, and -1 for unknown starts)."""
    k = len(module.classes)
    table = rows.detach().cpu().numpy()
    records = table[:, k + 1].astype(np.int64)
    items = table[:, k + 2].astype(np.int64) if table.shape[1] > k + 2 else np.arange(len(table))
    uniq, window_record = np.unique(records, return_inverse=True)
    targets = np.zeros(len(uniq), dtype=np.int64)
    targets[window_record] = table[:, k].astype(np.int64)
    datamodule = getattr(getattr(module, "_trainer", None), "datamodule", None)
    return Predictions(
        classes=module.classes,
        records=_record_ids(datamodule, uniq),
        targets=targets,
        probabilities=record_probs,
        predicted=calibrated(record_probs, calibration)[1],
        window_record=window_record,
        window_index=window_positions(window_record, items),
        window_start=_window_starts(datamodule, records, items),
        window_probabilities=table[:, :k],
        calibrated=bool(calibration),
    )


def _record_ids(datamodule: Any, indices: np.ndarray) -> list[str]:
    ids = datamodule.record_ids() if callable(getattr(datamodule, "record_ids", None)) else None
    return [str(ids[i]) if ids is not None else str(i) for i in indices]


def _window_starts(datamodule: Any, records: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Each window's first sample in its (preprocessed) recording: from the test dataset's window starts
    (0 for whole recordings, which have none); -1 (unknown) without a datamodule."""
    dataset = getattr(datamodule, "datasets", {}).get("test") if datamodule is not None else None
    if dataset is None:
        return np.full(len(items), -1, dtype=np.int64)
    starts = getattr(dataset, "starts", None)
    if starts is None:  # whole recordings: one item from sample 0
        return np.zeros(len(items), dtype=np.int64)
    return np.asarray(starts)[items] - np.asarray(datamodule.prepared.offsets)[records]


def score_intervals(predictions: Predictions | None) -> dict[str, Any]:
    """The bootstrap intervals (:func:`~ecg_lab.classification.metrics.bootstrap_intervals`) of the
    scores of ``predictions``: the recordings' decisions as scored (calibrated when a calibration is
    applied) and the windows' argmax; empty without predictions."""
    if predictions is None or not len(predictions.records):
        return {}
    return bootstrap_intervals(
        predictions.targets,
        predictions.predicted,
        predictions.window_record,
        predictions.window_probabilities.argmax(1),
        predictions.classes,
    )


def most_confidently_wrong(
    probs: np.ndarray, labels: np.ndarray, n: int, calibration: dict[str, Any] | None = None
) -> np.ndarray:
    """Indices of the (at most) ``n`` recordings whose predicted class (under ``calibration``) is not their
    label, the highest probability of the predicted class first."""
    p, pred = calibrated(probs, calibration)
    confidence = p[np.arange(len(pred)), pred]
    wrong = np.flatnonzero(pred != labels)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
