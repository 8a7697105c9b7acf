"""Evaluate a checkpoint: ``python -m ecg_lab.eval ckpt_path=... [data=... data.root=... data.split=all]``.

The network, the loss and, unless given, the data are rebuilt from the config stored inside the
checkpoint. Its own test split is the split manifest stored beside it: the records it names are read
back (a missing or unreadable one is an error), never split again. ``data.split=all`` tests every
record of a dataset instead. A calibration the checkpoint holds (fitted by training, see
:mod:`ecg_lab.classification.calibration`) is applied to the test recordings, which are scored with
and without it. ``calibration=prior|thresholds`` fits one on the validation recordings of the
checkpoint's own split instead (the checkpoint stays as it is), also for an ensemble.

Single model keys change the stored model rather than replace it, e.g.
``+model.fidelity.feature_ckpt=clf.ckpt`` scores a generator's Fréchet distance on that classifier's features.

``ckpt_path=[a.ckpt,b.ckpt]`` tests an ensemble: each member rebuilt from its own config, their window
probabilities averaged (:mod:`ecg_lab.classification.ensemble`, which says what members must share).
``ckpt_path`` may also name the ``aggregator.ckpt`` of ``ecg_lab.aggregate`` runs, one or a list of
them over window models of one split: their recording probabilities averaged
(:func:`ecg_lab.aggregate.evaluate_aggregators`).
"""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402
from omegaconf.errors import ConfigKeyError  # noqa: E402

from ecg_lab.app.checkpoints import (  # noqa: E402
    checkpoint_paths,
    load_checkpoint,
    model_from_loaded,
    stored_manifest,
)
from ecg_lab.app.checks import (  # noqa: E402
    check_model_fits_data,
    check_overrides,
    task_of,
    warn_if_signals_differ,
)
from ecg_lab.app.config import CONFIG_DIR, instantiate_list  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.figures import run_title  # noqa: E402
from ecg_lab.app.html_report import report_settings  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.classification.calibration import build_calibrator, fit_on_validation  # noqa: E402
from ecg_lab.classification.ensemble import Member, check_members_agree, ensemble_classifier  # noqa: E402
from ecg_lab.data.splits import SplitManifest  # noqa: E402
from ecg_lab.errors import ConfigError  # noqa: E402

log = logging.getLogger(__name__)


def own_tests(data_cfg: DictConfig) -> bool:
    """Whether the test split is the checkpoint's own (neither ``data.split=all`` nor ``data.manifest``)."""
    return data_cfg.get("split") != "all" and data_cfg.get("manifest") is None


def required_manifest(ckpt: dict[str, Any], ckpt_path: str) -> SplitManifest:
    """The checkpoint's split manifest; ConfigError naming ``ckpt_path`` when it stores none."""
    manifest = stored_manifest(ckpt)
    if manifest is None:
        raise ConfigError(
            f"ckpt_path={ckpt_path} stores no split manifest (it predates ecg_lab 0.2), so its test split "
            "cannot be read back; pass data.manifest=<its run folder>/split.csv, or data.split=all to "
            "test every record"
        )
    return manifest


def own_split(datamodule: Any, ckpt: dict[str, Any], ckpt_path: str, data_cfg: DictConfig) -> None:
    """Give ``datamodule`` the checkpoint's split manifest, unless the data config sets its own
    (``data.manifest``) or tests every record (``data.split=all``)."""
    if own_tests(data_cfg):
        datamodule.use_manifest(required_manifest(ckpt, ckpt_path))


def data_config(cfg: DictConfig, stored: DictConfig) -> DictConfig:
    """The data config to test on (the one given, else the checkpoint's), with this run's cache."""
    data_cfg = (cfg.data if cfg.get("data") is not None else stored.data).copy()
    with open_dict(data_cfg):
        data_cfg.cache_dir = cfg.paths.cache_dir
        data_cfg.pop("run_dir", None)  # checkpoints before 0.2: the run writer owns the run folder now
        if data_cfg.get("features") is None and stored.data.get("features") is not None:
            data_cfg.features = stored.data.features  # the network's per-recording inputs (features=rr)
    return data_cfg


