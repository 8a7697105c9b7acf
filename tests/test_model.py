"""The configurable CRNN: the SPEC's parameter counts and output shapes."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ecg_lab.app.config import register_resolvers
from ecg_lab.classification.variants import SPEC_PARAMS, model_names
from ecg_lab.models.crnn import CRNN, count_parameters
from tests.conftest import REPO

register_resolvers()  # what the entry points do before composing


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


# -- every model config: shapes, gradients, parameter counts ------------------------------------

MODEL_CONFIGS = model_names()  # the classifiers
EXPECTED_PARAMS = {
    "attention": 308_549,
    "bilstm": 315_156,
    "cnn_bilstm_seq24": 315_156,
    "cnn_lstm": 308_420,
    "cnn_lstm_ln": 308_676,
    "cnn_lstm_meanpool": 308_420,
    "cnn_lstm_seq16": 308_420,
    "cnn_only": 44_228,
    "gru": 106_180,
    "lstm_only": 211_972,
    "residual": 308_420,
    "simple_lstm": 93_636,
}


@functools.cache
def composed_net(name: str) -> CRNN:
    """``model=<name>`` composed within the training config (4 classes), built once per session."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("train", overrides=[f"model={name}"])
    return instantiate(cfg.model.net)


def test_model_configs_are_the_twelve_variants() -> None:
    assert MODEL_CONFIGS == sorted(EXPECTED_PARAMS)


@pytest.mark.parametrize("length", [1500, 3000, 900])
@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_variant_forward_and_backward(name: str, length: int) -> None:
    torch.manual_seed(0)
    net = composed_net(name).train()
    net.zero_grad(set_to_none=True)
    out = net(torch.randn(2, 1, length))
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert params
    for pname, p in params:
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_variant_parameter_count(name: str) -> None:
    n = count_parameters(composed_net(name))
    assert n == EXPECTED_PARAMS[name]
    if name in SPEC_PARAMS:
        assert abs(n - SPEC_PARAMS[name]) / SPEC_PARAMS[name] < 0.01


def test_lstm_only_has_no_cnn_and_cnn_only_no_rnn() -> None:
    assert len(composed_net("lstm_only").cnn) == 0 and composed_net("lstm_only").rnn is not None
    assert composed_net("cnn_only").rnn is None


def test_layer_norm_config_adds_exactly_256() -> None:
    assert count_parameters(composed_net("cnn_lstm_ln")) - count_parameters(composed_net("cnn_lstm")) == 256


def test_cnn_only_is_the_cnn_lstm_conv_stack_plus_a_head() -> None:
    only, full = composed_net("cnn_only"), composed_net("cnn_lstm")
    assert count_parameters(only.cnn) == 43_712 and count_parameters(only.head) == 516
    assert count_parameters(only) == count_parameters(full.cnn) + 516
    assert [tuple(p.shape) for p in only.cnn.parameters()] == [tuple(p.shape) for p in full.cnn.parameters()]


def test_summary_rows_cover_every_variant() -> None:
    from ecg_lab.classification.variants import markdown, variant_rows

    rows = variant_rows()
    names = [r["config"] for r in rows]
    assert sorted(names) == sorted(EXPECTED_PARAMS) and len(names) == len(set(names)) == 12
    by_name = {r["config"]: r for r in rows}
    assert {k: r["parameters"] for k, r in by_name.items()} == EXPECTED_PARAMS
    assert {k for k, r in by_name.items() if r["spec"] is not None} == set(SPEC_PARAMS)
    assert by_name["gru"]["deviation_pct"] == pytest.approx(100 * (106_180 - 105_460) / 105_460)
    assert by_name["cnn_lstm"]["steps"] == 23 and by_name["cnn_lstm_seq16"]["steps"] == 16
    assert by_name["cnn_bilstm_seq24"]["steps"] == 24 and by_name["lstm_only"]["steps"] == 60
    assert all(r["description"] and not r["description"].startswith("#") for r in rows)
    table = markdown(rows)
    assert len(table.splitlines()) == 2 + 12 and "| gru |" in table and "106,180" in table


def test_conv_dropout_adds_no_parameters_and_keeps_the_state_dict_keys() -> None:
    """Dropout after each conv block changes neither the parameter count nor a checkpoint's keys."""
    plain, dropped = CRNN(), CRNN(conv_dropout=0.2)
    assert count_parameters(dropped) == count_parameters(plain) == 308_420
    assert list(dropped.state_dict()) == list(plain.state_dict())
    assert sum(isinstance(m, torch.nn.Dropout) for m in dropped.cnn.modules()) == 3
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.cnn.modules())
    dropped.train()
    x = torch.randn(2, 1, 1500)
    assert not torch.equal(dropped(x), dropped(x))  # active in training
