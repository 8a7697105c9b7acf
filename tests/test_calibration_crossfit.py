"""``tools/calibration_crossfit.py``: a calibration's held-out gain on validation halves, on recordings
whose answer is known (probabilities biased against one class, and unbiased ones)."""

from __future__ import annotations

import numpy as np

from ecg_lab.classification.calibration import Calibrator
from tools.calibration_crossfit import halves, held_out_gains

CLASSES = ("N", "A", "O", "~")


def probabilities(n: int, bias_a: float, boost: float = 1.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy recording probabilities for ``n`` labelled recordings (the true class's logit raised by
    ``boost``), class A's scaled by ``bias_a``."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, size=n, p=[0.55, 0.15, 0.25, 0.05])
    logits = rng.normal(size=(n, 4)) + boost * np.eye(4)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[:, 1] *= bias_a
    return probs / probs.sum(1, keepdims=True), labels


def test_halves_take_half_of_each_class() -> None:
    labels = np.array([0] * 10 + [1] * 7 + [2] * 2)
    mask = halves(labels, np.random.default_rng(1))
    assert [int(mask[labels == c].sum()) for c in (0, 1, 2)] == [5, 3, 1]


def test_held_out_gain_follows_the_bias_and_vanishes_where_a_fit_can_only_overfit() -> None:
    calibrator = Calibrator("thresholds", low=-0.5, high=0.5, steps=41)
    biased = held_out_gains(*probabilities(800, bias_a=0.15), calibrator, CLASSES, draws=4)
    fair = held_out_gains(*probabilities(800, bias_a=1.0), calibrator, CLASSES, draws=4)
    assert len(biased) == len(fair) == 8 and (biased > 0).all()
    assert biased.mean() > fair.mean() + 0.03  # the bias is what a held-out half gains most from
    # few recordings whose argmax is nearly always right: thresholds fitted on 50 of them lose on the rest
    sharp = held_out_gains(*probabilities(100, bias_a=1.0, boost=3.0), calibrator, CLASSES, draws=10)
    assert sharp.mean() < 0 and (sharp <= 0).mean() > 0.7
