"""Train and test a model: ``python -m ecg_lab.train [overrides]`` (Hydra app, config ``conf/train.yaml``)."""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ecg_lab.app.checkpoints import read_checkpoint, stored_manifest  # noqa: E402
from ecg_lab.app.checks import check_overrides, check_task_config  # noqa: E402
from ecg_lab.app.config import (  # noqa: E402
    CONFIG_DIR,
    instantiate_list,
    instantiate_node,
    ranks_start_in_this_job,
    to_container,
)
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.figures import run_title  # noqa: E402
from ecg_lab.app.hardware import describe  # noqa: E402
from ecg_lab.app.html_report import report_settings  # noqa: E402
from ecg_lab.app.outputs import KILLED, RunOutputs, read_status  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.callbacks.history import MetricsHistory  # noqa: E402
from ecg_lab.classification.augment import build_augment  # noqa: E402
from ecg_lab.classification.calibration import build_calibrator, calibrate_best  # noqa: E402
from ecg_lab.classification.recordings import check_augment  # noqa: E402

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Data and model from config; the model carries the resolved config for its checkpoints."""
    check_task_config(cfg)
    check_augment(cfg)  # augment=... with whole recordings (data.recordings): refused
    datamodule = instantiate_node(cfg.data)  # a bad data value: its one-line ConfigError
    augment = build_augment(cfg.get("augment"))  # training batches only; eval builds the model without
    extra = {"augment": augment} if augment is not None else {}
    model = hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss), **extra)
    model.run_config = to_container(cfg)
    return datamodule, model


def resume_split(datamodule: pl.LightningDataModule, ckpt_path: str | None) -> None:
    """A resumed run keeps the split its checkpoint was trained on (unless ``data.manifest`` is set)."""
    if not ckpt_path:
        return
    ckpt = read_checkpoint(ckpt_path)  # an unreadable file is one line naming it, before preparation
    if getattr(datamodule, "given_manifest", None):
        return
    manifest = stored_manifest(ckpt)
    if manifest is not None:
        log.info("resuming on the split stored in %s (%d records)", ckpt_path, len(manifest))
        datamodule.use_manifest(manifest)


def note_resume(outputs: RunOutputs, ckpt_path: str | None) -> None:
    """Record in ``run_status.json`` which checkpoint this run resumes and how the run that wrote it ended
    (killed: its process is gone)."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return
    run_dir = Path(ckpt_path).resolve().parent.parent
    earlier = read_status(run_dir) if run_dir != outputs.dir.resolve() else outputs.previous
    if earlier and earlier.get("status") == KILLED:
        log.warning("resuming %s: the run that wrote it was %s", ckpt_path, earlier.get("error"))
    outputs.note(
        resumed_from={
            "checkpoint": str(Path(ckpt_path).resolve()),
            "run_dir": str(run_dir),
            "status": (earlier or {}).get("status"),
        }
    )


@task_wrapper
def train(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Fit, calibrate the best checkpoint (``calibration``, off by default), then test it; the run folder
    gets the split, the test metrics and figures; returns the metrics."""
    check_overrides(cfg)
    t0 = time.perf_counter()
    apply_threads(cfg.get("threads"))
    report = report_settings(cfg.get("report"))  # report.html's settings, checked before any work
    torch.set_flush_denormal(True)  # denormal gradients slow CPU LSTM backward passes several-fold
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    calibrator = build_calibrator(cfg.get("calibration"), model)
    note_resume(outputs, cfg.get("ckpt_path"))
    resume_split(datamodule, cfg.get("ckpt_path"))
    datamodule.prepare_data()  # generate/preprocess before loggers start (wandb must not be forked)
    datamodule.setup("fit")  # the split, written before training starts
    outputs.data_files(datamodule)
    print(
        f"model {cfg.model.net._target_.rsplit('.', 1)[-1]} "
        f"({cfg.get('model_name', '')}): {model.n_params:,} parameters",
        flush=True,
    )
    if "ddp" in str(cfg.trainer.get("strategy", "")):
        ranks_start_in_this_job()
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams({**to_container(cfg), "n_params": model.n_params})

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.monitor and ckpt.best_model_score is not None:
        metrics[ckpt.monitor] = float(ckpt.best_model_score)  # sweepers score the best epoch, as tested
    if cfg.get("train", True):  # fitted on the best checkpoint's validation recordings, stored in it
        calibrate_best(trainer, model, datamodule, calibrator)

    if cfg.get("test", True):
        best = ckpt.best_model_path if ckpt is not None else ""
        if not best:
            log.warning("no best checkpoint (e.g. fast_dev_run); testing the current weights")
        extra = {
            "task_name": cfg.task_name,
            "model_name": cfg.get("model_name"),
            "data": cfg.data.get("name"),
            "seed": cfg.seed,
            "ckpt_path": best or None,
            "epochs": trainer.current_epoch,
            # this process, plus the training time of the epochs a resumed checkpoint brought along
            "wall_time_s": wall_time(time.perf_counter() - t0, trainer),
            "hardware": describe(type(trainer.accelerator).__name__, int(trainer.num_devices)),
        }
        model.figure_title = run_title(cfg.get("model_name"), cfg.data, best)
        tested = outputs.test_results(
            trainer, model, datamodule, extra, ckpt_path=best or None, report=report
        )
        metrics.update({f"test/{k}": v for k, v in tested.items() if isinstance(v, float)})
    return metrics


def wall_time(elapsed: float, trainer: pl.Trainer) -> float | None:
    """This process's ``elapsed`` seconds plus the training time the resumed checkpoint's epochs took in
    earlier processes; None (with a warning) when that checkpoint does not record it."""
    history = [cb for cb in trainer.callbacks if isinstance(cb, MetricsHistory)]  # type: ignore[attr-defined]
    resumed = history[0].resumed_s if history else 0.0
    if resumed is None:
        log.warning(
            "the resumed checkpoint's epochs carry no training times (written before ecg_lab recorded "
            "them): test_metrics.json's wall_time_s is null; this process took %.0f s",
            elapsed,
        )
        return None
    return round(elapsed + resumed, 2)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None


def main() -> float | None:
    """Entry point (returns the optimised metric for sweepers)."""
    set_up_app()
    return _hydra_main()


if __name__ == "__main__":
    main()
