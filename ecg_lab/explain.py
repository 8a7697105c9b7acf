"""Explanations on the ECG: ``python -m ecg_lab.explain ckpt_path=... record=A00005 [data.root=DIR]``,
or ``worst=20`` for the 20 most confidently wrong test recordings of the checkpoint's own split.

The classifier and, unless given, the data config are rebuilt from the checkpoint (as
``python -m ecg_lab.eval`` does); ``data.root=DIR`` reads the records from another folder. Each
recording is read raw (mV, for display) and preprocessed as in training for the model; its
``<record>.png`` in the run folder shows Grad-CAM, integrated gradients and (``readout=attention``) the
attention weights stitched onto it, and its windows' class probabilities
(:mod:`ecg_lab.classification.explain`). ``explanations.json`` lists every recording drawn: its label,
predicted and explained class, probabilities and where each map peaks. ``target=A`` explains class A
instead of each recording's predicted class.
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
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from ecg_lab.app.checkpoints import model_from_loaded  # noqa: E402
from ecg_lab.app.checks import check_overrides, task_of  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR, instantiate_node, to_container  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.classification.aggregator import window_outputs  # noqa: E402
from ecg_lab.classification.explain import (  # noqa: E402
    Explainer,
    class_index,
    plot_explanation,
)
from ecg_lab.classification.metrics import record_probabilities  # noqa: E402
from ecg_lab.classification.predictions import most_confidently_wrong  # noqa: E402
from ecg_lab.data.physionet2017 import iter_reference, read_record  # noqa: E402
from ecg_lab.errors import ConfigError  # noqa: E402
from ecg_lab.eval import check_fits_checkpoint, data_config, load_members, own_split  # noqa: E402

log = logging.getLogger(__name__)

USAGE = "python -m ecg_lab.explain ckpt_path=outputs/.../checkpoints/last.ckpt record=A00005 (or worst=20)"


def check_request(cfg: DictConfig) -> None:
    """ConfigError unless the config names a checkpoint and exactly one of ``record`` and ``worst``."""
    if not cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path is required: {USAGE}")
    record, worst = cfg.get("record"), cfg.get("worst")
    if (record is None) == (worst is None):
        raise ConfigError(
            f"give either record=<id> or worst=<N>, not {'both' if record else 'neither'}: {USAGE}"
        )
    if worst is not None and (isinstance(worst, bool) or not isinstance(worst, int) or worst < 1):
        raise ConfigError(f"worst={worst!r} must be a positive int (how many recordings), e.g. worst=20")


def with_data(cfg: DictConfig, stored: DictConfig) -> DictConfig:
    """``cfg`` whose ``data`` is the checkpoint's data config with the keys given under ``data`` changed
    (``data.root=DIR`` also drops the synthetic generator: the records are DIR's), or, where ``data=...``
    named a whole data config, that one."""
    given = cfg.get("data")
    if given is not None and given.get("_target_") is not None:
        return cfg
    changes = {k: v for k, v in to_container(given or OmegaConf.create({})).items() if v is not None}
    if "root" in changes:
        changes["synthetic"] = None
    out = cfg.copy()
    with open_dict(out):
        out.data = OmegaConf.merge(stored.data, changes)
    return out


def reference_label(record_dir: Path, record_id: str, root: Any) -> str:
    """The label ``REFERENCE.csv`` gives ``record_id``; ConfigError naming ``data.root`` and the record
    when it lists no such record."""
    rows = dict(iter_reference(record_dir)[1])
    if record_id not in rows:
        raise ConfigError(
            f"record={record_id} is not listed in {record_dir / 'REFERENCE.csv'} (data.root={root}); give "
            f"one it lists (e.g. record={next(iter(rows))}) or point data.root at the folder that holds it"
        )
    return rows[record_id]


def worst_records(model: Any, datamodule: Any, n: int) -> list[tuple[str, str]]:
    """``(record, label)`` of the ``n`` test recordings the model gets wrong with the highest probability
    (its recording probabilities as evaluation computes them: the mean of its windows', calibrated)."""
    collate = getattr(getattr(datamodule, "batching", None), "collate", None)
    out = window_outputs(model.net, datamodule.datasets["test"], datamodule.batch_size, collate)
    probs, labels = record_probabilities(
        torch.softmax(torch.from_numpy(out.logits).double(), 1), torch.from_numpy(out.labels),
        torch.from_numpy(out.records),
    )  # fmt: skip
    wrong = most_confidently_wrong(probs.numpy(), labels.numpy(), len(labels), model.calibration)
    chosen = wrong[:n]
    records = np.unique(out.records)[chosen]  # record_probabilities orders recordings by record index
    ids = datamodule.record_ids()
    under = f" (under its calibration={model.calibration['method']})" if model.calibration else ""
    log.info(
        "%d of %d test recordings are wrong%s; explaining %d", len(wrong), len(labels), under, len(chosen)
    )
    return [(str(ids[r]), datamodule.classes[int(labels[i])]) for r, i in zip(records, chosen, strict=True)]


def use_test_split(member: Any, data_cfg: DictConfig, datamodule: Any, outputs: RunOutputs) -> None:
    """Set ``datamodule`` up on the checkpoint's own split (or ``data.split=all``/``data.manifest``)."""
    own_split(datamodule, member.ckpt, member.path, data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    outputs.data_files(datamodule)


@task_wrapper
def explain(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Draw ``<record>.png`` for the recording ``record`` or the ``worst`` test recordings; write
    ``explanations.json``."""
    check_overrides(cfg)
    check_request(cfg)
    apply_threads(cfg.get("threads"))
    settings = instantiate_node(cfg.explain)
    member = load_members(cfg)[0]
    if task_of(member.stored.model) != "classification":
        raise ConfigError(
            f"ckpt_path={member.path} holds a {task_of(member.stored.model)} model; explanations are for "
            "classifiers: give a classification checkpoint"
        )
    run_cfg = with_data(cfg, member.stored)
    data_cfg = data_config(run_cfg, member.stored)
    check_fits_checkpoint(run_cfg, member.stored, data_cfg, member.path)
    model = model_from_loaded(member.ckpt, member.stored)
    datamodule = hydra.utils.instantiate(data_cfg)
    target = class_index(model.classes, cfg.get("target"))
    if cfg.get("record") is not None:
        record_dir = iter_reference(datamodule.record_root())[0]
        record_id = str(cfg.record)
        cases = [(record_id, reference_label(record_dir, record_id, datamodule.root))]
    else:
        use_test_split(member, data_cfg, datamodule, outputs)
        record_dir = iter_reference(datamodule.record_root())[0]
        cases = worst_records(model, datamodule, int(cfg.worst))
    explainer = Explainer.of(model.net, model.classes, datamodule, settings, model.calibration)
    drawn = []
    for record_id, label in cases:
        e = explainer.explain(read_record(record_dir, record_id, label, datamodule.fs, model.classes), target)
        png = f"{record_id}.png"
        if outputs.enabled:
            plot_explanation(e, outputs.dir / png, settings.dpi)
        drawn.append({**e.summary(), "png": png})
        log.info(
            "%s: %s predicted %s; figure %s", record_id, label, e.classes[e.predicted], outputs.dir / png
        )
    outputs.json(
        "explanations.json",
        {
            "task_name": cfg.task_name,
            "ckpt_path": str(Path(member.path).resolve()),
            "model_name": member.stored.get("model_name"),
            "data": data_cfg.get("name"),
            "data_root": str(record_dir),
            "selection": "record" if cfg.get("record") is not None else f"worst={cfg.worst}",
            "target": cfg.get("target"),
            "records": drawn,
        },
    )
    return {"n_records": len(drawn)}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="explain")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    explain(cfg)


def main() -> None:
    """Entry point."""
    set_up_app()
    _hydra_main()


if __name__ == "__main__":
    main()
