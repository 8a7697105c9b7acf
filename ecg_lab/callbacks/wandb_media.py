"""What a wandb run's dashboard shows besides the curves Lightning logs (``logger=wandb``).

When the test ends, :class:`WandbMedia` logs to the run of the trainer's
:class:`~pytorch_lightning.loggers.WandbLogger`:

- the test figures the run writes (the task's :class:`~ecg_lab.app.outputs.TestOutcome` figures: a
  classifier's confusion matrices, a VAE's reconstructions and generated ECGs) and ``training_curves.png``,
  as ``figures/<name>`` images;
- for a classifier, the confusion matrix of the test recordings (``wandb.plot.confusion_matrix``, from
  the predictions ``predictions.csv`` holds) and its ``explain_worst`` most confidently wrong test
  recordings drawn with their explanations (:mod:`ecg_lab.classification.explain`) under ``explanations``;
- the test metrics (``test_metrics.json``'s) in the run summary as ``test/<key>``;
- with ``log_checkpoint``, the best checkpoint as an artifact of type ``model``.

Each part that fails (wandb, a figure, a record that cannot be read) is one warning in the log; the run
goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from ecg_lab.app.outputs import TestReporter
from ecg_lab.errors import first_line

log = logging.getLogger(__name__)

#: figures a run writes before its test (``MetricsHistory`` draws the curves when the fit ends)
RUN_FIGURES = ("training_curves.png",)


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn any error inside into one warning naming ``what`` could not be logged to wandb."""
    try:
        yield
    except Exception as err:  # media must never break a run
        log.warning("wandb: could not log %s (%s); the run goes on without it", what, first_line(err))


def wandb_run(trainer: pl.Trainer) -> Any | None:
    """The wandb run of the trainer's WandbLogger (None without one, or on a rank other than zero)."""
    if not trainer.is_global_zero:
        return None
    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    return loggers[0].experiment if loggers else None


def summary_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """Test metrics as run-summary entries ``test/<key>``, JSON values (as ``test_metrics.json`` has them)."""
    return {f"test/{k}": v for k, v in json.loads(json.dumps(metrics, default=float)).items()}


def figure_images(outcome: Any, run_dir: Path, scratch: Path) -> dict[str, Any]:
    """``figures/<name>``: the run's figures that exist (:data:`RUN_FIGURES`) and the test figures, drawn
    into ``scratch`` (the run writes its own copies once the test has returned)."""
    import wandb

    paths = [run_dir / name for name in RUN_FIGURES if (run_dir / name).is_file()]
    for name, draw in outcome.figures.items():
        with guarded(f"the figure {name}"):
            paths.append(Path(draw(scratch / name)))
    return {f"figures/{p.stem}": wandb.Image(str(p)) for p in paths}


def record_confusion_matrix(module: Any) -> dict[str, Any]:
    """``confusion_matrix``: the test recordings' true against predicted class (empty without predictions)."""
    import wandb

    p = getattr(module, "test_predictions", None)
    if p is None:
        return {}
    known = p.targets >= 0
    chart = wandb.plot.confusion_matrix(
        y_true=p.targets[known].tolist(),
        preds=p.predicted[known].tolist(),
        class_names=list(p.classes),
        title="test recordings",
    )
    return {"confusion_matrix": chart}


def worst_cases(predictions: Any, n: int, calibration: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """``(record, label, caption)`` of the (at most) ``n`` test recordings predicted wrong with the highest
    probability (under ``calibration``), as ``python -m ecg_lab.explain worst=N`` picks them."""
    from ecg_lab.classification.predictions import most_confidently_wrong
    from ecg_lab.edge.runtime import calibrated

    p = predictions
    known = np.flatnonzero(p.targets >= 0)
    probs, targets = p.probabilities[known], p.targets[known]
    confidence = calibrated(probs, calibration)[0]
    cases = []
    for i in most_confidently_wrong(probs, targets, n, calibration):
        j, label, predicted = known[i], p.classes[int(targets[i])], int(p.predicted[known[i]])
        caption = (
            f"{p.records[j]}: true {label}, predicted {p.classes[predicted]} ({confidence[i, predicted]:.2f})"
        )
        cases.append((str(p.records[j]), label, caption))
    return cases


def explanation_images(outcome: Any, module: Any, n: int, scratch: Path) -> dict[str, Any]:
    """``explanations``: the ``n`` worst test recordings drawn by the task's ``outcome.explain`` (Grad-CAM,
    integrated gradients and the windows' probabilities over the ECG); empty for a task without it."""
    import wandb

    from ecg_lab.app.figures import save_figure

    predictions = getattr(module, "test_predictions", None)
    if n < 1 or getattr(outcome, "explain", None) is None or predictions is None:
        return {}
    images = []
    with torch.inference_mode(False), torch.enable_grad():  # the test loop runs in inference mode
        for record_id, label, caption in worst_cases(predictions, n, getattr(module, "calibration", None)):
            with guarded(f"the explanation of record {record_id}"):
                png = save_figure(outcome.explain(record_id, label), scratch / f"{record_id}.png")
                images.append(wandb.Image(str(png), caption=caption))
    return {"explanations": images} if images else {}


def log_best_checkpoint(run: Any, trainer: pl.Trainer) -> None:
    """The best checkpoint as the artifact ``model-<run id>`` (type ``model``, alias ``best``)."""
    import wandb

    ckpt = trainer.checkpoint_callback
    best = str(getattr(ckpt, "best_model_path", "") or "")
    if not best:
        log.info("wandb: no best checkpoint to log (no checkpoint callback, or none saved)")
        return
    score = getattr(ckpt, "best_model_score", None)
    metadata = {"monitor": getattr(ckpt, "monitor", None), "score": None if score is None else float(score)}
    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
    artifact.add_file(best, name=Path(best).name)
    run.log_artifact(artifact, aliases=["best"])


class WandbMedia(Callback):
    """After the test, log the run's figures, the recordings' confusion matrix, a few explained
    recordings and the test metrics to the wandb run (and, on request, the best checkpoint); does nothing
    without a WandbLogger. ``conf/logger/wandb.yaml`` adds it as ``callbacks.wandb_media``."""

    def __init__(self, output_dir: str | Path, explain_worst: int = 3, log_checkpoint: bool = False) -> None:
        """``explain_worst``: how many of the most confidently wrong test recordings to explain (0: none);
        ``log_checkpoint``: also upload the best checkpoint as a ``model`` artifact."""
        self.output_dir = Path(output_dir)
        self.explain_worst = explain_worst
        self.log_checkpoint = bool(log_checkpoint)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with guarded("the test media"):
            run = wandb_run(trainer)
            if run is not None and isinstance(pl_module, TestReporter):
                self.log_test(run, trainer, pl_module)

    def log_test(self, run: Any, trainer: pl.Trainer, module: Any) -> None:
        """Log everything the test left to ``run``, each part guarded on its own."""
        outcome = module.test_outcome()
        with guarded("the test metrics"):
            run.summary.update(summary_of(outcome.metrics))
        with tempfile.TemporaryDirectory(prefix="wandb_media_") as tmp:
            media: dict[str, Any] = {}
            with guarded("the figures"):
                media |= figure_images(outcome, self.output_dir, Path(tmp))
            with guarded("the confusion matrix"):
                media |= record_confusion_matrix(module)
            with guarded("the explanations"):
                media |= explanation_images(outcome, module, self.explain_worst, Path(tmp))
            with guarded("the media"):
                run.log(media)  # copies the files into the run's media folder before tmp goes
        if self.log_checkpoint:
            with guarded("the best checkpoint"):
                log_best_checkpoint(run, trainer)
