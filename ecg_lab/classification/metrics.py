"""Classification metrics: torchmetrics at window level, the Challenge's F1 at recording level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


#: the bootstrap of test scores: resamples, seed, confidence level (written to ``test_metrics.json``)
BOOTSTRAP = {"n": 1000, "seed": 0, "level": 0.95}


def resample_counts(n_items: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n_items)``: how often each item is drawn in each resample (``n_items`` draws with
    replacement, from ``numpy.random.default_rng(seed)``)."""
    draws = np.random.default_rng(seed).integers(0, n_items, size=(n_resamples, n_items))
    flat = (draws + n_items * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n_items).reshape(n_resamples, n_items)


def item_confusions(
    targets: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    items: np.ndarray | None = None,
    n_items: int = 0,
) -> np.ndarray:
    """``(n_items, classes²)``: each item's confusion matrix, flattened; ``items`` maps each
    (target, pred) pair to its item (None: one pair per item)."""
    cells = np.asarray(targets, dtype=np.int64) * num_classes + np.asarray(preds, dtype=np.int64)
    if items is None:
        items, n_items = np.arange(len(cells)), len(cells)
    flat = np.asarray(items, dtype=np.int64) * num_classes**2 + cells
    return np.bincount(flat, minlength=n_items * num_classes**2).reshape(n_items, num_classes**2)


def class_f1(confmats: np.ndarray) -> np.ndarray:
    """``(..., classes)``: per-class ``F1 = 2·C[i,i] / (row_i + col_i)`` of confusion matrices
    ``(..., classes, classes)`` (0 where the class neither occurs nor is predicted)."""
    diag = np.diagonal(confmats, axis1=-2, axis2=-1)
    denom = confmats.sum(-1) + confmats.sum(-2)
    return np.divide(2 * diag, denom, out=np.zeros(diag.shape), where=denom > 0)


def weighted_f1(confmats: np.ndarray) -> np.ndarray:
    """The support-weighted mean of per-class F1 (torchmetrics' ``average="weighted"``)."""
    support = confmats.sum(-1)
    total = support.sum(-1)
    return np.divide(
        (support * class_f1(confmats)).sum(-1), total, out=np.zeros(total.shape), where=total > 0
    )


def bootstrap_intervals(
    record_targets: np.ndarray,
    record_preds: np.ndarray,
    window_record: np.ndarray,
    window_preds: np.ndarray,
    classes: Sequence[str],
    n: int = BOOTSTRAP["n"],
    seed: int = BOOTSTRAP["seed"],
    level: float = BOOTSTRAP["level"],
) -> dict[str, Any]:
    """Percentile bootstrap intervals of the official F1, each class's F1 (recordings) and the weighted F1
    of the windows, resampling recordings (a drawn recording brings all its windows): ``<key>_ci`` as
    ``[lo, hi]``, and ``bootstrap`` (n, seed, level). Vectorised: each resample's confusion matrices are
    its draw counts times the recordings' own."""
    k, n_records = len(classes), len(record_targets)
    counts = resample_counts(n_records, n, seed).astype(np.float64)
    records = counts @ item_confusions(record_targets, record_preds, k)
    windows = counts @ item_confusions(
        np.asarray(record_targets)[window_record], window_preds, k, window_record, n_records
    )
    per_class = class_f1(records.reshape(n, k, k))
    stats = {f"F1_{c}": per_class[:, i] for i, c in enumerate(classes)}
    scored = [i for i, c in enumerate(classes) if c in OFFICIAL_CLASSES]
    if scored:
        stats["official_f1"] = per_class[:, scored].mean(1)
    stats["f1"] = weighted_f1(windows.reshape(n, k, k))
    tail = (1 - level) / 2
    out: dict[str, Any] = {
        f"{key}_ci": np.quantile(values, [tail, 1 - tail]).round(6).tolist() for key, values in stats.items()
    }
    return {**out, "bootstrap": {"n": n, "seed": seed, "level": level, "resampled": "recordings"}}
