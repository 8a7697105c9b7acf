"""Generate ECGs from a trained LSTM-VAE: ``python -m ecg_lab.generate ckpt_path=X n=16``.

The model is rebuilt from the config stored in the checkpoint; ``n`` latent vectors z ~ N(0, I)
(seeded) are decoded into ``generated.npy`` (n, samples), ``generated.csv`` (a ``time_s`` column and
one column per ECG) and ``generated.png`` (a grid).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from ecg_lab.eval import model_from_checkpoint
from ecg_lab.plots import plot_signal_grid
from ecg_lab.reports import write_json
from ecg_lab.runtime import CONFIG_DIR, task_wrapper

log = logging.getLogger(__name__)


def write_signals_csv(path: Path, signals: np.ndarray, fs: float) -> Path:
    """One row per time step: ``time_s, ecg_0, ..., ecg_{n-1}``."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", *(f"ecg_{i}" for i in range(len(signals)))])
        for t, row in enumerate(signals.T):
            w.writerow([f"{t / fs:.4f}", *(f"{v:.6g}" for v in row)])
    return path


@task_wrapper
def generate(cfg: DictConfig) -> dict[str, Any]:
    """Decode ``cfg.n`` latent vectors of the checkpoint's VAE into files in the run folder."""
    if int(cfg.n) < 1:
        raise ValueError(f"n={cfg.n} must be at least 1")
    model, stored = model_from_checkpoint(cfg.ckpt_path)
    if not hasattr(model, "generate"):
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__} "
            f"(model={stored.get('model_name')}), not a generative model; train one with experiment=lstm_vae"
        )
    model.to(cfg.device)
    signals = model.generate(int(cfg.n), seed=int(cfg.seed))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "generated.npy", signals.astype(np.float32))
    write_signals_csv(out / "generated.csv", signals, model.fs)
    plot_signal_grid(
        signals, model.fs, out / "generated.png", f"{len(signals)} generated ECGs (seed {cfg.seed})"
    )
    info = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "n": int(cfg.n),
        "seed": int(cfg.seed),
        "fs": model.fs,
        "samples": int(signals.shape[1]),
    }
    write_json(out / "generated.json", info)
    log.info("%d generated ECGs written to %s", len(signals), out)
    return info


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    generate(cfg)


if __name__ == "__main__":
    main()
