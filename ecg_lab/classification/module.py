"""LightningModule for window classification: batches → model → metrics."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from ecg_lab.app.checkpoints import CarriesRun
from ecg_lab.app.distributed import EpochMeans, gather_rows
from ecg_lab.app.optimizers import ConfiguredOptimizers
from ecg_lab.app.outputs import TestOutcome
from ecg_lab.classification.augment import BatchAugment
from ecg_lab.classification.calibration import recording_scores
from ecg_lab.classification.figures import classifier_figures
from ecg_lab.classification.loss import WeightedCrossEntropy
from ecg_lab.classification.metrics import record_probabilities, window_metrics
from ecg_lab.classification.predictions import predictions_of, score_intervals, with_items
from ecg_lab.edge.predictions import PREDICTIONS, Predictions
from ecg_lab.edge.runtime import calibrated
from ecg_lab.models.crnn import count_parameters

log = logging.getLogger(__name__)

#: a batch: ``(x, y, record)`` or ``(x, y, record, inputs)``, where ``inputs`` is a dict of further
#: named network inputs (e.g. ``lengths`` of padded whole recordings, ``rr`` interval features)
Batch = tuple[torch.Tensor, ...] | tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(x, y, record, inputs)`` of a batch; ``inputs`` is empty when the batch has no fourth element."""
    x, y, rec, *rest = batch
    return x, y, rec, (rest[0] if rest else {})  # type: ignore[return-value]


