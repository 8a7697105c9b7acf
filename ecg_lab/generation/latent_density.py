"""Where generated ECGs draw their latent vectors: the VAE's prior, or a density fitted to its codes.

``kind="prior"`` draws ``z ~ N(0, I)``, the VAE's own prior. A VAE whose KL term is weak (as it must be
for sharp beats) leaves much of N(0, I) between the codes of its training windows; decoded there, beats
fade and two rhythms blend into one window. ``kind="gmm"`` is ex-post density estimation (Ghosh et al.,
2020, "From variational to deterministic autoencoders"; Dai & Wipf, 2019): a Gaussian mixture with full
covariances fitted to the posterior means of (at most ``max_windows``) training windows after training
steps, so that samples are drawn where the decoder has learnt to draw ECGs. The mixture lives in
:class:`LatentDensity`'s buffers, so it travels in every checkpoint and into the edge export. It is
refitted at each validation epoch, so a best checkpoint holds the mixture of its own weights; a
``last.ckpt`` written in an epoch without validation holds the one of the last validated epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

SAMPLERS = ("prior", "gmm")


@dataclass(frozen=True)
class SamplerSettings:
    """``model.sampler``: how generated samples draw ``z``."""

    kind: str = "prior"
    components: int = 10  # mixture components (gmm)
    max_windows: int = 4096  # training windows whose posterior means the mixture is fitted to
    seed: int = 0  # the fit's initialisation and the choice of windows

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ValueError(f"model.sampler.kind must be one of {SAMPLERS}, got {self.kind!r}")
        if self.components < 1 or self.max_windows < 2:
            raise ValueError(
                f"model.sampler.components={self.components} must be >= 1 and model.sampler.max_windows="
                f"{self.max_windows} >= 2"
            )


class LatentDensity(nn.Module):
    """A Gaussian mixture over the latent space, in buffers: ``weights`` (K,), ``means`` (K, D) and the
    Cholesky factors ``scale_tril`` (K, D, D) of its covariances; ``fitted`` is False until :meth:`fit`."""

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).repeat(components, 1, 1))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def components(self) -> int:
        return int(self.weights.shape[0])

    def fit(self, codes: np.ndarray, seed: int = 0) -> None:
        """Fit the mixture to ``codes`` (n, D), posterior means; fewer codes than components is an error."""
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[1] != self.means.shape[1]:
            raise ValueError(f"codes have shape {codes.shape}, expected (n, {self.means.shape[1]})")
        if len(codes) < self.components:
            raise ValueError(
                f"{len(codes)} training windows cannot fit model.sampler.components={self.components}; "
                "lower the number of components or give more training data"
            )
        gmm = GaussianMixture(self.components, covariance_type="full", reg_covar=1e-4, random_state=seed)
        with threadpool_limits(torch.get_num_threads()):  # NumPy's BLAS threads on busy cores: 20x slower
            gmm.fit(codes)
        like = self.means
        self.weights.copy_(torch.as_tensor(gmm.weights_, dtype=like.dtype))
        self.means.copy_(torch.as_tensor(gmm.means_, dtype=like.dtype))
        self.scale_tril.copy_(torch.as_tensor(np.linalg.cholesky(gmm.covariances_), dtype=like.dtype))
        self.fitted.fill_(True)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latent vectors (n, D), drawn on the CPU with ``generator``."""
        if not bool(self.fitted):
            raise RuntimeError("the latent mixture (model.sampler.kind=gmm) is not fitted: fit() it first")
        weights, means, tril = (t.detach().cpu().float() for t in (self.weights, self.means, self.scale_tril))
        k = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, means.shape[1], generator=generator)
        return means[k] + (tril[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def as_dict(self) -> dict[str, Any]:
        """The mixture as JSON-ready lists (the edge export's ``latent_density``)."""
        return {
            "kind": "gmm",
            "weights": self.weights.cpu().tolist(),
            "means": self.means.cpu().tolist(),
            "scale_tril": self.scale_tril.cpu().tolist(),
        }
