"""What a resumed run needs to end where an uninterrupted one ends.

- :class:`RngState` stores the Python, NumPy and torch generators in every checkpoint and puts them
  back at the start of the first epoch after resuming (the training order itself is a function of seed
  and epoch, :class:`ecg_lab.data.sampling.EpochShuffle`).
- :class:`BestCheckpoint` keeps the best score across a resume into a new run folder (Lightning's
  ``ModelCheckpoint`` forgets it there, so the first epoch after resuming became "best" whatever its
  score), carries the best file over, and removes a best file a killed run left behind.
- :class:`ResumableCSVLogger` keeps ``csv/metrics.csv`` of the epochs the checkpoint covers when a run
  resumes into its own folder (Lightning's deletes the file).
"""

from __future__ import annotations

import csv
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)


def rng_states() -> dict[str, Any]:
    """The global generators' states, as values ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state(
        (n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RngState(Callback):
    """Saves the generators with each checkpoint; restores them when the next training epoch starts."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict  # after the sanity check, which draws from torch's generator

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restore is not None:
            set_rng_states(self._restore)
            self._restore = None


def same_folder(a: str | Path | None, b: str | Path | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose best score survives a resume into another folder, and which leaves
    one best file after a resume into its own. Its file names count epochs from 1, as the console and
    ``train.log`` do (``best-epoch045.ckpt``: the 45th epoch; Lightning's own epoch counts from 0)."""

    def format_checkpoint_name(self, metrics: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, *args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath")
        if same_folder(old_dir, self.dirpath) or state_dict.get("best_model_score") is None:
            super().load_state_dict({**state_dict, "dirpath": self.dirpath})
            return
        score = state_dict["best_model_score"]
        old = Path(state_dict.get("best_model_path") or "")
        self.best_model_score = self.kth_value = score
        self.best_k_models = {}
        self.best_model_path = self.kth_best_model_path = ""
        if not old.is_file():
            log.warning(
                "the best checkpoint of the resumed run (%s, %s=%.4f) is gone; later epochs must still beat "
                "its score to be saved",
                old,
                self.monitor,
                float(score),
            )
            return
        new = Path(str(self.dirpath)) / old.name
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(old, new)
        self.best_k_models = {str(new): score}
        self.best_model_path = self.kth_best_model_path = str(new)
        log.info("resumed best checkpoint %s (%s=%.4f) copied to %s", old, self.monitor, float(score), new)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path and trainer.is_global_zero:
            self.remove_stale_files()

    def remove_stale_files(self) -> None:
        """Delete best files of this callback's name pattern that it does not hold (left by a killed run)."""
        prefix = str(self.filename or "").split("{", 1)[0]
        if not prefix or self.dirpath is None or not Path(self.dirpath).is_dir():
            return
        kept = {Path(p).resolve() for p in self.best_k_models}
        for path in Path(self.dirpath).glob(f"{prefix}*{self.FILE_EXTENSION}"):
            if path.resolve() not in kept:
                log.info("removing %s: a best checkpoint the resumed run does not hold", path)
                path.unlink()


class ConfiguredEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping, except that a resumed run keeps the configured ``patience``: Lightning
    restores the checkpoint's, so resuming with ``callbacks.early_stopping.patience=20`` silently kept
    the old 10. The wait count and best score still come from the checkpoint."""

    @property
    def state_key(self) -> str:
        """Lightning's key (``EarlyStopping{...}``), so checkpoints of either class resume into the other."""
        return f"EarlyStopping{dict(monitor=self.monitor, mode=self.mode)!r}"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        configured = self.patience
        super().load_state_dict(state_dict)
        if state_dict.get("patience") != configured:
            log.info(
                "early stopping: patience %s (configured) replaces the checkpoint's %s",
                configured,
                state_dict.get("patience"),
            )
        self.patience = configured


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is kept in memory instead of lost."""

    def _check_log_dir_exists(self) -> None:
        self.previous: list[dict[str, str]] = []
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as f:
                self.previous = list(csv.DictReader(f))
            path.unlink()

    def keep_previous(self, last_epoch: int) -> int:
        """Write back the earlier rows of epochs ``<= last_epoch``; return how many."""
        rows = [r for r in self.previous if r.get("epoch") and int(float(r["epoch"])) <= last_epoch]
        if rows:
            self.metrics_keys = sorted({k for r in rows for k, v in r.items() if k})
            with open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
        self.previous = []
        return len(rows)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that, resuming into its own folder, keeps the rows of the epochs the checkpoint
    covers (and only those: the rows of an interrupted epoch go) and writes its rows at every epoch
    start, so a killed run loses nothing its checkpoint holds."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._fs is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment


class ResumedHistory(Callback):
    """When training starts (or resumes), each :class:`ResumableCSVLogger` keeps its earlier rows of
    the epochs before the first one to train; at every epoch start the loggers write their rows."""

    def __init__(self) -> None:
        self._started = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._started and trainer.is_global_zero:
            self._started = True
            for logger in trainer.loggers:
                writer = logger.experiment if isinstance(logger, ResumableCSVLogger) else None
                if isinstance(writer, _KeepingWriter):
                    kept = writer.keep_previous(trainer.current_epoch - 1 if trainer.ckpt_path else -1)
                    if kept:
                        log.info("kept %d earlier rows of %s", kept, writer.metrics_file_path)
        for logger in trainer.loggers:
            logger.save()
