"""The configurable CRNN: the SPEC's parameter counts and output shapes."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ecg_lab.models.crnn import CRNN, count_parameters
from tests.conftest import REPO


def cnn_lstm() -> CRNN:
    cfg = OmegaConf.load(REPO / "conf" / "model" / "cnn_lstm.yaml").net
    cfg.num_classes = 4
    return instantiate(cfg)


def test_cnn_lstm_parameter_count_matches_spec() -> None:
    net = cnn_lstm()
    n = count_parameters(net)
    assert abs(n - 308_420) / 308_420 < 0.01
    assert count_parameters(net.cnn) == 43_712  # SPEC: the conv stack of cnn_lstm and cnn_only
    assert count_parameters(net.rnn) == 264_192 and count_parameters(net.head) == 516


@pytest.mark.parametrize("length", [1500, 3000, 777])
def test_cnn_lstm_output_shape_and_backward(length: int) -> None:
    net = cnn_lstm()
    x = torch.randn(3, 1, length, requires_grad=True)
    out = net(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_layer_norm_adds_exactly_256() -> None:
    assert count_parameters(CRNN(layer_norm=True)) - count_parameters(CRNN()) == 256


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_last_readout_is_each_directions_final_state(rnn: str) -> None:
    net = CRNN(rnn=rnn, bidirectional=True, rnn_layers=2, rnn_hidden=16, dropout=0.0).eval()
    x = torch.randn(2, 1, 1500)
    features = net.features(x)
    _, h_n = net.rnn(features)
    h_n = h_n[0] if rnn == "lstm" else h_n
    expected = net.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))  # last layer: forward, backward
    assert torch.allclose(net(x), expected, atol=1e-6)
