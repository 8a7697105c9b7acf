"""Choose a VAE checkpoint's latent mixture size on its validation windows (README, Generation).

    python tools/latent_mixture_sizes.py CKPT [--components 5 10 20 40] [--n 2048] [--seed 1]

The generated rhythm of a ``gmm`` sampler moves with the number of mixture components, and the bar is
the real windows' rhythm, so the size is a choice to make without the test split. For each size, the
mixture is fitted as evaluation fits it (``+model.sampler.components=K``: to the posterior means of the
checkpoint's training windows, ``model.sampler.max_windows`` of them, seed ``model.sampler.seed``);
``n`` samples are decoded (draw seed ``--seed``, not the test's ``model.fidelity.seed``) and their
``rhythm_plausible`` is set beside that of all the checkpoint's validation windows (the data config and
split stored in it). N(0, I) is printed for reference. The last line names the closest size and the
evaluation override that tests it.
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
from ecg_lab.generation.module import ECGGenerator, mixture_windows


def mixture_samples(
    model: ECGGenerator, train: np.ndarray, components: list[int], n: int, seed: int
) -> dict[int, np.ndarray]:
    """``n`` generated signals (draw seed ``seed``) from a mixture of each size in ``components``, fitted
    to ``train`` as :class:`ECGGenerator` fits it at evaluation; key 0 holds N(0, I)'s. The model's own
    mixture is put back afterwards."""
    own = model.latent_density
    codes = model.encode_means(mixture_windows(train, model.sampler))  # once: the same for every size
    samples = {0: model.generate(n, seed=seed, sampler="prior")}
    try:
        for k in components:
            model.latent_density = LatentDensity(model.net.latent_dim, k)
            model.latent_density.fit(codes, seed=model.sampler.seed)  # as fit_latent_density fits it
            samples[k] = model.generate(n, seed=seed)
    finally:
        model.latent_density = own
    return samples


def closest_size(rhythms: dict[int, float], real: float) -> int:
    """The mixture size (not N(0, I)) whose generated rhythm is nearest ``real``; the smaller on a tie."""
    return min((abs(r - real), k) for k, r in rhythms.items() if k > 0)[1]


def checkpoint_windows(path: str) -> tuple[ECGGenerator, dict[str, np.ndarray]]:
    """The generator in checkpoint ``path`` (eval mode) and the windows of each split (train, val,
    test): the data config and split stored in it, not split again."""
    ckpt, cfg = load_checkpoint(path)
    model = model_from_loaded(ckpt, cfg)
    model.eval()
    dm = hydra.utils.instantiate(cfg.data)
    own_split(dm, ckpt, path, cfg.data)
    dm.prepare_data()
    dm.setup()
    return model, {name: dm.datasets[name].windows.x for name in ("train", "val", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--components", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument(
        "--seed", type=int, default=1, help="the draws' seed (the test's: model.fidelity.seed)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_resolvers()
    model, windows = checkpoint_windows(args.ckpt)
    val, rhythm = windows["val"], model.settings.rhythm
    real = plausible_rhythm_share(val, model.fs, **rhythm)
    print(f"validation windows ({len(val)}): real rhythm_plausible {real:.3f}")
    samples = mixture_samples(model, windows["train"], args.components, args.n, args.seed)
    rhythms = {k: plausible_rhythm_share(x, model.fs, **rhythm) for k, x in samples.items()}
    for k, share in rhythms.items():
        name = "N(0, I)" if k == 0 else f"mixture of {k}"
        print(f"{name}: {share:.3f} ({share - real:+.3f})")
    k = closest_size(rhythms, real)
    print(f"closest to the validation windows: mixture of {k} (evaluate with +model.sampler.components={k})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
