"""Classification metrics: torchmetrics at window level, the Challenge's F1 at recording level."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sklearn.metrics
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
    MulticlassSpecificity,
)

OFFICIAL_CLASSES = ("N", "A", "O")


def window_metrics(num_classes: int, full: bool = True) -> MetricCollection:
    """Weighted F1 and accuracy; with ``full`` also macro one-vs-rest AUROC, per-class
    sensitivity and specificity, and the confusion matrix."""
    metrics: dict = {
        "f1": MulticlassF1Score(num_classes, average="weighted"),
        "acc": MulticlassAccuracy(num_classes, average="micro"),
    }
    if full:
        metrics |= {
            "auroc": MulticlassAUROC(num_classes, average="macro"),
            "sensitivity": MulticlassRecall(num_classes, average=None),
            "specificity": MulticlassSpecificity(num_classes, average=None),
            "confmat": MulticlassConfusionMatrix(num_classes),
        }
    return MetricCollection(metrics)


def record_probabilities(
    probs: torch.Tensor, targets: torch.Tensor, records: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aggregate window probabilities per recording (mean); returns ``(record_probs, record_targets)``."""
    uniq, inverse = torch.unique(records, return_inverse=True)
    sums = torch.zeros(len(uniq), probs.shape[1], dtype=probs.dtype, device=probs.device)
    sums.index_add_(0, inverse, probs)
    counts = torch.bincount(inverse, minlength=len(uniq)).to(probs.dtype).unsqueeze(1)
    rec_targets = torch.zeros(len(uniq), dtype=targets.dtype, device=targets.device)
    rec_targets[inverse] = targets
    return sums / counts, rec_targets


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes (every class, present or not)."""
    return sklearn.metrics.confusion_matrix(targets, preds, labels=np.arange(num_classes))


def official_f1(confmat: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """The Challenge 2017 score: per-class ``F1 = 2·C[i,i] / (row_i + col_i)``, averaged over N, A, O.

    Noisy (``~``) gets its F1 reported but is left out of the mean, as in the Challenge. Computed from
    the confusion matrix (which the caller keeps and plots), so it is the Challenge's formula itself.
    """
    cm = np.asarray(confmat, dtype=np.float64)
    out: dict[str, float] = {}
    for i, c in enumerate(classes):
        denom = cm[i, :].sum() + cm[:, i].sum()
        out[f"F1_{c}"] = float(2 * cm[i, i] / denom) if denom > 0 else 0.0
    scored = [out[f"F1_{c}"] for c in OFFICIAL_CLASSES if c in classes]
    out["official_f1"] = float(np.mean(scored)) if scored else float("nan")
    return out
