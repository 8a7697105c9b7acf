"""The Challenge's official F1 against a hand-computed confusion matrix; recording aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_lab.classification.metrics import confusion_matrix, official_f1, record_probabilities


def test_official_f1_matches_hand_computation() -> None:
    # rows true N, A, O, ~ ; columns predicted
    cm = np.array([[50, 2, 8, 0], [3, 10, 2, 0], [10, 1, 20, 4], [1, 0, 2, 3]])
    scores = official_f1(cm, ["N", "A", "O", "~"])
    f1_n = 2 * 50 / ((50 + 2 + 8) + (50 + 3 + 10 + 1))  # 100 / 124
    f1_a = 2 * 10 / ((3 + 10 + 2) + (2 + 10 + 1))  # 20 / 28
    f1_o = 2 * 20 / ((10 + 1 + 20 + 4) + (8 + 2 + 20 + 2))  # 40 / 67
    assert scores["F1_N"] == pytest.approx(f1_n)
    assert scores["F1_A"] == pytest.approx(f1_a)
    assert scores["F1_O"] == pytest.approx(f1_o)
    assert scores["F1_~"] == pytest.approx(2 * 3 / (6 + 7))
    assert scores["official_f1"] == pytest.approx((f1_n + f1_a + f1_o) / 3)  # noisy left out of the mean


def test_recording_prediction_is_mean_of_window_probabilities() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    targets = torch.tensor([1, 1, 1, 0])
    records = torch.tensor([7, 7, 7, 3])
    rec_probs, rec_targets = record_probabilities(probs, targets, records)
    assert torch.allclose(rec_probs, torch.tensor([[0.6, 0.4], [1.4 / 3, 1.6 / 3]]))
    assert rec_targets.tolist() == [0, 1]
    cm = confusion_matrix(rec_targets.numpy(), rec_probs.argmax(1).numpy(), 2)
    assert cm.tolist() == [[1, 0], [0, 1]]
