"""The discriminative score (Yoon et al., TimeGAN 2019): a small classifier, trained post hoc to tell real
windows from generated ones, scored by ``|accuracy - 0.5|`` on windows it did not train on.

0 means it cannot tell them apart (as good as chance), 0.5 that it always can. The classifier is a
small 1-D CNN (two strided convolutions, mean and max pooled over time, one linear output) trained
with Adam for a fixed number of epochs. Both sets are standardised with the real windows' mean and
standard deviation, so amplitude differences count. Its initial weights, the split and the batches
come from ``seed`` alone, and the global random state is left as it was, so the score is repeatable and
training it does not change the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class DiscriminativeSettings:
    """How the post-hoc classifier is trained: held-out share, epochs, batch size, learning rate, seed."""

    test_fraction: float = 0.3
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    channels: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(
                f"model.fidelity.discriminative.test_fraction={self.test_fraction} must be in (0, 1)"
            )
        for key in ("epochs", "batch_size", "channels"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"model.fidelity.discriminative.{key} must be a positive integer")


class WindowClassifier(nn.Module):
    """Two strided Conv1d → ReLU layers, mean- and max-pooled over time, one logit (generated vs real)."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 9, stride=2, padding=4),
            nn.ReLU(),
            nn.Conv1d(channels, 2 * channels, 9, stride=2, padding=4),
            nn.ReLU(),
        )
        self.out = nn.Linear(4 * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.out(torch.cat([f.mean(-1), f.amax(-1)], dim=1))[:, 0]


def _split(n: int, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices of ``n`` windows."""
    order = rng.permutation(n)
    n_test = max(1, round(test_fraction * n))
    return order[n_test:], order[:n_test]


def _fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: DiscriminativeSettings, rng: np.random.Generator
) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(s.epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for batch in order.split(s.batch_size):
            opt.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            opt.step()


def discriminative_score(
    real: np.ndarray, generated: np.ndarray, settings: DiscriminativeSettings | None = None
) -> dict[str, float]:
    """``discriminative_score`` (``|accuracy - 0.5|`` on the held-out windows) and
    ``discriminative_accuracy``; both sets are cut to the smaller one's size so chance is 0.5. nan when
    either set has fewer than 4 windows."""
    s = settings or DiscriminativeSettings()
    a = np.atleast_2d(np.asarray(real, dtype=np.float32))
    b = np.atleast_2d(np.asarray(generated, dtype=np.float32))
    n = min(len(a), len(b))
    if n < 4:
        return {"discriminative_score": float("nan"), "discriminative_accuracy": float("nan")}
    rng = np.random.default_rng(s.seed)
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    mean, std = float(a.mean()), float(a.std()) or 1.0
    (train_a, test_a), (train_b, test_b) = (_split(n, s.test_fraction, rng) for _ in range(2))
    train = np.concatenate([train_a, n + train_b])
    test = np.concatenate([test_a, n + test_b])
    # also inside Lightning's test loop, which runs under inference mode
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        x = torch.from_numpy((np.concatenate([a, b]) - mean) / std).float()[:, None]
        y = torch.cat([torch.zeros(n), torch.ones(n)])
        torch.manual_seed(s.seed)
        model = WindowClassifier(s.channels)
        _fit(model, x[train], y[train], s, rng)
        with torch.no_grad():
            accuracy = float(((model(x[test]) > 0).float() == y[test]).float().mean())
    return {"discriminative_score": abs(accuracy - 0.5), "discriminative_accuracy": accuracy}
