"""Export a checkpoint for an edge device: ``python -m ecg_lab.export ckpt_path=X [out_dir=DIR]
[overwrite=true] [threads=N]`` (or ``make pi-export CKPT=X``). What the folder holds and how it is
written: :mod:`ecg_lab.edge.export`.
"""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ecg_lab.app.checkpoints import checkpoint_paths, model_from_checkpoint  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.edge.export import export_model  # noqa: E402
from ecg_lab.errors import ConfigError  # noqa: E402

log = logging.getLogger(__name__)


def single_checkpoint(value: Any) -> str:
    """The one checkpoint ``ckpt_path`` names; ConfigError for a list of several (an ensemble)."""
    paths = checkpoint_paths(value)
    if len(paths) > 1:
        raise ConfigError(
            f"ckpt_path lists {len(paths)} checkpoints (an ensemble: {', '.join(paths)}); ensembles are not "
            f"exportable yet: export one checkpoint, e.g. ckpt_path={paths[0]}"
        )
    return paths[0]


@task_wrapper
def export(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Write the export folder of ``cfg.ckpt_path``; returns its config."""
    apply_threads(cfg.get("threads"))
    ckpt_path = single_checkpoint(cfg.ckpt_path)
    model, stored = model_from_checkpoint(ckpt_path)
    name = cfg.get("name") or stored.get("model_name") or type(model.net).__name__.lower()
    out = Path(cfg.get("out_dir") or outputs.dir / "export")
    config = export_model(
        model, stored, out, name, source_checkpoint=ckpt_path, overwrite=bool(cfg.get("overwrite"))
    )
    log.info("export of %s written to %s", ckpt_path, out)
    return config


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    export(cfg)


def main() -> None:
    """Entry point."""
    set_up_app()
    _hydra_main()


if __name__ == "__main__":
    main()
