"""What a run leaves behind: ``test_metrics.json``, a confusion-matrix PNG, training curves."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)
    return path


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = ""
) -> Path:
    """Counts and row-normalised shares of a confusion matrix (rows true, columns predicted)."""
    cm_arr = np.asarray(cm, dtype=float)
    shares = cm_arr / np.maximum(cm_arr.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
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
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curves(
    rows: Sequence[dict[str, float]], path: Path, curves: Sequence[str] = ("loss", "f1")
) -> Path:
    """One panel per metric, train and validation per epoch."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), dpi=120, squeeze=False)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, name in zip(axes[0], curves, strict=True):
        for stage in ("train", "val"):
            key = f"{stage}/{name}"
            pts = [(e, r[key]) for e, r in zip(epochs, rows, strict=True) if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=stage)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion_matrices(results: dict[str, Any], output_dir: Path) -> list[Path]:
    """The window- and (when present) record-level confusion-matrix PNGs of a classifier's test results."""
    classes = results["classes"]
    paths = [
        plot_confusion_matrix(
            results["confusion_matrix"], classes, output_dir / "confusion_matrix.png", "test windows"
        )
    ]
    if "record_confusion_matrix" in results:
        paths.append(
            plot_confusion_matrix(
                results["record_confusion_matrix"],
                classes,
                output_dir / "confusion_matrix_records.png",
                "test recordings",
            )
        )
    return paths
