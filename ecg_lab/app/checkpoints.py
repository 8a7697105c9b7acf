"""Checkpoints that carry their run: the resolved config and the split manifest ride inside the
``.ckpt`` (key ``ecg_lab``), so a model and its own test split are rebuilt from the file alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ecg_lab.data.splits import SplitManifest


class CarriesRun:
    """Mixin for an ecg_lab LightningModule: its checkpoints hold the run config (``run_config``, set by
    the entry point), the parameter count (``n_params``), the datamodule's split manifest and
    whatever ``checkpoint_info()`` adds."""

    run_config: dict[str, Any] | None = None
    n_params: int = 0

    def checkpoint_info(self) -> dict[str, Any]:
        """Task-specific plain values stored beside the config (e.g. the class names)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = getattr(self, "_trainer", None)
        manifest = getattr(getattr(trainer, "datamodule", None), "manifest", None)
        checkpoint["ecg_lab"] = {
            "config": self.run_config,
            "n_params": self.n_params,
            "split": manifest.to_dict() if manifest is not None else None,
            **self.checkpoint_info(),
        }


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


def stored_manifest(ckpt: dict[str, Any]) -> SplitManifest | None:
    """The split manifest a checkpoint was trained and tested with (None for checkpoints before 0.2)."""
    split = (ckpt.get("ecg_lab") or {}).get("split")
    return SplitManifest.from_dict(split) if split else None


def model_from_checkpoint(
    path: str | Path, model_cfg: DictConfig | None = None, loss_cfg: DictConfig | None = None
) -> tuple[pl.LightningModule, DictConfig]:
    """Rebuild the LightningModule from the checkpoint's own config and load its weights."""
    ckpt, stored = load_checkpoint(path)
    return model_from_loaded(ckpt, stored, model_cfg, loss_cfg), stored


def model_from_loaded(
    ckpt: dict[str, Any],
    stored: DictConfig,
    model_cfg: DictConfig | None = None,
    loss_cfg: DictConfig | None = None,
) -> pl.LightningModule:
    """:func:`model_from_checkpoint` on a checkpoint already loaded with :func:`load_checkpoint`."""
    model = hydra.utils.instantiate(
        model_cfg or stored.model, loss=hydra.utils.instantiate(loss_cfg or stored.loss)
    )
    model.load_state_dict(ckpt["state_dict"])
    model.run_config = OmegaConf.to_container(stored)
    model.eval()
    return model
