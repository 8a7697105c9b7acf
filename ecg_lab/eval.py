"""Evaluate a checkpoint: ``python -m ecg_lab.eval ckpt_path=... [data=... data.root=... data.split=all]``.

The network, the loss and, unless given, the data are rebuilt from the config stored inside the
checkpoint. Its own test split is the split manifest stored beside it: the records it names are read
back (a missing or unreadable one is an error), never split again. ``data.split=all`` tests every
record of a dataset instead. A calibration the checkpoint holds (fitted by training, see
:mod:`ecg_lab.classification.calibration`) is applied to the test recordings, which are scored with
and without it.
"""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from ecg_lab.app.checkpoints import load_checkpoint, model_from_loaded, stored_manifest  # noqa: E402
from ecg_lab.app.checks import check_model_fits_data, check_overrides, warn_if_signals_differ  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR, instantiate_list  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.errors import ConfigError  # noqa: E402

log = logging.getLogger(__name__)


def own_split(datamodule: Any, ckpt: dict[str, Any], ckpt_path: str, data_cfg: DictConfig) -> None:
    """Give ``datamodule`` the checkpoint's split manifest, unless the data config sets its own
    (``data.manifest``) or tests every record (``data.split=all``)."""
    if data_cfg.get("split") == "all" or data_cfg.get("manifest") is not None:
        return
    manifest = stored_manifest(ckpt)
    if manifest is None:
        raise ConfigError(
            f"ckpt_path={ckpt_path} stores no split manifest (it predates ecg_lab 0.2), so its test split "
            "cannot be read back; pass data.manifest=<its run folder>/split.csv, or data.split=all to "
            "test every record"
        )
    datamodule.use_manifest(manifest)


def data_config(cfg: DictConfig, stored: DictConfig) -> DictConfig:
    """The data config to test on (the one given, else the checkpoint's), with this run's cache."""
    data_cfg = (cfg.data if cfg.get("data") is not None else stored.data).copy()
    with open_dict(data_cfg):
        data_cfg.cache_dir = cfg.paths.cache_dir
        data_cfg.pop("run_dir", None)  # checkpoints before 0.2: the run writer owns the run folder now
    return data_cfg


def check_fits_checkpoint(cfg: DictConfig, stored: DictConfig, data_cfg: DictConfig) -> None:
    """ConfigError when the data (or a given model or loss) is for another task than the checkpoint's
    model, or its window is too short for the network; warnings for signal settings that differ."""
    run_cfg = OmegaConf.create(
        {
            "model": cfg.get("model") or stored.model,
            "loss": cfg.get("loss") or stored.loss,
            "data": data_cfg,
        }
    )
    check_model_fits_data(run_cfg, ckpt_path=str(cfg.ckpt_path))
    if cfg.get("data") is not None:
        warn_if_signals_differ(cfg.data, stored.data)


@task_wrapper
def evaluate(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Test the checkpoint on the configured data and write ``test_metrics.json`` and plots."""
    check_overrides(cfg)
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path is required: python -m ecg_lab.eval ckpt_path=outputs/.../checkpoints/last.ckpt"
        )
    apply_threads(cfg.get("threads"))
    ckpt, stored = load_checkpoint(cfg.ckpt_path)
    data_cfg = data_config(cfg, stored)
    check_fits_checkpoint(cfg, stored, data_cfg)
    model = model_from_loaded(ckpt, stored, cfg.get("model"), cfg.get("loss"))
    if getattr(model, "calibration", None):  # test recordings are scored with it and without it
        log.info("applying the checkpoint's calibration=%s", model.calibration["method"])
    datamodule = hydra.utils.instantiate(data_cfg)
    if hasattr(model, "classes") and tuple(datamodule.classes) != tuple(model.classes):
        raise ConfigError(
            f"data.classes={list(datamodule.classes)} differ from the checkpoint's {list(model.classes)}; "
            "evaluate on data with the classes it was trained on"
        )
    own_split(datamodule, ckpt, cfg.ckpt_path, data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    outputs.data_files(datamodule)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=instantiate_list(cfg.get("callbacks")),
        logger=instantiate_list(cfg.get("logger")) or False,
    )
    extra = {
        "task_name": cfg.task_name,
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "model_name": stored.get("model_name"),
        "data": data_cfg.get("name"),
        "data_root": str(datamodule.record_root())
        if hasattr(datamodule, "record_root")
        else datamodule.roots(),
        "split": data_cfg.get("split"),
    }
    tested = outputs.test_results(trainer, model, datamodule, extra)
    return {k: v for k, v in tested.items() if isinstance(v, float)}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Entry point."""
    set_up_app()
    _hydra_main()


if __name__ == "__main__":
    main()
