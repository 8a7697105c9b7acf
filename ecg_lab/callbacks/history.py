"""Per-epoch metric history, written as CSV and drawn as training curves (the best epoch marked) at the
end of fit."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from ecg_lab.app.figures import join_title, plot_training_curves


def best_epoch(rows: Sequence[dict[str, float]], trainer: pl.Trainer) -> int | None:
    """The epoch (from 1) of the checkpoint callback's best score: the first row holding it (a later
    equal score saves no new best); None without a monitored best."""
    ckpt = trainer.checkpoint_callback
    if ckpt is None or not ckpt.monitor or ckpt.best_model_score is None:
        return None
    score = float(ckpt.best_model_score)
    for r in rows:
        if ckpt.monitor in r and math.isclose(r[ckpt.monitor], score, rel_tol=1e-6, abs_tol=1e-12):
            return int(r["epoch"]) + 1
    return None


def curves_title(pl_module: pl.LightningModule) -> str:
    """``cnn_lstm · physionet2017 · train and validation``, from the run config the module carries."""
    run = getattr(pl_module, "run_config", None) or {}
    return join_title(run.get("model_name"), (run.get("data") or {}).get("name"), "train and validation")


class MetricsHistory(Callback):
    """Collects epoch-level scalars (train and val) whatever logger is used, and ``time_s``: the
    training wall time up to each epoch's end (its validation included), summed across resumes."""

    def __init__(self, output_dir: str | Path, curves: Sequence[str] | None = None) -> None:
        """``curves``: the metrics drawn (null: the module's ``CURVES``, e.g. loss and f1 for classifiers)."""
        self.output_dir = Path(output_dir)
        self.curves = tuple(curves) if curves else None
        self.rows: list[dict[str, float]] = []
        self._batches = 0
        self._epoch_t0 = time.perf_counter()
        self.resumed_s: float | None = 0.0  # training time of the epochs a resumed checkpoint brought along

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        """The rows so far ride in every checkpoint, so a resumed run keeps its earlier epochs."""
        return {"rows": [dict(r) for r in self.rows]}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stage = stage  # Lightning calls this before it restores a checkpoint's callback states

    def load_state_dict(self, state_dict: dict[str, list[dict[str, float]]]) -> None:
        """Take a resumed checkpoint's rows and training time; a validate or test of a checkpoint (the
        calibration's, the test of the best one) restores callback states too, and changes nothing."""
        if getattr(self, "_stage", "fit") != "fit":
            return
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
        # None: rows written before ecg_lab recorded times, so the earlier processes' time is unknown
        self.resumed_s = self.elapsed_s() if all("time_s" in r for r in self.rows) else None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = 0
        self._epoch_t0 = time.perf_counter()
        # rows of epochs from this one on came from an interrupted run (a checkpoint of an earlier epoch)
        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch]

    def elapsed_s(self) -> float:
        """Training wall time of the epochs recorded so far (earlier processes' included)."""
        return float(self.rows[-1].get("time_s", 0.0)) if self.rows else 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self._batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a resumed run replays the end of the epoch it stopped in: no batch ran, nothing to record
        if trainer.sanity_checking or trainer.global_rank != 0 or self._batches == 0:
            return
        row = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        if self.resumed_s is not None:
            row["time_s"] = round(self.elapsed_s() + time.perf_counter() - self._epoch_t0, 2)
        row |= {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and "/" in k}
        self.rows.append(row)
        self.write()

    def write(self) -> Path:
        """Write ``metrics_history.csv`` (one row per epoch). Its ``epoch`` column is Lightning's epoch index
        (from 0), as in ``csv/metrics.csv`` and as resuming and ``ecg_lab.report`` read it; the console,
        ``train.log``, figures and checkpoint names show that index + 1."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / "metrics_history.csv"
        keys = sorted({k for r in self.rows for k in r} - {"epoch", "step", "time_s"})
        keys += ["time_s"] if any("time_s" in r for r in self.rows) else []
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "step", *keys])
            for r in self.rows:
                w.writerow([int(r["epoch"]), int(r["step"]), *(r.get(k, "") for k in keys)])
        return path

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rows and trainer.global_rank == 0:
            self.write()  # also when no epoch ran here (a finished run resumed into a new folder)
            curves = self.curves or getattr(pl_module, "CURVES", ("loss",))
            path = self.output_dir / "training_curves.png"
            plot_training_curves(
                self.rows, path, curves, best_epoch(self.rows, trainer), curves_title(pl_module)
            )
