"""Learn how a window model's windows add up to a recording:
``python -m ecg_lab.aggregate ckpt_path=<window model checkpoint> [overrides]``.

The window network is rebuilt from its checkpoint and frozen; the data, unless given, from the config
stored in it, on the checkpoint's own split manifest (as ``python -m ecg_lab.eval`` does), so the test
recordings are the ones the window model was tested on. Every train, val and test window is embedded
once (cached, see :mod:`ecg_lab.classification.aggregator`); an aggregator (config node ``aggregator``)
is trained on the training recordings' sequences of embeddings and stopped early on the validation
recordings' official F1 (``fit``); ``members=K`` trains K of them (seeds ``seed``, ``seed + 1000``, ...)
and averages their probabilities. ``test_metrics.json`` holds its recording scores on the test
recordings beside the window model's mean-of-probabilities scores on the same ones (``baseline_*``,
uncalibrated). ``calibration=prior|thresholds`` also scores both under a calibration fitted on the
validation recordings (``calibrated_*``, ``baseline_calibrated_*``). ``aggregator.ckpt`` holds its
weights, this run's config and the window checkpoint's path and sha256
(:func:`~ecg_lab.classification.aggregator.load_aggregator` reloads it).
"""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from ecg_lab.app.checkpoints import load_checkpoint, model_from_loaded  # noqa: E402
from ecg_lab.app.checks import check_overrides, task_of  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR, instantiate_node, to_container  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.hardware import describe  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.classification.aggregator import (  # noqa: E402
    AggregatorEnsemble,
    AttentionAggregator,
    FitResult,
    RecordingSequences,
    aggregator_checkpoint,
    embedded_splits,
    fit_aggregator,
    load_aggregator,
)
from ecg_lab.classification.calibration import Calibrator, build_calibrator, recording_scores  # noqa: E402
from ecg_lab.classification.figures import plot_confusion_matrix  # noqa: E402
from ecg_lab.data.splits import SPLITS  # noqa: E402
from ecg_lab.edge.runtime import calibrated, sha256_file  # noqa: E402
from ecg_lab.errors import ConfigError, MissingFileError  # noqa: E402
from ecg_lab.eval import check_fits_checkpoint, data_config, own_split  # noqa: E402

log = logging.getLogger(__name__)

USAGE = "python -m ecg_lab.aggregate ckpt_path=outputs/.../checkpoints/best-epochNNN.ckpt"
MEMBER_SEED_STEP = 1000  # member i of members=K trains with seed + 1000 i


def window_model(cfg: DictConfig) -> tuple[pl.LightningModule, dict[str, Any], DictConfig]:
    """The window classifier ``ckpt_path`` holds, frozen, with its checkpoint and stored config;
    ConfigError naming ``ckpt_path`` for one whose network has no ``embed``."""
    path = str(cfg.ckpt_path)
    ckpt, stored = load_checkpoint(path)
    task = task_of(stored.model)
    if task != "classification":
        raise ConfigError(
            f"ckpt_path={path} holds a {task} model; the aggregator learns over a window classifier's "
            "embeddings: give a classification checkpoint"
        )
    model = model_from_loaded(ckpt, stored)
    if not callable(getattr(model.net, "embed", None)):
        raise ConfigError(
            f"ckpt_path={path} holds a {type(model.net).__name__} network without embed(); give a "
            "checkpoint of a CRNN window classifier (any of conf/model/ but lstm_vae)"
        )
    model.requires_grad_(False)
    return model, ckpt, stored


