"""Generate ECGs from a trained LSTM-VAE: ``python -m ecg_lab.generate ckpt_path=X n=16``.

The model is rebuilt from the config stored in the checkpoint; ``n`` latent vectors (seeded; from
N(0, I), or from the checkpoint's latent mixture with ``model.sampler.kind=gmm``) are decoded into
``generated.npy`` (n, samples), ``generated.csv`` (a ``time_s`` column and one column per ECG) and
``generated.png`` (a grid).
"""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ecg_lab.app.checkpoints import load_checkpoint, model_from_loaded  # noqa: E402
from ecg_lab.app.checks import check_overrides, task_of  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.edge.runtime import write_csv  # noqa: E402
from ecg_lab.errors import ConfigError  # noqa: E402
from ecg_lab.generation.figures import amplitude_unit, plot_signal_grid  # noqa: E402

log = logging.getLogger(__name__)


@task_wrapper
def generate(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Decode ``cfg.n`` latent vectors of the checkpoint's VAE into files in the run folder."""
    check_overrides(cfg)
    if int(cfg.n) < 1:
        raise ConfigError(f"n={cfg.n} must be at least 1; e.g. n=16")
    apply_threads(cfg.get("threads"))
    ckpt, stored = load_checkpoint(cfg.ckpt_path)
    if task_of(stored.model) != "generation":
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds a {stored.model.get('_target_', '?').rsplit('.', 1)[-1]} "
            f"(model={stored.get('model_name')}), not a generative model; train one with experiment=lstm_vae"
        )
    model = model_from_loaded(ckpt, stored)
    model.to(cfg.device)
    signals = model.generate(int(cfg.n), seed=int(cfg.seed))
    out = outputs.dir
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "generated.npy", signals.astype(np.float32))
    write_csv(out / "generated.csv", signals, model.fs)
    plot_signal_grid(
        signals,
        model.fs,
        out / "generated.png",
        f"{len(signals)} generated ECGs (seed {cfg.seed})",
        unit=amplitude_unit(stored.get("data")),
    )
    info = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "n": int(cfg.n),
        "seed": int(cfg.seed),
        "fs": model.fs,
        "samples": int(signals.shape[1]),
    }
    outputs.json("generated.json", info)
    log.info("%d generated ECGs written to %s", len(signals), out)
    return info


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    generate(cfg)


def main() -> None:
    """Entry point."""
    set_up_app()
    _hydra_main()


if __name__ == "__main__":
    main()
