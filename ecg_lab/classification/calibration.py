"""Calibration of a classifier's recording decisions (config group ``calibration``; off by default).

A recording's probabilities are the mean of its windows' softmax probabilities. A calibration moves
the decision taken from them, with one value per class, fitted after training on the validation
recordings of the best checkpoint (the weights that are tested):

- ``prior``: class-prior correction. The probabilities are multiplied by ``exp(values)`` and
  renormalised; the class is their argmax (``values`` are log-weights).
- ``thresholds``: per-class decision thresholds. The probabilities stay as they are; the class is the
  argmax of ``probabilities - values``.

Fitting objective: the Challenge's official F1 (mean F1 of N, A, O) of the validation recordings.
Search: coordinate ascent from all values 0 (no change), over the grid ``linspace(low, high, steps)``:
each class in turn takes the grid value that scores best with the others held; a class keeps its value
unless another scores strictly higher, and among values scoring the same best the one nearest 0 (then
the lower) wins. Rounds over all classes repeat until one changes nothing, at most ``rounds`` times.
So the fitted validation F1 is never below the uncalibrated one, and the fit is deterministic.

The fitted calibration is a plain dict stored in the checkpoint (``ckpt["ecg_lab"]["calibration"]``),
applied by testing and ``ecg_lab.eval`` and written into an edge export's config;
:func:`ecg_lab.edge.runtime.calibrated` applies it everywhere, so training and device cannot drift.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ecg_lab.app.checkpoints import read_checkpoint
from ecg_lab.app.config import instantiate_node
from ecg_lab.classification.metrics import confusion_matrix, official_f1
from ecg_lab.edge.runtime import calibrated
from ecg_lab.errors import ConfigError

log = logging.getLogger(__name__)

OBJECTIVE = "official_f1 (mean F1 of N, A, O) of the validation recordings"


def recording_scores(targets: np.ndarray, preds: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """The Challenge's F1 per class and official F1 of recordings, and their confusion matrix."""
    cm = confusion_matrix(targets, preds, len(classes))
    return {**official_f1(cm, classes), "record_confusion_matrix": cm.tolist()}


class Calibrator:
    """Fits one calibration ``method`` (``prior`` or ``thresholds``, see the module's docstring) by
    coordinate ascent over ``linspace(low, high, steps)``, at most ``rounds`` rounds."""

    TASK = "classification"

    def __init__(
        self,
        method: Literal["prior", "thresholds"],
        low: float,
        high: float,
        steps: int,
        rounds: int = 3,
    ) -> None:
        if method not in ("prior", "thresholds"):
            raise ConfigError(f"calibration.method={method!r} is not one of prior, thresholds; choose one")
        if not low < high or steps < 2 or rounds < 1:
            raise ConfigError(
                f"calibration.low={low}, high={high}, steps={steps}, rounds={rounds}: the grid needs "
                "low < high, steps >= 2 and rounds >= 1; fix the one that is off"
            )
        self.method = method
        self.grid = np.linspace(low, high, steps).round(12)  # plain decimals in the stored values
        self.rounds = rounds

    def fit(self, probs: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
        """Fit on recording probabilities ``(n, classes)`` and true classes ``(n,)``; returns the
        calibration as plain values (method, classes, values, the validation scores before and after)."""
        probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)

        def score(values: np.ndarray) -> float:
            preds = calibrated(probs, {"method": self.method, "values": values})[1]
            return recording_scores(targets, preds, classes)["official_f1"]

        order = sorted(self.grid, key=lambda v: (abs(v), v))  # nearest 0 first: a tie keeps the earlier
        values = np.zeros(len(classes))
        start = best = score(values)
        for _ in range(self.rounds):
            before = best
            for c in range(len(classes)):
                for g in order:
                    trial = values.copy()
                    trial[c] = g
                    if (trial_score := score(trial)) > best:  # strictly higher, or the class keeps its value
                        values, best = trial, trial_score
            if best == before:
                break
        return {
            "method": self.method,
            "classes": [str(c) for c in classes],
            "values": [float(v) for v in values],
            "objective": OBJECTIVE,
            "val_official_f1": float(best),
            "val_official_f1_uncalibrated": float(start),
            "n_records": int(len(targets)),
        }


def build_calibrator(cfg: DictConfig | None, model: Any) -> Calibrator | None:
    """The ``calibration`` config node built (None for ``calibration=none``); ConfigError, naming the
    key, for a bad value or a model that is no classifier."""
    if not cfg:
        return None
    if getattr(model, "TASK", None) != Calibrator.TASK:
        raise ConfigError(
            f"calibration={cfg.get('method')} is for classifiers, but the model is a "
            f"{getattr(model, 'TASK', 'unknown')} model; use calibration=none"
        )
    return instantiate_node(cfg)


def store_calibration(ckpt_path: str | Path, calibration: dict[str, Any]) -> None:
    """Add ``calibration`` to the checkpoint at ``ckpt_path`` (``ckpt["ecg_lab"]["calibration"]``),
    rewriting it atomically: written beside it under a temporary name, then renamed over it."""
    path = Path(ckpt_path)
    ckpt = read_checkpoint(path)
    ckpt.setdefault("ecg_lab", {})["calibration"] = calibration
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fit_on_validation(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: Any,
    calibrator: Calibrator,
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Validate ``model`` (the weights of ``ckpt_path`` when given; without loggers, so they get no extra
    rows) and fit ``calibrator`` on its validation recordings; returns the fit."""
    loggers = trainer.loggers
    trainer.loggers = []
    try:
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    finally:
        trainer.loggers = loggers
    probs, targets = model.record_outputs["val"]
    fitted = calibrator.fit(probs, targets, model.classes)
    log.info(
        "calibration=%s fitted on %d validation recordings: official F1 %.4f -> %.4f, values %s",
        fitted["method"],
        fitted["n_records"],
        fitted["val_official_f1_uncalibrated"],
        fitted["val_official_f1"],
        dict(zip(fitted["classes"], np.round(fitted["values"], 3).tolist(), strict=True)),
    )
    return fitted


def calibrate_best(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any, calibrator: Calibrator | None
) -> dict[str, Any] | None:
    """Fit ``calibrator`` on the best checkpoint's validation recordings and store the fit in that
    checkpoint; returns the fit (None without a calibrator or a best checkpoint)."""
    if calibrator is None:
        return None
    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt is not None else ""
    if not best:
        log.warning("calibration=%s skipped: no best checkpoint to fit and store it in", calibrator.method)
        return None
    fitted = fit_on_validation(trainer, model, datamodule, calibrator, best)
    if trainer.is_global_zero:  # every rank fitted the same gathered recordings
        store_calibration(best, fitted)
    trainer.strategy.barrier("calibration")
    return fitted