def set_up_data(cfg: DictConfig, ckpt: dict[str, Any], stored: DictConfig) -> tuple[Any, DictConfig]:
    """The window model's datamodule on its own split (or ``data.manifest``), prepared and set up."""
    data_cfg = data_config(cfg, stored)
    if data_cfg.get("split") == "all":
        raise ConfigError(
            "data.split=all puts every record in the test set, leaving the aggregator nothing to train "
            "on; drop it (the checkpoint's own split) or give data.manifest=<run folder>/split.csv"
        )
    check_fits_checkpoint(cfg, stored, data_cfg, str(cfg.ckpt_path))
    datamodule = hydra.utils.instantiate(data_cfg)
    own_split(datamodule, ckpt, str(cfg.ckpt_path), data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, data_cfg


def build_aggregator(cfg: DictConfig, in_dim: int, num_classes: int) -> tuple[AttentionAggregator, dict]:
    """The configured aggregator for ``in_dim``-wide embeddings, and the node that rebuilds it."""
    node = OmegaConf.create({**to_container(cfg.aggregator), "in_dim": in_dim, "num_classes": num_classes})
    return instantiate_node(node), to_container(node)


def scored(
    probs: dict[str, np.ndarray],
    seqs: dict[str, RecordingSequences],
    classes: tuple[str, ...],
    calibrator: Calibrator | None,
) -> dict[str, Any]:
    """The test recordings' scores of the argmax of ``probs`` (per split); with a ``calibrator``, also
    under a calibration fitted on the validation recordings (``calibrated_*``, the fit ``calibration``)."""
    test_labels = seqs["test"].labels.numpy()
    scores = recording_scores(test_labels, probs["test"].argmax(1), classes)
    if calibrator is None:
        return scores
    fit = calibrator.fit(probs["val"], seqs["val"].labels.numpy(), classes)
    calibrated_scores = recording_scores(test_labels, calibrated(probs["test"], fit)[1], classes)
    return {**scores, **{f"calibrated_{k}": v for k, v in calibrated_scores.items()}, "calibration": fit}


def scores_on_test(
    aggregator: AttentionAggregator | AggregatorEnsemble,
    seqs: dict[str, RecordingSequences],
    classes: tuple[str, ...],
    calibrator: Calibrator | None,
    batch_size: int,
) -> dict[str, Any]:
    """The aggregator's scores of the test recordings, and the window model's mean of window
    probabilities on the same recordings (``baseline_*``), scored alike (:func:`scored`)."""
    parts = ("val", "test")
    learned = {part: aggregator.probabilities(seqs[part], batch_size) for part in parts}
    means = {part: seqs[part].mean_probabilities() for part in parts}
    baseline = scored(means, seqs, classes, calibrator)
    return {**scored(learned, seqs, classes, calibrator), **{f"baseline_{k}": v for k, v in baseline.items()}}


def fit_fields(fit: FitResult) -> dict[str, Any]:
    """``test_metrics.json``'s record of the aggregator's training."""
    return {
        "best_epoch": fit.best_epoch,
        "epochs": fit.epochs,
        "best_val_official_f1": fit.best_val_official_f1,
    }


def members_of(cfg: DictConfig) -> int:
    """``cfg.members``, checked (before any embedding is computed)."""
    n = cfg.get("members", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"members={n}: give the number of aggregators to train and average (an int >= 1)")
    return n


class FittedMembers(NamedTuple):
    """:func:`fit_members`' result: the aggregator (or the ensemble), the node that rebuilds one member,
    ``test_metrics.json``'s record of the training and each member's epoch history."""

    model: AttentionAggregator | AggregatorEnsemble
    node: dict[str, Any]
    record: dict[str, Any]
    histories: list[Any]


def fit_members(
    cfg: DictConfig, seqs: dict[str, RecordingSequences], classes: tuple[str, ...], settings: Any
) -> FittedMembers:
    """Train ``cfg.members`` aggregators (member 0 on the run's seed, as a single one would be; member i
    reseeded with ``seed + 1000 i``); the model (the aggregator, or their ensemble), its build node and
    ``test_metrics.json``'s record of the training (with several members, one entry per member and the
    ensemble's validation official F1) and each member's epoch history."""
    n = members_of(cfg)
    members, fits, seeds = [], [], [cfg.seed + MEMBER_SEED_STEP * i for i in range(n)]
    for i, seed in enumerate(seeds):
        if i:
            pl.seed_everything(seed, workers=True, verbose=False)
        aggregator, node = build_aggregator(cfg, seqs["train"].embeddings.shape[-1], len(classes))
        fits.append(fit_aggregator(aggregator, seqs["train"], seqs["val"], classes, settings, seed))
        members.append(aggregator)
    histories = [f.history for f in fits]
    if n == 1:
        return FittedMembers(members[0], node, fit_fields(fits[0]), histories)
    ensemble = AggregatorEnsemble(members)
    val = seqs["val"]
    val_preds = ensemble.probabilities(val, settings.batch_size).argmax(1)
    test_labels = seqs["test"].labels.numpy()
    record = {
        "members": n,
        "best_epoch": None,
        "epochs": sum(f.epochs for f in fits),  # every member's epochs
        "best_val_official_f1": recording_scores(val.labels.numpy(), val_preds, classes)["official_f1"],
        "member_fits": [
            {
                "seed": seed,
                **fit_fields(fit),
                "official_f1": recording_scores(
                    test_labels, m.probabilities(seqs["test"], settings.batch_size).argmax(1), classes
                )["official_f1"],
            }
            for seed, fit, m in zip(seeds, fits, members, strict=True)
        ],
    }
    return FittedMembers(ensemble, node, record, histories)


@task_wrapper
def aggregate(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Embed, fit the aggregator, test it beside the mean-of-probabilities baseline; write
    ``test_metrics.json``, ``aggregator.ckpt`` and the test recordings' confusion matrix."""
    check_overrides(cfg)
    if not cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path is required: {USAGE}")
    members_of(cfg)
    t0 = time.perf_counter()
    apply_threads(cfg.get("threads"))
    pl.seed_everything(cfg.seed, workers=True)
    model, ckpt, stored = window_model(cfg)
    settings = instantiate_node(cfg.fit)
    calibrator = build_calibrator(cfg.get("calibration"), model)
    datamodule, data_cfg = set_up_data(cfg, ckpt, stored)
    outputs.data_files(datamodule)
    classes = tuple(model.classes)
    sha256 = sha256_file(cfg.ckpt_path)
    windows = embedded_splits(model.net, datamodule, sha256, cfg.paths.cache_dir)
    seqs = {part: RecordingSequences.from_windows(windows[part]) for part in SPLITS}
    t_embed = time.perf_counter() - t0
    fitted = fit_members(cfg, seqs, classes, settings)
    aggregator = fitted.model
    t_fit = time.perf_counter() - t0 - t_embed
    window_ckpt = {"path": str(Path(cfg.ckpt_path).resolve()), "sha256": sha256}
    metrics = {
        "task_name": cfg.task_name,
        "ckpt_path": window_ckpt["path"],
        "ckpt_sha256": sha256,
        "model_name": stored.get("model_name"),
        "data": data_cfg.get("name"),
        "split": data_cfg.get("split"),
        "manifest": data_cfg.get("manifest"),  # null: the checkpoint's own split
        "seed": cfg.seed,
        "classes": list(classes),
        **{f"n_{part}_records": len(seqs[part]) for part in SPLITS},
        "n_records": len(seqs["test"]),
        "embedding_dim": int(seqs["test"].embeddings.shape[-1]),
        "n_params": sum(p.numel() for p in aggregator.parameters()),
        **fitted.record,
        **scores_on_test(aggregator, seqs, classes, calibrator, settings.batch_size),
        "window_calibration": (model.calibration or {}).get("method"),  # not applied to the baseline
        "embed_time_s": round(t_embed, 2),
        "fit_time_s": round(t_fit, 2),
        "threads": cfg.get("threads"),
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "hardware": describe("cpu"),  # the aggregator trains on the CPU
    }
    histories = fitted.histories
    info = {"config": to_container(cfg), "aggregator": fitted.node, "classes": list(classes),
            "window_checkpoint": window_ckpt, **fitted.record,
            "history": histories[0] if len(histories) == 1 else histories}  # fmt: skip
    if outputs.enabled:
        torch.save(aggregator_checkpoint(aggregator, info), outputs.dir / "aggregator.ckpt")
        plot_confusion_matrix(
            metrics["record_confusion_matrix"], classes, outputs.dir / "confusion_matrix_records.png",
            "test recordings (aggregator)",
        )  # fmt: skip
    outputs.json("test_metrics.json", metrics)
    log.info(
        "aggregator official F1 %.4f vs mean of window probabilities %.4f on %d test recordings",
        metrics["official_f1"],
        metrics["baseline_official_f1"],
        metrics["n_records"],
    )
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


# -- testing finished aggregators (python -m ecg_lab.eval ckpt_path=<run>/aggregator.ckpt) --------------
class AggregatorOnTest(NamedTuple):
    """One ``aggregator.ckpt``'s probabilities of its window model's own validation and test recordings."""

    path: str
    probs: dict[str, np.ndarray]
    seqs: dict[str, RecordingSequences]
    classes: tuple[str, ...]
    datamodule: Any
    seed: int | None  # the aggregate run's
    model_name: str | None  # the window model's
    n_params: int  # the window model's and the aggregator's (all its members')


def aggregator_on_test(cfg: DictConfig, path: str) -> AggregatorOnTest:
    """Reload the aggregator (or aggregator ensemble) at ``path`` and its window model, which must be
    the very file it was trained on (same SHA-256), and score the window model's own validation and
    test recordings (embeddings from the cache under ``cfg.paths.cache_dir``, computed if missing)."""
    aggregator, info = load_aggregator(path)
    window = info["window_checkpoint"]
    run_cfg = cfg.copy()
    with open_dict(run_cfg):
        run_cfg.ckpt_path = window["path"]
    if not Path(window["path"]).is_file():
        raise MissingFileError(
            f"{path} was trained on the window checkpoint {window['path']}, which is not there; put it "
            "back, or rerun python -m ecg_lab.aggregate on the window checkpoint you have"
        )
    if sha256_file(window["path"]) != window["sha256"]:
        raise ConfigError(
            f"{path} was trained on the window checkpoint {window['path']}, which has changed since "
            "(another SHA-256); rerun python -m ecg_lab.aggregate on it"
        )
    model, ckpt, stored = window_model(run_cfg)
    datamodule, _ = set_up_data(run_cfg, ckpt, stored)
    windows = embedded_splits(model.net, datamodule, window["sha256"], cfg.paths.cache_dir)
    seqs = {part: RecordingSequences.from_windows(windows[part]) for part in ("val", "test")}
    batch_size = int(info["config"]["fit"]["batch_size"])
    probs = {part: aggregator.probabilities(seqs[part], batch_size) for part in seqs}
    n_params = sum(p.numel() for net in (model, aggregator) for p in net.parameters())
    classes = tuple(info["classes"])
    seed = info["config"].get("seed")
    return AggregatorOnTest(path, probs, seqs, classes, datamodule, seed, stored.get("model_name"), n_params)


def check_one_split(runs: list[AggregatorOnTest]) -> None:
    """ConfigError unless every run scored the same validation and test recordings with the same classes
    (window models of one split, e.g. the seeds of a recipe)."""
    first = runs[0]
    for run in runs[1:]:
        same = run.classes == first.classes and all(
            np.array_equal(run.seqs[p].records, first.seqs[p].records)
            and torch.equal(run.seqs[p].labels, first.seqs[p].labels)
            for p in first.seqs
        )
        if not same:
            raise ConfigError(
                f"ckpt_path member {run.path} scores other recordings or classes than {first.path}: an "
                "ensemble of aggregators needs window models of one split (e.g. the seeds of a recipe)"
            )


def as_eval_reports(scores: dict[str, Any]) -> dict[str, Any]:
    """:func:`scored`'s result as ``ecg_lab.eval`` reports a calibrated classifier: the scores under the
    calibration under the plain names, the others with ``_uncalibrated`` appended."""
    if "calibration" not in scores:
        return scores
    out = {"calibration": scores["calibration"]}
    for key, value in scores.items():
        if key.startswith("calibrated_"):
            out[key.removeprefix("calibrated_")] = value
        elif key != "calibration":
            out[f"{key}_uncalibrated"] = value
    return out


def evaluate_aggregators(cfg: DictConfig, outputs: RunOutputs, paths: list[str]) -> dict[str, Any]:
    """``ecg_lab.eval`` of ``aggregator.ckpt`` files: each one's test probabilities
    (:func:`aggregator_on_test`), averaged over the list; ``calibration=prior|thresholds`` is fitted on
    the averaged validation probabilities. Writes ``test_metrics.json`` (recording scores, each
    member's official F1) and the confusion matrix; returns its numbers."""
    t0 = time.perf_counter()
    if cfg.get("data") is not None and cfg.data.get("split") == "all":
        raise ConfigError(
            "data.split=all: an aggregator is tested on its window model's own test recordings (the "
            "others trained or stopped it); drop data.split"
        )
    runs = [aggregator_on_test(cfg, path) for path in paths]
    check_one_split(runs)
    first = runs[0]
    outputs.data_files(first.datamodule)
    probs = {part: np.mean([run.probs[part] for run in runs], axis=0) for part in first.probs}
    calibrator = instantiate_node(cfg.calibration) if cfg.get("calibration") else None  # aggregators classify
    scores = as_eval_reports(scored(probs, first.seqs, first.classes, calibrator))
    test_labels = first.seqs["test"].labels.numpy()
    metrics = {
        "task_name": cfg.task_name,
        "ckpt_path": str(Path(paths[0]).resolve()) if len(paths) == 1 else None,
        "ckpt_paths": [str(Path(p).resolve()) for p in paths],
        "ensemble_size": len(paths),
        "aggregators": True,  # each member an ecg_lab.aggregate run (ecg_lab.report names the row after it)
        "model_name": first.model_name,
        "seed": first.seed,
        "classes": list(first.classes),
        "n_records": len(first.seqs["test"]),
        "n_params": sum(run.n_params for run in runs),  # every window model and aggregator
        "member_official_f1": [
            recording_scores(test_labels, run.probs["test"].argmax(1), first.classes)["official_f1"]
            for run in runs
        ],
        **scores,
        "threads": cfg.get("threads"),
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "hardware": describe("cpu"),
    }
    if outputs.enabled:
        plot_confusion_matrix(
            metrics["record_confusion_matrix"], first.classes, outputs.dir / "confusion_matrix_records.png",
            f"test recordings (ensemble of {len(paths)} aggregator runs)",
        )  # fmt: skip
    outputs.json("test_metrics.json", metrics)
    log.info(
        "%d aggregator run(s): official F1 %.4f on %d test recordings (members %s)",
        len(paths), metrics["official_f1"], metrics["n_records"], metrics["member_official_f1"],
    )  # fmt: skip
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="aggregate")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    return aggregate(cfg).get("best_val_official_f1")


def main() -> float | None:
    """Entry point (returns the aggregator's validation official F1, what a sweeper may optimise)."""
    set_up_app()
    return _hydra_main()


if __name__ == "__main__":
    main()
