"""Ensembles of learned aggregators (README, issue 13 section 4), measured on the test recordings.

    python tools/aggregator_ensemble.py CKPT [CKPT ...] [--members 5] [--seed 42] [--aggregator bigru]

For each window checkpoint (``python -m ecg_lab.train``; its own split, as ``python -m ecg_lab.aggregate``
uses it), fits ``members`` aggregators with seeds ``seed + 1000 i`` on the cached embeddings and prints
each member's official F1, the running mean of their probabilities' official F1 and its F1 of O. With
several checkpoints (window models of one split, e.g. the seeds of a recipe), it also prints the
ensemble of every member of every checkpoint. Nothing is written.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from ecg_lab import aggregate
from ecg_lab.app.config import CONFIG_DIR, instantiate_node
from ecg_lab.classification.aggregator import RecordingSequences, embedded_splits, fit_aggregator
from ecg_lab.classification.calibration import recording_scores
from ecg_lab.data.splits import SPLITS
from ecg_lab.edge.runtime import sha256_file


def scores(labels: np.ndarray, probs: list[np.ndarray], classes: tuple[str, ...]) -> dict[str, float]:
    """Official F1 and F1 of O of the mean of ``probs``."""
    s = recording_scores(labels, np.mean(probs, axis=0).argmax(1), classes)
    return {"official_f1": round(float(s["official_f1"]), 4), "F1_O": round(float(s["F1_O"]), 4)}


Members = tuple[np.ndarray, np.ndarray, list[np.ndarray], tuple[str, ...]]


def member_probabilities(ckpt_path: str, args: argparse.Namespace) -> Members:
    """Test labels, record indices, each member's test probabilities and the classes of one window
    checkpoint."""
    overrides = [f"aggregator={args.aggregator}", f"seed={args.seed}", f"ckpt_path={ckpt_path}"]
    if args.cache_dir:
        overrides.append(f"paths.cache_dir={args.cache_dir}")
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("aggregate", overrides=overrides)
    model, ckpt, stored = aggregate.window_model(cfg)
    datamodule, _ = aggregate.set_up_data(cfg, ckpt, stored)
    classes = tuple(model.classes)
    windows = embedded_splits(model.net, datamodule, sha256_file(ckpt_path), cfg.paths.cache_dir)
    seqs = {part: RecordingSequences.from_windows(windows[part]) for part in SPLITS}
    settings = instantiate_node(cfg.fit)
    labels, probs = seqs["test"].labels.numpy(), []
    for i in range(args.members):
        seed = args.seed + 1000 * i
        pl.seed_everything(seed)
        agg, _ = aggregate.build_aggregator(cfg, seqs["train"].embeddings.shape[-1], len(classes))
        fit_aggregator(agg, seqs["train"], seqs["val"], classes, settings, seed)
        probs.append(agg.probabilities(seqs["test"], settings.batch_size))
        row = {"ckpt": ckpt_path, "member": i, "seed": seed, "single": scores(labels, probs[-1:], classes)}
        print(json.dumps({**row, "ensemble_so_far": scores(labels, probs, classes)}), flush=True)
    return labels, seqs["test"].records, probs, classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpts", nargs="+")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--aggregator", default="bigru")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    everything, first = [], None
    for path in args.ckpts:
        labels, records, probs, classes = member_probabilities(path, args)
        if first is not None and not np.array_equal(first, records):
            raise SystemExit(f"{path} was tested on other recordings than {args.ckpts[0]}: not one split")
        first = records
        everything += probs
    if len(args.ckpts) > 1:
        print(json.dumps({"all_checkpoints": len(args.ckpts), "members": len(everything),
                          "ensemble": scores(labels, everything, classes)}))  # fmt: skip


if __name__ == "__main__":
    main()