def check_fits_checkpoint(
    cfg: DictConfig, stored: DictConfig, data_cfg: DictConfig, ckpt_path: str | None = None
) -> None:
    """ConfigError when the data (or a given model or loss) is for another task than the checkpoint's
    model, or its window is too short for the network; warnings for signal settings that differ."""
    run_cfg = OmegaConf.create(
        {
            "model": cfg.get("model") or stored.model,
            "loss": cfg.get("loss") or stored.loss,
            "data": data_cfg,
        }
    )
    check_model_fits_data(run_cfg, ckpt_path=ckpt_path or str(cfg.ckpt_path))
    if cfg.get("data") is not None:
        warn_if_signals_differ(cfg.data, stored.data)


def load_members(cfg: DictConfig) -> list[Member]:
    """Every checkpoint ``ckpt_path`` names (one, or an ensemble's members), loaded."""
    return [Member(path, *load_checkpoint(path)) for path in checkpoint_paths(cfg.ckpt_path)]


def with_keys_on_members(members: list[Member], model_keys: DictConfig | None) -> list[Member]:
    """``members`` with ``model_keys`` (:func:`pop_model_keys`) set on each one's stored model."""
    if model_keys is None:
        return members
    return [Member(m.path, m.ckpt, with_model_keys(m.stored, model_keys, m.path)) for m in members]


def aggregator_members(members: list[Member], model_keys: DictConfig | None) -> bool:
    """Whether ``ckpt_path`` names ``aggregator.ckpt`` files of ``ecg_lab.aggregate`` runs (tested by
    :func:`ecg_lab.aggregate.evaluate_aggregators`); ConfigError for a list that mixes them with window
    checkpoints, or for model keys (an aggregator's stored model is its window checkpoint)."""
    kinds = ["aggregator" in (m.ckpt.get("ecg_lab") or {}) for m in members]
    if not any(kinds):
        return False
    if not all(kinds):
        raise ConfigError(
            "ckpt_path mixes aggregator.ckpt files with window checkpoints; list one kind: the windows' "
            "checkpoints (their probabilities averaged) or the aggregate runs' aggregator.ckpt files"
        )
    if model_keys is not None:
        raise ConfigError(
            "+model.* keys change a checkpoint's stored model; an aggregator.ckpt stores none (its window "
            "model is the checkpoint it names): drop them"
        )
    return True


def pop_model_keys(cfg: DictConfig) -> DictConfig | None:
    """Single model keys given on the command line (``+model.fidelity.feature_ckpt=...``: a ``model``
    node without ``_target_``), taken out of ``cfg``; None when ``model`` is absent or a whole config."""
    keys = cfg.get("model")
    if keys is None or "_target_" in keys:
        return None
    with open_dict(cfg):
        cfg.model = None
    return keys


def with_model_keys(stored: DictConfig, keys: DictConfig, ckpt_path: str) -> DictConfig:
    """``stored`` with ``keys`` set on its model; ConfigError naming a key its model has not."""
    model = stored.model.copy()
    OmegaConf.set_struct(model, True)
    try:
        model = OmegaConf.merge(model, keys)
    except ConfigKeyError as error:
        key = error.full_key if error.full_key.startswith("model.") else f"model.{error.full_key}"
        raise ConfigError(
            f"+{key}: the model stored in {ckpt_path} has no such key; set one of its model keys (its "
            "run folder's .hydra/config.yaml lists them), or give a whole model (model=NAME)"
        ) from None
    updated = stored.copy()
    with open_dict(updated):
        updated.model = model
    return updated


def check_ensemble(members: list[Member], data_cfg: DictConfig) -> None:
    """ConfigError unless the members are classifiers that agree (see :func:`check_members_agree`)."""
    for member in members:
        if task_of(member.stored.model) != "classification":
            raise ConfigError(
                f"ckpt_path member {member.path} holds a {task_of(member.stored.model)} model; an "
                "ensemble averages classifiers' probabilities: list classification checkpoints only"
            )
    manifests = [required_manifest(m.ckpt, m.path) for m in members] if own_tests(data_cfg) else None
    check_members_agree(members, manifests)


