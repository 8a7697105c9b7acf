"""The LSTM VAE: shapes, standalone decoding and sampling, gradients, config checks, overfitting."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch

from ecg_lab.models.lstm_vae import HEADS, LSTMVAE, ConvHead, StepHead

SMALL = dict(conv_channels=4, encoder_hidden=16, decoder_hidden=16)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small recurrent nets run fastest, and reproducibly, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


GRID = [
    (seq_len, sps, layers, latent)
    for seq_len, sps, layers, latent in itertools.product((1000, 500), (1, 4, 10), (1, 2), (8, 16))
    if seq_len % sps == 0
]


@pytest.mark.parametrize(("seq_len", "samples_per_step", "layers", "latent_dim"), GRID)
def test_forward_shapes(seq_len: int, samples_per_step: int, layers: int, latent_dim: int) -> None:
    net = LSTMVAE(
        seq_len=seq_len,
        samples_per_step=samples_per_step,
        encoder_layers=layers,
        decoder_layers=layers,
        latent_dim=latent_dim,
        **SMALL,
    )
    recon, mu, logvar = net(torch.randn(2, 1, seq_len))
    assert recon.shape == (2, 1, seq_len)
    assert mu.shape == logvar.shape == (2, latent_dim)


def test_multichannel_round_trip_shape() -> None:
    net = LSTMVAE(seq_len=200, in_channels=3, **SMALL)
    recon, _, _ = net(torch.randn(2, 3, 200))
    assert recon.shape == (2, 3, 200)


def test_decode_alone_generates_whole_windows() -> None:
    net = LSTMVAE(seq_len=500, latent_dim=8, **SMALL)
    assert net.decode(torch.randn(5, 8)).shape == (5, 1, 500)


def test_sample_shape_and_seeded_reproducibility() -> None:
    net = LSTMVAE(seq_len=200, **SMALL)
    a = net.sample(3, generator=torch.Generator().manual_seed(0))
    b = net.sample(3, generator=torch.Generator().manual_seed(0))
    c = net.sample(3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 200)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_forward_samples_z_even_in_eval_mode() -> None:
    net = LSTMVAE(seq_len=200, **SMALL).eval()
    x = torch.randn(2, 1, 200)
    assert not torch.allclose(net(x)[0], net(x)[0])
    mu, _ = net.encode(x)
    assert torch.equal(net.decode(mu), net.decode(mu))


def test_gradients_are_finite_and_reach_the_encoder_convs() -> None:
    net = LSTMVAE(seq_len=200, **SMALL)
    recon, mu, logvar = net(torch.randn(4, 1, 200))
    (recon.square().mean() + mu.square().mean() + logvar.exp().mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for branch in net.conv.branches:
        assert branch[0].weight.grad.abs().sum() > 0


def test_default_size_is_modest() -> None:
    n = sum(p.numel() for p in LSTMVAE().parameters())
    assert 30_000 < n < 150_000


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(seq_len=1001), "model.net.pool"),
        (dict(seq_len=1000, pool=3), "model.net.pool"),
        (dict(seq_len=1000, samples_per_step=3), "model.net.samples_per_step"),
        (dict(kernel_sizes=(3, 8)), "model.net.kernel_sizes"),
        (dict(kernel_sizes=(-3,)), "model.net.kernel_sizes"),
        (dict(kernel_sizes=()), "model.net.kernel_sizes"),
        (dict(latent_dim=0), "model.net.latent_dim"),
        (dict(encoder_hidden=0), "model.net.encoder_hidden"),
        (dict(decoder_layers=0), "model.net.decoder_layers"),
        (dict(dropout=1.0), "model.net.dropout"),
    ],
)
def test_bad_config_names_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        LSTMVAE(**kwargs)


def test_seq_len_message_names_both_keys() -> None:
    with pytest.raises(ValueError, match=r"model\.net\.seq_len=1001 must be divisible by model\.net\.pool=4"):
        LSTMVAE(seq_len=1001)


def test_wrong_window_length_points_at_data_window() -> None:
    net = LSTMVAE(seq_len=1000, **SMALL)
    with pytest.raises(ValueError, match=r"1500 samples.*model\.net\.seq_len is 1000.*data\.window"):
        net(torch.randn(2, 1, 1500))


def test_wrong_channel_count_points_at_in_channels() -> None:
    net = LSTMVAE(seq_len=200, **SMALL)
    with pytest.raises(ValueError, match=r"model\.net\.in_channels"):
        net.encode(torch.randn(2, 2, 200))


def test_overfits_four_windows() -> None:
    torch.manual_seed(0)
    t = torch.linspace(0, 1, 200)
    x = torch.stack([torch.sin(2 * math.pi * f * t + ph) for f, ph in [(2, 0), (3, 1), (5, 2), (1, 3)]])
    x = x.unsqueeze(1)
    net = LSTMVAE(seq_len=200, samples_per_step=10, latent_dim=8, **SMALL)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def recon_mse() -> float:
        with torch.no_grad():
            mu, _ = net.encode(x)
            return (net.decode(mu) - x).square().mean().item()

    before = recon_mse()
    for _ in range(300):
        recon, mu, logvar = net(x)
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(-1).mean()
        loss = (recon - x).square().mean() + 1e-3 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = recon_mse()
    assert after < 0.2 * before, (before, after)


@pytest.mark.parametrize("readout", ["last", "sequence"])
@pytest.mark.parametrize("positional", [False, True])
def test_readout_and_positional_options(readout: str, positional: bool) -> None:
    net = LSTMVAE(
        seq_len=500, pool=10, samples_per_step=10, latent_dim=8, readout=readout, positional=positional
    )
    recon, mu, _ = net(torch.randn(3, 1, 500))
    assert recon.shape == (3, 1, 500) and mu.shape == (3, 8)
    assert net.to_mu.in_features == 64 * (50 if readout == "sequence" else 1)
    assert net.decoder.input_size == 8 + (50 if positional else 0)
    assert net.decode(torch.zeros(2, 8)).shape == (2, 1, 500)


def test_bad_readout_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.net\.readout"):
        LSTMVAE(readout="mean")


def test_posterior_starts_narrow() -> None:
    net = LSTMVAE(seq_len=200, init_logvar=-6.0, **SMALL)
    _, logvar = net.encode(torch.randn(8, 1, 200))
    assert abs(float(logvar.mean()) + 6.0) < 1.0


# -- the decoder's output head -----------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("samples_per_step", [1, 4, 10])
def test_every_head_decodes_whole_windows(head: str, samples_per_step: int) -> None:
    net = LSTMVAE(seq_len=200, samples_per_step=samples_per_step, latent_dim=8, head=head, **SMALL)
    recon, _, _ = net(torch.randn(2, 1, 200))
    assert recon.shape == (2, 1, 200)
    recon.square().mean().backward()
    assert all(p.grad is not None for p in net.to_samples.parameters())


def test_linear_head_keeps_the_source_checkpoint_layout() -> None:
    """The default head is the source's Linear under the same name: old checkpoints load unchanged."""
    net = LSTMVAE(seq_len=200, samples_per_step=10, **SMALL)
    assert {k for k in net.state_dict() if k.startswith("to_samples")} == {
        "to_samples.weight",
        "to_samples.bias",
    }
    assert net.to_samples.weight.shape == (10, SMALL["decoder_hidden"])


