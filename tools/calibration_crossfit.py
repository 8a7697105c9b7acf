"""Does a calibration help an aggregator out of sample? Judged on validation recordings alone.

    python tools/calibration_crossfit.py AGG_CKPT [AGG_CKPT ...] [--method thresholds] [--draws 50]
        [--baseline] [--cache-dir DIR]

Each ``aggregator.ckpt`` (or, with ``+``-joined paths, an ensemble of them: ``a.ckpt+b.ckpt``) scores
its window model's own validation recordings (as ``ecg_lab.eval`` does). ``--draws`` times, those are
cut into two stratified halves; the calibration (``conf/calibration/<method>.yaml``) is fitted on one
half and the other half is scored with and without it, both ways round. Prints, per checkpoint, the
mean and standard deviation of the held-out gain in official F1 over all those fits: the test split is
never read, so the answer can decide whether a recipe calibrates. ``--baseline`` judges the window
model's mean of window probabilities instead (where the fixed recipe's thresholds were adopted).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ecg_lab.aggregate import aggregator_on_test, check_one_split
from ecg_lab.app.config import CONFIG_DIR
from ecg_lab.classification.calibration import recording_scores
from ecg_lab.edge.runtime import calibrated


def halves(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask picking half of each class's recordings at random."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        mask[idx[: len(idx) // 2]] = True
    return mask


def held_out_gains(probs: np.ndarray, labels: np.ndarray, calibrator, classes, draws: int) -> np.ndarray:
    """Official F1 with the calibration minus without it, on the half it was not fitted on."""
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(draws):
        mask = halves(labels, rng)
        for fit_on in (mask, ~mask):
            held = ~fit_on
            fit = calibrator.fit(probs[fit_on], labels[fit_on], classes)
            after = recording_scores(labels[held], calibrated(probs[held], fit)[1], classes)["official_f1"]
            before = recording_scores(labels[held], probs[held].argmax(1), classes)["official_f1"]
            gains.append(after - before)
    return np.asarray(gains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpts", nargs="+")
    parser.add_argument("--method", default="thresholds", choices=("thresholds", "prior"))
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--baseline", action="store_true", help="the window model's mean of probabilities")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = ["ckpt_path=unused", f"calibration={args.method}"]
    overrides += [f"paths.cache_dir={args.cache_dir}"] if args.cache_dir else []
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("eval", overrides=overrides)
    calibrator = instantiate(cfg.calibration)
    for entry in args.ckpts:
        runs = [aggregator_on_test(cfg, path) for path in entry.split("+")]
        check_one_split(runs)
        val = [run.seqs["val"].mean_probabilities() if args.baseline else run.probs["val"] for run in runs]
        probs = np.mean(val, axis=0)
        labels = runs[0].seqs["val"].labels.numpy()
        gains = held_out_gains(probs, labels, calibrator, runs[0].classes, args.draws)
        print(json.dumps({
            "ckpt": entry, "method": args.method, "baseline": args.baseline, "fits": len(gains),
            "held_out_gain_mean": round(float(gains.mean()), 4),
            "held_out_gain_std": round(float(gains.std()), 4),
            "share_positive": round(float((gains > 0).mean()), 3),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