def model_to_test(cfg: DictConfig, members: list[Member]) -> pl.LightningModule:
    """The model to test: the one checkpoint's, or the ensemble of the members (uncalibrated)."""
    models = [model_from_loaded(m.ckpt, m.stored, cfg.get("model"), cfg.get("loss")) for m in members]
    if len(models) > 1:
        log.info("testing an ensemble of %d checkpoints (mean of their window probabilities)", len(models))
        return ensemble_classifier(models, [m.path for m in members])
    if getattr(models[0], "calibration", None):  # test recordings are scored with it and without it
        log.info("applying the checkpoint's calibration=%s", models[0].calibration["method"])
    return models[0]


def checkpoint_fields(members: list[Member]) -> dict[str, Any]:
    """``test_metrics.json``'s record of what was tested: the checkpoint (null for an ensemble), every
    member, their number and model name(s)."""
    paths = [str(Path(m.path).resolve()) for m in members]
    names = dict.fromkeys(str(m.stored.get("model_name")) for m in members)
    return {
        "ckpt_path": paths[0] if len(paths) == 1 else None,
        "ckpt_paths": paths,
        "ensemble_size": len(paths),
        "model_name": members[0].stored.get("model_name") if len(names) == 1 else "+".join(names),
    }


@task_wrapper
def evaluate(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Test the checkpoint on the configured data and write ``test_metrics.json`` and plots."""
    model_keys = pop_model_keys(cfg)
    check_overrides(cfg, ensemble=True)
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path is required: python -m ecg_lab.eval ckpt_path=outputs/.../checkpoints/last.ckpt"
        )
    apply_threads(cfg.get("threads"))
    report = report_settings(cfg.get("report"))
    members = load_members(cfg)
    if aggregator_members(members, model_keys):
        from ecg_lab.aggregate import evaluate_aggregators  # not at the top: ecg_lab.aggregate imports this

        return evaluate_aggregators(cfg, outputs, [m.path for m in members])
    members = with_keys_on_members(members, model_keys)
    first = members[0]
    data_cfg = data_config(cfg, first.stored)
    if len(members) > 1:
        check_ensemble(members, data_cfg)
    for member in members:
        check_fits_checkpoint(cfg, member.stored, data_cfg, member.path)
    model = model_to_test(cfg, members)
    datamodule = hydra.utils.instantiate(data_cfg)
    if hasattr(model, "classes") and tuple(datamodule.classes) != tuple(model.classes):
        raise ConfigError(
            f"data.classes={list(datamodule.classes)} differ from the checkpoint's {list(model.classes)}; "
            "evaluate on data with the classes it was trained on"
        )
    own_split(datamodule, first.ckpt, first.path, data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    outputs.data_files(datamodule)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=instantiate_list(cfg.get("callbacks")),
        logger=instantiate_list(cfg.get("logger")) or False,
    )
    extra = {
        "task_name": cfg.task_name,
        **checkpoint_fields(members),
        "data": data_cfg.get("name"),
        "data_root": str(datamodule.record_root())
        if hasattr(datamodule, "record_root")
        else datamodule.roots(),
        "split": data_cfg.get("split"),
    }
    model.figure_title = run_title(extra["model_name"], data_cfg, extra["ckpt_paths"])
    calibrate(cfg, trainer, model, datamodule)
    tested = outputs.test_results(trainer, model, datamodule, extra, report=report)
    return {k: v for k, v in tested.items() if isinstance(v, float)}


def calibrate(cfg: DictConfig, trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any) -> None:
    """``calibration=prior|thresholds``: fit it on the validation recordings of the checkpoint's own split
    (an ensemble's too) and test under it, in place of any calibration the checkpoint holds; the
    checkpoint is left as it is."""
    calibrator = build_calibrator(cfg.get("calibration"), model)
    if calibrator is None:
        return
    if not len(datamodule.datasets.get("val", ())):
        raise ConfigError(
            f"calibration={calibrator.method} is fitted on validation recordings, and this data has none "
            f"(data.split={cfg.data.get('split') if cfg.get('data') else '?'}); evaluate on the "
            "checkpoint's own split, or use calibration=none"
        )
    if getattr(model, "calibration", None):
        log.info("calibration=%s replaces the checkpoint's", calibrator.method)
    model.calibration = fit_on_validation(trainer, model, datamodule, calibrator)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Entry point."""
    set_up_app()
    _hydra_main()


if __name__ == "__main__":
    main()
