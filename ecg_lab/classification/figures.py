"""A classifier's figures: confusion matrices with counts and row shares, and, over the test recordings'
probabilities (the mean of their windows', as in ``predictions.csv``), one-vs-rest ROC and
precision-recall curves per class and a reliability diagram. Each is built by a ``*_figure`` function
returning the :class:`Figure`; :func:`classifier_figures` lists what a test writes, by file name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn.metrics
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ecg_lab.app.figures import save_figure, subplots, titled

#: where the recording-level figures' probabilities come from, said in their titles
RECORDINGS = "recordings, mean window probabilities"


def confusion_matrix_figure(cm: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> Figure:
    """Counts and row-normalised shares of a confusion matrix (rows true, columns predicted)."""
    cm_arr = np.asarray(cm, dtype=float)
    shares = cm_arr / np.maximum(cm_arr.sum(axis=1, keepdims=True), 1)
    fig, ax = subplots(figsize=(4.8, 4.4), dpi=120)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(cm_arr[i, j])}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix", fontsize=9)
    return fig


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = ""
) -> Path:
    """:func:`confusion_matrix_figure`, written to ``path``."""
    return save_figure(confusion_matrix_figure(cm, classes, title), path)


def _one_vs_rest(targets: np.ndarray, classes: Sequence[str]) -> list[tuple[int, str, np.ndarray]]:
    """``(index, name, is_this_class)`` of every class with both positives and negatives among
    ``targets`` (a curve needs both)."""
    out = []
    for c, name in enumerate(classes):
        positive = np.asarray(targets) == c
        if 0 < positive.sum() < positive.size:
            out.append((c, str(name), positive))
    return out


def _unit_square(ax: Axes, xlabel: str, ylabel: str, title: str, legend_at: str) -> None:
    """Both axes on [0, 1], equal in length, labelled; the legend at ``legend_at``."""
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_at, fontsize=8)


def roc_figure(probs: np.ndarray, targets: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """One-vs-rest ROC curve of every class (AUC in the legend), the chance diagonal dotted."""
    fig, ax = subplots(figsize=(5.0, 5.2), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="chance")
    for c, name, positive in _one_vs_rest(targets, classes):
        fpr, tpr, _ = sklearn.metrics.roc_curve(positive, probs[:, c])
        ax.plot(fpr, tpr, lw=1.4, label=f"{name} (AUC {sklearn.metrics.auc(fpr, tpr):.3f})", clip_on=False)
    _unit_square(
        ax,
        "false positive rate (1 − specificity)",
        "true positive rate (sensitivity)",
        titled(title, f"ROC, one-vs-rest ({RECORDINGS})"),
        "lower right",
    )
    return fig


def pr_figure(probs: np.ndarray, targets: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """One-vs-rest precision-recall curve of every class (average precision in the legend), each class's
    prevalence (a random ranking's precision) dotted in its colour."""
    fig, ax = subplots(figsize=(5.0, 5.2), dpi=120)
    for c, name, positive in _one_vs_rest(targets, classes):
        precision, recall, _ = sklearn.metrics.precision_recall_curve(positive, probs[:, c])
        ap = sklearn.metrics.average_precision_score(positive, probs[:, c])
        label = f"{name} (AP {ap:.3f})"
        (line,) = ax.plot(recall, precision, lw=1.4, label=label, drawstyle="steps-post", clip_on=False)
        ax.axhline(positive.mean(), color=line.get_color(), ls=":", lw=1)
    _unit_square(
        ax,
        "recall (sensitivity)",
        "precision (positive predictive value)",
        titled(title, f"precision-recall, one-vs-rest ({RECORDINGS})"),
        "lower left",
    )
    return fig


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Top-class confidence against accuracy in ``n_bins`` equal bins over [0, 1]: each bin's ``count``,
    mean ``confidence`` and ``accuracy`` (NaN where empty), and the expected calibration error ``ece``
    (the count-weighted mean gap)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(targets)
    which = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(which, confidence, n_bins) / count
        acc = np.bincount(which, correct.astype(float), n_bins) / count
    gaps = np.where(count > 0, np.abs(acc - conf), 0.0)
    ece = float((count * gaps).sum() / max(count.sum(), 1))
    return {"count": count, "confidence": conf, "accuracy": acc, "ece": np.asarray(ece)}


def reliability_figure(probs: np.ndarray, targets: np.ndarray, title: str = "", n_bins: int = 10) -> Figure:
    """Reliability diagram: each confidence bin's accuracy (bars) against the diagonal of perfect
    calibration, the expected calibration error in the title; below, how many recordings fall in each
    bin."""
    bins = reliability_bins(probs, targets, n_bins)
    fig, (top, bottom) = subplots(
        2, 1, figsize=(5.0, 6.0), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    top.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="perfect calibration")
    top.bar(edges[:-1], np.nan_to_num(bins["accuracy"]), width=1 / n_bins, align="edge",
            color="tab:blue", edgecolor="white", alpha=0.8, label="accuracy in bin")  # fmt: skip
    top.plot(bins["confidence"], bins["accuracy"], "o", color="tab:red", ms=4, clip_on=False,
             label="bin's mean confidence")  # fmt: skip
    top.set_xlim(0.0, 1.0)
    top.set_ylim(0.0, 1.0)
    top.set_ylabel("accuracy (share predicted right)")
    top.set_title(titled(title, f"reliability ({RECORDINGS}); ECE {float(bins['ece']):.3f}"), fontsize=9)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(edges[:-1], bins["count"], width=1 / n_bins, align="edge", color="0.5", edgecolor="white")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("recordings")
    return fig


def _saved(build: Callable[..., Figure], *args: Any) -> Callable[[Path], Path]:
    """A drawer of a test figure: ``build(*args)`` written to the path it is given."""
    return lambda path: save_figure(build(*args), path)


def classifier_figures(
    metrics: dict[str, Any],
    classes: Sequence[str],
    records: tuple[np.ndarray, np.ndarray] | None,
    title: str = "",
) -> dict[str, Callable[[Path], Path]]:
    """What a classifier's test writes into the run folder, by file name: the window and recording
    confusion matrices (from ``metrics``), and from ``records`` (recording probabilities, true classes)
    the ROC and precision-recall curves and the reliability diagram. ``title``: :func:`run_title`."""
    figures = {
        "confusion_matrix.png": _saved(
            confusion_matrix_figure, metrics["confusion_matrix"], classes, titled(title, "windows")
        )
    }
    if "record_confusion_matrix" in metrics:
        method = (metrics.get("calibration") or {}).get("method")
        what = f"recordings, calibration={method}" if method else "recordings"
        figures["confusion_matrix_records.png"] = _saved(
            confusion_matrix_figure, metrics["record_confusion_matrix"], classes, titled(title, what)
        )
    if records is not None and len(records[1]):
        probs, targets = records
        figures["roc_curves.png"] = _saved(roc_figure, probs, targets, classes, title)
        figures["pr_curves.png"] = _saved(pr_figure, probs, targets, classes, title)
        figures["reliability.png"] = _saved(reliability_figure, probs, targets, title)
    return figures
