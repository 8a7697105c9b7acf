"""The classification loss (``loss=weighted_ce``): class-weighted cross-entropy."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.nn import functional as F

WEIGHTINGS = ("inverse_frequency", "none")


def balanced_class_weights(
    labels: np.ndarray, classes: tuple[str, ...], items: str, advice: str
) -> np.ndarray:
    """Inverse-frequency ("balanced") weights ``N / (K * n_c)`` of the training ``items`` (windows,
    recordings); ValueError naming the classes without any, then ``advice``."""
    missing = [c for i, c in enumerate(classes) if not np.any(labels == i)]
    if missing:
        raise ValueError(f"no training {items} of class {missing}; {advice}")
    return compute_class_weight("balanced", classes=np.arange(len(classes)), y=labels)


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with class weights from the training windows (``inverse_frequency``) or none."""

    TASK = "classification"

    def __init__(self, weighting: str = "inverse_frequency", num_classes: int = 4) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"loss.weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        self.register_buffer("weight", torch.ones(num_classes))

    def set_class_weights(self, weights: np.ndarray | torch.Tensor) -> None:
        """Install the data's class weights (ignored when ``weighting=none``)."""
        if self.weighting == "none":
            return
        w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
        if w.shape != self.weight.shape:
            raise ValueError(f"got {w.numel()} class weights for a loss over {self.weight.numel()} classes")
        self.weight.copy_(w.to(self.weight.device))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.weight)
