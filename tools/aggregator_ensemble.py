"""The ensemble of several ``ecg_lab.aggregate`` runs (README, issue 13 section 4): each run's window
model and aggregator (or aggregator ensemble, ``members=K``), their test probabilities averaged.

    python tools/aggregator_ensemble.py AGG_RUN [AGG_RUN ...] [--cache-dir DIR]

The runs must score the same test recordings (window models of one split, e.g. the seeds of a
recipe). Each run's window embeddings come from the shared cache (``python -m ecg_lab.aggregate``
computed them); prints each run's test official F1 and F1 of O, then the ensemble's. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from ecg_lab import aggregate
from ecg_lab.app.config import CONFIG_DIR
from ecg_lab.classification.aggregator import RecordingSequences, embedded_splits, load_aggregator
from ecg_lab.classification.calibration import recording_scores


def scores(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    """Official F1 and F1 of O of the argmax of ``probs``."""
    s = recording_scores(labels, probs.argmax(1), classes)
    return {"official_f1": round(float(s["official_f1"]), 4), "F1_O": round(float(s["F1_O"]), 4)}


def probabilities_on_test(
    run: Path, cache_dir: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Test labels, record indices, the run's test probabilities and its classes."""
    model, info = load_aggregator(run / "aggregator.ckpt")
    overrides = [f"ckpt_path={info['window_checkpoint']['path']}"]
    overrides += [f"paths.cache_dir={cache_dir}"] if cache_dir else []
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("aggregate", overrides=overrides)
    window, ckpt, stored = aggregate.window_model(cfg)
    datamodule, _ = aggregate.set_up_data(cfg, ckpt, stored)
    windows = embedded_splits(
        window.net, datamodule, info["window_checkpoint"]["sha256"], cfg.paths.cache_dir
    )
    test = RecordingSequences.from_windows(windows["test"])
    probs = model.probabilities(test, cfg.fit.batch_size)
    return test.labels.numpy(), test.records, probs, tuple(info["classes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    probs, first = [], None
    for run in args.runs:
        labels, records, p, classes = probabilities_on_test(run, args.cache_dir)
        if first is not None and not np.array_equal(first, records):
            raise SystemExit(f"{run} scored other test recordings than {args.runs[0]}: not one split")
        first = records
        probs.append(p)
        print(json.dumps({"run": str(run), **scores(labels, p, classes)}), flush=True)
    print(json.dumps({"ensemble_of": len(probs), **scores(labels, np.mean(probs, axis=0), classes)}))


if __name__ == "__main__":
    main()
