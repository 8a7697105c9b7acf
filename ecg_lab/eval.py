"""Evaluate a checkpoint: ``python -m ecg_lab.eval ckpt_path=... [data=... data.root=... data.split=all]``.

The network, the loss and, unless given, the data are rebuilt from the config stored inside the
checkpoint; nothing else from the training run is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ecg_lab.runtime import CONFIG_DIR, instantiate_list, run_test, task_wrapper

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint and the run config stored in it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    stored = (ckpt.get("ecg_lab") or {}).get("config")
    if not stored:
        raise ValueError(f"{path} holds no ecg_lab config; it was not written by `python -m ecg_lab.train`")
    return ckpt, OmegaConf.create(stored)


def model_from_checkpoint(
    path: str | Path, model_cfg: DictConfig | None = None, loss_cfg: DictConfig | None = None
) -> tuple[pl.LightningModule, DictConfig]:
    """Rebuild the LightningModule from the checkpoint's own config and load its weights."""
    ckpt, stored = load_checkpoint(path)
    model = hydra.utils.instantiate(
        model_cfg or stored.model, loss=hydra.utils.instantiate(loss_cfg or stored.loss)
    )
    model.load_state_dict(ckpt["state_dict"])
    model.run_config = OmegaConf.to_container(stored)
    model.eval()
    return model, stored


#: data keys that shape what the model sees; evaluating with other values than in training is suspect
SIGNAL_KEYS = ("preprocess", "fs", "window", "stride", "input", "analytic", "cleaning")


def warn_if_signals_differ(data_cfg: DictConfig, stored: DictConfig) -> None:
    """Warn for each signal-shaping data key that differs from the one the checkpoint was trained with."""
    given_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    trained_cfg = OmegaConf.to_container(stored)
    for key in SIGNAL_KEYS:
        given, trained = given_cfg.get(key), trained_cfg.get(key)  # type: ignore[union-attr]
        if given != trained:
            log.warning(
                "data.%s differs from the one the checkpoint was trained with: %s vs %s", key, given, trained
            )


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint on the configured data and write ``test_metrics.json`` and plots."""
    if not cfg.get("ckpt_path"):
        raise ValueError(
            "ckpt_path is required: python -m ecg_lab.eval ckpt_path=outputs/.../checkpoints/last.ckpt"
        )
    output_dir = Path(cfg.paths.output_dir)
    model, stored = model_from_checkpoint(cfg.ckpt_path, cfg.get("model"), cfg.get("loss"))
    data_cfg = cfg.data if cfg.get("data") is not None else stored.data
    if cfg.get("data") is not None:
        warn_if_signals_differ(cfg.data, stored.data)
    data_cfg = data_cfg.copy()
    with open_dict(data_cfg):
        data_cfg.run_dir = str(output_dir)
        data_cfg.cache_dir = cfg.paths.cache_dir
    datamodule = hydra.utils.instantiate(data_cfg)
    if hasattr(model, "classes") and tuple(datamodule.classes) != tuple(model.classes):
        raise ValueError(
            f"data.classes {list(datamodule.classes)} differ from the checkpoint's {list(model.classes)}"
        )
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
    run_test(trainer, model, datamodule, output_dir, extra)
    return {k: v for k, v in model.test_results.items() if isinstance(v, float)}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
