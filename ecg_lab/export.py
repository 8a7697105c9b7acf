"""Export a checkpoint for an edge device: ``python -m ecg_lab.export ckpt_path=X [out_dir=DIR]
[overwrite=true] [threads=N]`` (or ``make pi-export CKPT=X``); ``ckpt_path=[a.ckpt,b.ckpt]`` (or
``make pi-export CKPT='[a.ckpt,b.ckpt]'``) exports an ensemble into one folder, its members checked as
``ecg_lab.eval`` checks an ensemble's. What the folder holds and how it is written:
:mod:`ecg_lab.edge.export`.
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

from ecg_lab.app.checkpoints import checkpoint_paths, load_checkpoint, model_from_loaded  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.run_folders import export_dir  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.classification.ensemble import Member, check_members_agree  # noqa: E402
from ecg_lab.edge.export import export_ensemble, export_model  # noqa: E402
from ecg_lab.errors import ConfigError  # noqa: E402

log = logging.getLogger(__name__)


def load_members(value: Any) -> list[Member]:
    """The checkpoints ``ckpt_path`` names, loaded; several (an ensemble) must agree on classes and
    signal settings (:func:`~ecg_lab.classification.ensemble.check_members_agree`; not on test records:
    an export tests nothing)."""
    members = [Member(path, *load_checkpoint(path)) for path in checkpoint_paths(value)]
    if len(members) > 1:
        check_members_agree(members, None)
    return members


def refuse_unsupported(ckpt_path: str, model: Any, stored: Any) -> None:
    """ConfigError for a checkpoint the edge runtime would run differently from its training: a network
    taking features beside the signal, or one trained on whole recordings (the runtime feeds 5-s windows)."""
    if getattr(model.net, "extra_features", 0):
        raise ConfigError(
            f"ckpt_path={ckpt_path} was trained with features=rr (RR-interval features beside the signal), "
            "which the edge runtime does not compute; export a checkpoint trained with features=none"
        )
    if (stored.get("data") or {}).get("recordings"):
        raise ConfigError(
            f"ckpt_path={ckpt_path} was trained on whole recordings (data.recordings is set), while the edge "
            "runtime scores fixed windows; export a checkpoint trained on a window data config"
        )


@task_wrapper
def export(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Write the export folder of ``cfg.ckpt_path`` (one checkpoint, or an ensemble's); returns its
    config."""
    apply_threads(cfg.get("threads"))
    members = load_members(cfg.ckpt_path)
    models = [model_from_loaded(m.ckpt, m.stored) for m in members]
    for member, model in zip(members, models, strict=True):
        refuse_unsupported(member.path, model, member.stored)
    first = members[0]
    name = cfg.get("name") or first.stored.get("model_name") or type(models[0].net).__name__.lower()
    out = Path(cfg.get("out_dir") or export_dir(cfg.ckpt_path, outputs.dir))
    overwrite = bool(cfg.get("overwrite"))
    if len(members) == 1:
        config = export_model(models[0], first.stored, out, name, first.path, overwrite)
    else:
        stored = [m.stored for m in members]
        config = export_ensemble(models, stored, out, name, [m.path for m in members], overwrite)
    log.info("export of %s written to %s", ", ".join(m.path for m in members), out)
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
