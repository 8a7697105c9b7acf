"""Export a checkpoint for an edge device: ``python -m ecg_lab.export ckpt_path=X`` (or
``make pi-export CKPT=X``).

Writes ``<name>_weights.pth`` (the bare network's ``state_dict``), ``<name>_config.json`` (what
:mod:`ecg_lab.edge` needs to rebuild and feed it: architecture and hyperparameters, task, classes,
sampling rate, window, preprocessing) and a README into the export folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ecg_lab.edge import ARCHITECTURES, FORMAT
from ecg_lab.eval import model_from_checkpoint
from ecg_lab.reports import write_json
from ecg_lab.runtime import CONFIG_DIR, task_wrapper

log = logging.getLogger(__name__)

README = """# {name}: an ecg_lab export

- `{weights}`: the network's state dict (`torch.save(net.state_dict())`), {n_params:,} parameters
- `{config}`: architecture `{architecture}` and its hyperparameters, task `{task}`, sampling rate
  {fs:g} Hz, window {window} samples{class_list}

On the device (CPU torch and NumPy; SciPy to classify recordings):

    python -m ecg_lab.edge {command} --export .
"""


def edge_config(model: Any, stored: DictConfig, name: str, weights: str) -> dict[str, Any]:
    """The JSON an edge device rebuilds the network from."""
    net_cfg = OmegaConf.to_container(stored.model.net, resolve=True)
    architecture = str(net_cfg.pop("_target_")).rsplit(".", 1)[-1]  # type: ignore[union-attr]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"model.net {architecture} cannot be exported; known: {sorted(ARCHITECTURES)}")
    data = OmegaConf.to_container(stored.data, resolve=True)
    config: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "architecture": architecture,
        "hyperparameters": net_cfg,
        "weights": weights,
        "task": model.TASK,
        "fs": float(data["fs"]),  # type: ignore[index]
        "n_params": model.n_params,
    }
    if model.TASK == "classification":
        preprocess = {k: v for k, v in data["preprocess"].items() if k != "_target_"}  # type: ignore[index]
        config |= {"classes": list(model.classes), "window": preprocess["window"], "preprocess": preprocess}
    else:
        config |= {"window": int(data["window"]), "input": data["input"]}  # type: ignore[index]
    return config


@task_wrapper
def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the export folder; returns its config."""
    model, stored = model_from_checkpoint(cfg.ckpt_path)
    name = cfg.get("name") or stored.get("model_name") or type(model.net).__name__.lower()
    out = Path(cfg.get("out_dir") or Path(cfg.paths.output_dir) / "export")
    out.mkdir(parents=True, exist_ok=True)
    weights = f"{name}_weights.pth"
    config = edge_config(model, stored, name, weights)
    torch.save(model.net.state_dict(), out / weights)
    write_json(out / f"{name}_config.json", config)
    command = (
        "generate --n 10 --out synth.csv"
        if config["task"] == "generation"
        else "classify --record A00001.mat"
    )
    class_list = f", classes {config['classes']}" if "classes" in config else ""
    (out / "README.md").write_text(
        README.format(config=f"{name}_config.json", command=command, class_list=class_list, **config)
    )
    log.info("export of %s written to %s", cfg.ckpt_path, out)
    return config


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    export(cfg)


if __name__ == "__main__":
    main()
