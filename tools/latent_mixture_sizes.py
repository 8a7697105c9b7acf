"""Generated rhythm of a trained VAE checkpoint under latent densities of several sizes (README, Generation).

    python tools/latent_mixture_sizes.py CKPT [--components 5 10 20 40] [--n 256]

Fits each density to the posterior means of the checkpoint's training windows (the data config and split
stored in it), decodes ``n`` samples (seed 0) and prints ``rhythm_plausible`` for N(0, I), a full Gaussian
and mixtures of the given sizes.
"""

from __future__ import annotations

import argparse

import hydra
import numpy as np
import torch

from ecg_lab.app.checkpoints import load_checkpoint, model_from_loaded
from ecg_lab.app.config import register_resolvers
from ecg_lab.eval import own_split
from ecg_lab.generation.fidelity import plausible_rhythm_share
from ecg_lab.generation.latent_density import LatentDensity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--components", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_resolvers()
    ckpt, cfg = load_checkpoint(args.ckpt)
    model = model_from_loaded(ckpt, cfg)
    dm = hydra.utils.instantiate(cfg.data)
    own_split(dm, ckpt, args.ckpt, cfg.data)  # the split stored in the checkpoint, not split again
    dm.prepare_data()
    dm.setup()
    codes = model.encode_means(dm.datasets["train"].windows.x)
    dim = codes.shape[1]

    def rhythm(z: torch.Tensor) -> float:
        with torch.no_grad():
            return plausible_rhythm_share(model.net.decode(z)[:, 0].numpy(), float(cfg.data.fs))

    generator = torch.Generator().manual_seed(0)
    print(f"N(0, I): {rhythm(torch.randn(args.n, dim, generator=generator)):.3f}")
    for k in (1, *args.components):
        density = LatentDensity(dim, k)
        density.fit(codes, seed=0)
        name = "full Gaussian" if k == 1 else f"mixture of {k}"
        print(f"{name}: {rhythm(density.sample(args.n, torch.Generator().manual_seed(0))):.3f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
