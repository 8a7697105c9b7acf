"""Check the accelerator's gradients before trusting it to train:
``python -m ecg_lab.check_backend trainer=gpu [model=... data=... experiment=...]``.

Composes what ``python -m ecg_lab.train`` composes (data, model, loss, trainer), takes one training
batch, and compares every parameter's gradient of the loss on ``trainer.accelerator`` in float32 with
the CPU in float64 (:mod:`ecg_lab.app.backend`). Prints one line; fails (exit status 1, run status
failed) when a parameter's gradient differs by more than ``backend_check.tolerance``. The run folder
gets ``backend_check.json`` (every parameter's difference).
"""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

from typing import Any  # noqa: E402

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ecg_lab.app.backend import (  # noqa: E402
    GradientMismatchError,
    compare_gradients,
    first_batch,
    training_device,
)
from ecg_lab.app.checks import check_overrides  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.train import build  # noqa: E402


@task_wrapper
def check_backend(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Compare one batch's gradients on the configured accelerator with the CPU in float64; write
    ``backend_check.json``; return its content (``ok``, ``message``, each parameter's difference)."""
    check_overrides(cfg)
    apply_threads(cfg.get("threads"))
    pl.seed_everything(cfg.seed, workers=True)
    device = training_device(cfg.trainer)  # before any data is read: an absent accelerator fails at once
    datamodule, model = build(cfg)
    settings = cfg.get("backend_check") or {}
    result = compare_gradients(
        model,
        first_batch(datamodule),
        device,
        tolerance=float(settings.get("tolerance", 1e-3)),
        tf32=bool(settings.get("tf32", False)),
    )
    report = {"task_name": cfg.task_name, "model_name": cfg.get("model_name"), **result.to_dict()}
    report["message"] = result.line()
    outputs.json("backend_check.json", report)
    if not result.ok:
        raise GradientMismatchError(report["message"])  # the run fails; one line, exit status 1
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="check_backend")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    print(check_backend(cfg)["message"], flush=True)


def main() -> None:
    """Entry point."""
    set_up_app()
    _hydra_main()


if __name__ == "__main__":
    main()
