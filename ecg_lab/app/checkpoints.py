"""Checkpoints that carry their run: the resolved config and the split manifest ride inside the
``.ckpt`` (key ``ecg_lab``), so a model and its own test split are rebuilt from the file alone."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ecg_lab.data.splits import SplitManifest
from ecg_lab.errors import ConfigError, MissingFileError, first_line


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


#: why torch could not load a file that is not the zip archive ``torch.save`` writes
NOT_A_TORCH_FILE = "not the zip archive torch.save writes: truncated, damaged or another kind of file"


def checkpoint_paths(value: Any) -> list[str]:
    """Config key ``ckpt_path`` as a list of paths: a list (an ensemble) as given, one path as a list of
    one; a string ``[a.ckpt,b.ckpt]`` naming no file (a quoted Hydra value, as ``make pi-export`` passes)
    is split at its commas."""
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    text = str(value)
    if text.startswith("[") and text.endswith("]") and not Path(text).exists():
        return [part.strip() for part in text[1:-1].split(",") if part.strip()]
    return [text]


def checkpoint_file(path: str | Path) -> Path:
    """``path`` (config key ``ckpt_path``) as a file; MissingFileError or ConfigError when it is none."""
    path = Path(path)
    if path.is_dir():
        inside = next(path.glob("checkpoints/*.ckpt"), None) or next(path.glob("*.ckpt"), None)
        example = inside or path / "checkpoints" / "last.ckpt"
        raise ConfigError(
            f"ckpt_path={path} is a directory, not a readable checkpoint; give a .ckpt file, e.g. {example}"
        )
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={path}: no such checkpoint file; check the path")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded on the CPU with ``weights_only``; ConfigError, naming the path,
    for a file that is not a readable checkpoint (corrupt, truncated, some other kind of file)."""
    path = checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError, ...)
        reason = first_line(err) if zipfile.is_zipfile(path) else NOT_A_TORCH_FILE
        raise ConfigError(
            f"ckpt_path={path} is not a readable checkpoint ({reason}); give a .ckpt written by "
            "python -m ecg_lab.train, e.g. outputs/<run>/checkpoints/last.ckpt"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(
            f"ckpt_path={path} is not a readable checkpoint (it holds a {type(ckpt).__name__} without a "
            "state_dict); give a .ckpt written by python -m ecg_lab.train"
        )
    return ckpt


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint and the run config stored in it; one clear error for a missing, unreadable or
    foreign file (see :func:`read_checkpoint`)."""
    ckpt = read_checkpoint(path)
    stored = (ckpt.get("ecg_lab") or {}).get("config")
    if not stored:
        raise ConfigError(
            f"ckpt_path={path} holds no ecg_lab config; it was not written by `python -m ecg_lab.train`, "
            "so its model cannot be rebuilt; give a checkpoint from an ecg_lab run folder"
        )
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
    model.on_load_checkpoint(ckpt)  # what the task keeps beside its weights (a classifier's calibration)
    model.run_config = OmegaConf.to_container(stored)
    model.eval()
    return model