def test_a_steady_decoder_state_repeats_one_step_only_with_the_linear_head() -> None:
    """A decoder whose LSTM state no longer moves draws a samples_per_step-periodic pattern through the
    linear head (the 0.1-s oscillation of a collapsed decoder at 100 Hz), a flat line through the conv
    head."""
    torch.manual_seed(0)
    steady = torch.randn(1, 1, 16).expand(1, 50, 16)  # (batch, steps, hidden), the same at every step
    linear = StepHead(16, 1, 10)(steady)[0, 0].detach()
    assert linear.shape == (500,)
    assert torch.allclose(linear[10:], linear[:-10]) and linear[:10].std() > 1e-3  # period 10, not flat
    conv = ConvHead(16, 1, 10, features=8, kernel=9)(steady)[0, 0].detach()
    inner = conv[10:-10]  # away from the zero padding at the ends
    assert inner.std() < 1e-5 * (inner.abs().mean() + 1e-6) + 1e-6
    # step_conv places waves within a step itself: a steady state repeats a step, as the linear head's
    step_conv = ConvHead(16, 1, 10, features=8, kernel=9, within_step=True)(steady)[0, 0].detach()[10:-10]
    assert torch.allclose(step_conv[10:], step_conv[:-10], atol=1e-6) and step_conv[:10].std() > 1e-4


def test_step_conv_places_one_step_feature_at_one_sample() -> None:
    """Each of a step's samples has its own features (features × samples, feature-major)."""
    head = ConvHead(4, 1, 5, features=2, kernel=1, within_step=True)
    with torch.no_grad():
        head.project.weight.zero_(), head.project.bias.zero_()
        head.project.bias[0 * 5 + 3] = 1.0  # feature 0 (of 2), sample 3 (of 5): feature-major
        for conv in (head.convs[0], head.convs[2]):
            conv.weight.zero_(), conv.bias.zero_()
            conv.weight[0, 0, 0] = 1.0  # feature 0 through
    y = head(torch.zeros(1, 4, 4))[0, 0]
    assert torch.equal(y.nonzero().flatten(), torch.tensor([3, 8, 13, 18]))


def test_bad_head_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.net\.head must be one of"):
        LSTMVAE(head="deconv")
    with pytest.raises(ValueError, match=r"model\.net\.head_kernel=\[8\]"):
        LSTMVAE(head="conv", head_kernel=8)


def test_min_logvar_floors_the_posterior_width() -> None:
    net = LSTMVAE(seq_len=200, init_logvar=-10.0, min_logvar=-4.0, **SMALL)
    _, logvar = net.encode(torch.randn(8, 1, 200))
    assert float(logvar.min()) == pytest.approx(-4.0)
    free = LSTMVAE(seq_len=200, init_logvar=-10.0, **SMALL)  # the source's: no floor
    assert float(free.encode(torch.randn(8, 1, 200))[1].max()) < -8.0
