"""Checks on a composed config that fail at start, before any data is read: the data, model and loss
must belong to the same task, and a generative model's window must match the data's. Evaluation
warns when the data shapes signals differently from training."""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: what to choose instead, per task and config group
SUGGESTIONS = {
    "classification": {
        "model": "cnn_lstm (or any of conf/model/ but lstm_vae)",
        "loss": "weighted_ce",
        "data": "synthetic or physionet2017",
    },
    "generation": {
        "model": "lstm_vae",
        "loss": "morph_mse",
        "data": "synthetic_normal, ptbxl, physionet2017_normal or normal_ecg",
    },
}


def task_of(node: Any) -> str | None:
    """The task (``TASK`` attribute) of the class a config node instantiates, if it declares one."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return getattr(get_class(target), "TASK", None) if target else None


def choice(group: str, node: DictConfig) -> str:
    """The name the user chose for ``group`` (``data=ptbxl``), or the node's class when unknown."""
    try:
        name = HydraConfig.get().runtime.choices.get(group)
    except ValueError:  # no Hydra app running (tests composing configs by hand)
        name = None
    return str(name or str(node.get("_target_", "?")).rsplit(".", 1)[-1])


def check_task_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the config groups when data, model and loss do not fit together."""
    model_task = task_of(cfg.model)
    if model_task is None:
        return
    model = choice("model", cfg.model)
    for group in ("loss", "data"):
        node = cfg.get(group)
        task = task_of(node)
        if task is not None and task != model_task:
            raise ValueError(
                f"{group}={choice(group, node)} is for {task} but model={model} is a {model_task} model; "
                f"use {group}={SUGGESTIONS[model_task][group]}, or model={SUGGESTIONS[task]['model']}"
            )
    if model_task == "generation":
        window, seq_len = cfg.data.get("window"), cfg.model.net.get("seq_len")
        if window is not None and seq_len is not None and int(window) != int(seq_len):
            raise ValueError(
                f"data.window={window} does not fit model.net.seq_len={seq_len} "
                f"(data={choice('data', cfg.data)}, model={model}): the VAE reconstructs whole windows; "
                f"set data.window={seq_len} "
                f"or model.net.seq_len={window}"
            )


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
