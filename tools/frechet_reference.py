"""What the Fréchet distance of a generator's test gives for real windows (README, Generation).

    python tools/frechet_reference.py VAE_CKPT FEATURE_CKPT [--n 256] [--draws 5] [--cache-dir DIR]

The test scores all test windows against ``n`` generated samples; here ``n`` real windows of the
checkpoint's own validation split (other records, same sources; the data config and split stored in the
checkpoint) take the generated samples' place, drawn ``draws`` times (seeds 0, 1, ...). With features of
128 dimensions and a few hundred samples the distance is not 0 even for real windows: this is the floor a
generator is read against.
"""

from __future__ import annotations

import argparse

import hydra
import numpy as np
import torch

from ecg_lab.app.checkpoints import load_checkpoint
from ecg_lab.app.config import register_resolvers
from ecg_lab.eval import own_split
from ecg_lab.generation.frechet import frechet_distance, load_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("feature_ckpt")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--cache-dir", help="the waveform cache (default: the one stored in VAE_CKPT)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_resolvers()
    ckpt, cfg = load_checkpoint(args.ckpt)
    if args.cache_dir:
        cfg.data.cache_dir = args.cache_dir
    dm = hydra.utils.instantiate(cfg.data)
    own_split(dm, ckpt, args.ckpt, cfg.data)  # the split stored in the checkpoint, not split again
    dm.prepare_data()
    dm.setup()
    features = load_features(args.feature_ckpt, float(cfg.data.fs))
    test = features(dm.datasets["test"].windows.x)
    val = dm.datasets["val"].windows.x
    scores = []
    for seed in range(args.draws):
        pick = np.random.default_rng(seed).choice(len(val), size=min(args.n, len(val)), replace=False)
        scores.append(frechet_distance(test, features(val[pick])))
        print(f"draw {seed}: {scores[-1]:.3f}")
    mean, sd = np.mean(scores), np.std(scores)
    print(f"{len(test)} test windows against {len(pick)} validation windows: {mean:.3f} ± {sd:.3f}")


if __name__ == "__main__":
    main()