class ECGClassifier(CarriesRun, ConfiguredOptimizers, pl.LightningModule):
    """Trains ``net`` with ``loss``; logs weighted F1, AUROC, accuracy, per-class sensitivity and
    specificity at window level, and the Challenge's F1 at recording level. ``augment`` (config group
    ``augment``, built by the entry point, not part of ``model``) transforms training batches only."""

    TASK = "classification"
    CURVES = ("loss", "f1")  # drawn in training_curves.png

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: nn.Module | None = None,
        scheduler: Callable[..., Any] | None = None,
        classes: Sequence[str] = ("N", "A", "O", "~"),
        monitor: str = "val/f1",
        monitor_mode: str = "max",
        augment: BatchAugment | None = None,
    ) -> None:
        super().__init__()
        classes = [str(c) for c in classes]  # plain types only, so checkpoints load with weights_only
        # optimizer/scheduler partials stay out of hparams: checkpoints hold plain data only
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "augment"], logger=False)
        self.use_optimizers(optimizer, scheduler)
        self.net = net
        self.augment = augment
        self.augment_seed: int | None = None  # the run's seed, taken when fitting starts
        self.n_params = count_parameters(net)
        self.loss = loss if loss is not None else WeightedCrossEntropy("none", len(classes))
        self.classes = tuple(classes)
        k = len(self.classes)
        self.train_metrics = window_metrics(k, full=False).clone(prefix="train/")
        self.val_metrics = window_metrics(k).clone(prefix="val/")
        self.test_metrics = window_metrics(k).clone(prefix="test/")
        self.eval_losses = nn.ModuleDict({stage: EpochMeans(["loss"]) for stage in ("val", "test")})
        self._outputs: dict[str, list[torch.Tensor]] = {}
        self._test_metrics: dict[str, Any] = {}
        #: per stage, the last epoch's recording probabilities and true classes (what calibration fits on)
        self.record_outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        #: the fitted calibration (ecg_lab.classification.calibration), applied to test recordings
        self.calibration: dict[str, Any] | None = None
        #: the last test's predictions, record by record and window by window (predictions.csv)
        self.test_predictions: Predictions | None = None
        #: what a test's figures show (``cnn_lstm · physionet2017 · test split · best-epoch012``), set by
        #: the entry point that tests (ecg_lab.app.figures.run_title)
        self.figure_title = ""

    def forward(self, x: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.net(x, **inputs)

    # -- set-up ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit":
            self.augment_seed = torch.initial_seed() % 2**63  # what seed_everything set, as the loaders use
        if stage == "fit" and dm is not None and hasattr(self.loss, "set_class_weights"):
            weights = dm.class_weights()
            self.loss.set_class_weights(weights)
            log.info(
                "class weights (inverse frequency of training windows): %s",
                {c: round(float(w), 3) for c, w in zip(self.classes, weights, strict=True)},
            )
            for lg in self.loggers:
                lg.log_hyperparams(
                    {f"class_weight/{c}": float(w) for c, w in zip(self.classes, weights, strict=True)}
                )

    # -- steps -------------------------------------------------------------------------------
    def batch_loss(self, batch: Batch) -> torch.Tensor:
        """The loss of one batch, as training computes it (what the backend check differentiates)."""
        x, y, _, inputs = split_batch(batch)
        return self.loss(self(x, **inputs), y)

    def augmented(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """A training batch through ``augment``, its draws from (run seed, global step, batch, rank)."""
        if self.augment is None:
            return x
        seed = self.augment_seed if self.augment_seed is not None else torch.initial_seed() % 2**63
        return self.augment(x, seed, self.global_step, batch_idx, self.global_rank)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y, _, inputs = split_batch(batch)
        logits = self(self.augmented(x, batch_idx), **inputs)
        loss = self.loss(logits, y)
        self.train_metrics(logits.detach(), y)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def _eval_step(self, stage: str, batch: Batch) -> None:
        x, y, rec, inputs = split_batch(batch)
        logits = self(x, **inputs)
        self.eval_losses[stage].log(self, stage, {"loss": self.loss(logits, y)}, len(y), prog_bar=["loss"])
        probs = torch.softmax(logits.float(), dim=1)
        getattr(self, f"{stage}_metrics").update(probs, y)
        self._outputs.setdefault(stage, []).append(
            torch.cat([probs, y[:, None].float(), rec[:, None].float()], 1)
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_epoch_end(self, stage: str) -> dict[str, Any]:
        metrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute()
        metrics.reset()
        results: dict[str, Any] = {}
        for name, value in values.items():
            short = name.split("/", 1)[1]
            if short == "confmat":
                results["confusion_matrix"] = value.cpu().long().tolist()
            elif value.ndim == 1:
                for c, v in zip(self.classes, value.cpu().tolist(), strict=True):
                    results[f"{short}_{c}"] = v
            else:
                results[short] = float(value)
        results.update(self._recording_scores(stage))
        scalars = {f"{stage}/{k}": v for k, v in results.items() if isinstance(v, float)}
        self.log_dict(scalars, sync_dist=True)
        return results

    def _recording_scores(self, stage: str) -> dict[str, Any]:
        """Recording prediction = mean of its windows' probabilities; the Challenge's F1 over them (the
        windows of every rank, each once: the val/test samplers do not pad). With a calibration, test
        recordings are scored under it, and without it under ``<key>_uncalibrated``."""
        chunks = self._outputs.pop(stage, [])
        if not chunks:
            return {}
        out = gather_rows(with_items(self, stage, torch.cat(chunks)))  # test rows: + dataset positions
        k = len(self.classes)
        rec_probs, rec_targets = record_probabilities(out[:, :k], out[:, k].long(), out[:, k + 1].long())
        probs, targets = rec_probs.cpu().numpy(), rec_targets.cpu().numpy()
        self.record_outputs[stage] = (probs, targets)
        if stage == "test":
            self.test_predictions = predictions_of(self, out, probs, self.calibration)
        scores = recording_scores(targets, probs.argmax(1), self.classes)
        if stage == "test" and self.calibration:
            preds = calibrated(probs, self.calibration)[1]
            uncalibrated = {f"{key}_uncalibrated": value for key, value in scores.items()}
            scores = {**recording_scores(targets, preds, self.classes), **uncalibrated}
            scores["calibration"] = self.calibration
        return {**scores, "n_records": int(len(targets))}

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        results = self._eval_epoch_end("test")
        results["n_windows"] = int(np.sum(results["confusion_matrix"]))
        results.update(score_intervals(self.test_predictions))  # 95% bootstrap intervals over recordings
        self._test_metrics = {"classes": list(self.classes), "n_params": self.n_params, **results}

    def test_outcome(self) -> TestOutcome:
        """The last test's metrics, its confusion matrices (windows, and recordings when known) and the
        recordings' ROC, precision-recall and reliability figures, titled ``figure_title``."""
        m = self._test_metrics
        figures = classifier_figures(m, self.classes, self.record_outputs.get("test"), self.figure_title)
        files = {PREDICTIONS: self.test_predictions.write} if self.test_predictions is not None else {}
        explain = self.explanation_figure if hasattr(self.net, "cnn") else None  # a CRNN, no ensemble
        return TestOutcome(dict(m), figures, files, explain)

    def explanation_figure(self, record_id: str, label: str) -> Any:
        """The figure ``python -m ecg_lab.explain record=<record_id>`` draws, for a recording of the
        tested data (its raw file read again), with a CPU copy of the network."""
        from ecg_lab.classification.explain import Explainer, draw_explanation  # Captum, only when drawn
        from ecg_lab.data.physionet2017 import iter_reference, read_record

        data = self.trainer.datamodule
        net = copy.deepcopy(self.net).cpu()
        explainer = Explainer.of(net, self.classes, data, calibration=self.calibration)
        record = read_record(iter_reference(data.record_root())[0], record_id, label, data.fs, self.classes)
        return draw_explanation(explainer.explain(record))

    def checkpoint_info(self) -> dict[str, Any]:
        calibration = {"calibration": self.calibration} if self.calibration else {}
        return {"classes": list(self.classes), **calibration}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's calibration (none: the argmax of the recording probabilities)."""
        self.calibration = (checkpoint.get("ecg_lab") or {}).get("calibration")
