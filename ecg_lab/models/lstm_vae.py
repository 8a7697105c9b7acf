"""An LSTM variational autoencoder for fixed-length single-lead ECG windows.

Encoder: parallel Conv1d branches, one per odd kernel size (``'same'`` padding, each
Conv → BatchNorm → ReLU), see the beat at several time scales; their outputs are concatenated
on channels and average-pooled by ``pool`` (1000 samples → 100 steps for pool 10). An LSTM runs over
those steps; two Linear layers give ``mu`` and ``logvar`` from its last layer's final hidden state
(``readout="last"``) or from all its outputs (``readout="sequence"``, which keeps where the beats are).
``logvar`` starts at ``init_logvar``: a posterior as wide as the prior at initialisation makes z
mostly noise, the decoder learns to ignore it and the posterior collapses. ``min_logvar`` (None: off)
keeps it from narrowing below a floor: a decoder that has only ever seen z within a few thousandths of
each window's code draws broken beats between them, which is where most samples of the prior fall.

Decoder: a Linear maps the latent ``z`` to the initial ``(h0, c0)`` of the decoder LSTM, which runs
for ``seq_len // samples_per_step`` steps with ``z`` (and, with ``positional=True``, the step's
one-hot position) as its input at every step. ``head="linear"`` (the source's): a Linear turns each
step's hidden state into ``samples_per_step`` samples per channel, so a decoder whose state barely moves
repeats one ``samples_per_step``-long pattern (a 0.1-s oscillation at 100 Hz). ``head="conv"``: a Linear
maps each step's state to ``head_channels`` features, held over the step's samples and turned into
the waveform by two Conv1d layers (kernel ``head_kernel``) that see across step boundaries; the same
state gives the same output at every sample, so that pattern cannot arise. ``decode`` alone maps a
latent vector to a whole window, so ``sample`` generates ECGs from ``z ~ N(0, I)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check_positive(**sizes: int) -> None:
    for key, value in sizes.items():
        if value < 1:
            raise ValueError(f"model.net.{key}={value} must be a positive integer")


def _check_divides(seq_len: int, **divisors: int) -> None:
    for key, value in divisors.items():
        if seq_len % value:
            raise ValueError(
                f"model.net.seq_len={seq_len} must be divisible by model.net.{key}={value}; "
                f"change one of them"
            )


def _check_kernels(kernel_sizes: Sequence[int], key: str = "kernel_sizes") -> None:
    if len(kernel_sizes) == 0:
        raise ValueError(f"model.net.{key} is empty; give at least one odd kernel size, e.g. [3, 9, 15]")
    bad = [k for k in kernel_sizes if k < 1 or k % 2 == 0]
    if bad:
        raise ValueError(
            f"model.net.{key}={list(kernel_sizes)} has {bad}; every kernel size must be odd and "
            f"positive so 'same' padding keeps the length"
        )


READOUTS = ("last", "sequence")
HEADS = ("linear", "conv", "step_conv")


class MultiScaleConv(nn.Module):
    """Parallel Conv1d → BatchNorm → ReLU branches (one per kernel size), concatenated on channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(in_channels, out_channels, k, padding=k // 2, bias=False),
                nn.BatchNorm1d(out_channels),
                nn.ReLU(inplace=True),
            )
            for k in kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def steps_to_samples(y: torch.Tensor, samples_per_step: int) -> torch.Tensor:
    """Per-step outputs ``(batch, steps, channels * samples_per_step)``, channel-major, laid out in time:
    ``(batch, channels, steps * samples_per_step)``."""
    b, steps, _ = y.shape
    y = y.view(b, steps, -1, samples_per_step).permute(0, 2, 1, 3)
    return y.reshape(b, y.shape[1], steps * samples_per_step)


class StepHead(nn.Linear):
    """The source's output layer: one Linear per decoder step → ``samples_per_step`` samples per channel
    (a Linear itself, so checkpoints of the source's layout load unchanged)."""

    def __init__(self, hidden: int, channels: int, samples_per_step: int) -> None:
        super().__init__(hidden, channels * samples_per_step)
        self.channels, self.samples_per_step = channels, samples_per_step

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        """``(batch, steps, hidden)`` → ``(batch, channels, steps * samples_per_step)``."""
        return steps_to_samples(super().forward(out), self.samples_per_step)


class ConvHead(nn.Module):
    """Step states → ``features`` per step, held over the step's samples → Conv1d → ReLU → Conv1d;
    translation-equivariant, so a constant state gives a constant output, while the convolutions still
    place a wave anywhere within a step from where the step boundaries fall in their window.

    ``within_step=True`` (``head=step_conv``): each step state → ``features`` for every sample of the
    step (a Linear, as the source's head, but into features), then the same convolutions: a wave can be
    placed at any sample directly, and the convolutions smooth across step boundaries; no longer
    equivariant, so a steady state can repeat a pattern every step (``step_artefact_ratio`` measures it).
    """

    def __init__(
        self,
        hidden: int,
        channels: int,
        samples_per_step: int,
        features: int,
        kernel: int,
        within_step: bool = False,
    ) -> None:
        super().__init__()
        self.samples_per_step, self.within_step = samples_per_step, within_step
        self.project = nn.Linear(hidden, features * (samples_per_step if within_step else 1))
        self.convs = nn.Sequential(
            nn.Conv1d(features, features, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.Conv1d(features, channels, kernel, padding=kernel // 2),
        )

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        """``(batch, steps, hidden)`` → ``(batch, channels, steps * samples_per_step)``."""
        f = self.project(out)
        if not self.within_step:  # one feature vector per step, held over its samples
            f = f.repeat_interleave(self.samples_per_step, dim=1).transpose(1, 2)
        else:
            f = steps_to_samples(f, self.samples_per_step)
        return self.convs(f)


class LSTMVAE(nn.Module):
    """Multi-scale CNN + LSTM encoder, LSTM decoder; input and output ``(batch, in_channels, seq_len)``."""

    def __init__(
        self,
        seq_len: int = 1000,
        in_channels: int = 1,
        conv_channels: int = 16,
        kernel_sizes: Sequence[int] = (3, 9, 15),
        pool: int = 4,
        encoder_hidden: int = 64,
        encoder_layers: int = 1,
        latent_dim: int = 16,
        decoder_hidden: int = 64,
        decoder_layers: int = 1,
        samples_per_step: int = 4,
        dropout: float = 0.0,
        init_logvar: float = -6.0,
        readout: str = "last",
        positional: bool = False,
        head: str = "linear",
        head_channels: int = 16,
        head_kernel: int = 9,
        min_logvar: float | None = None,
    ) -> None:
        super().__init__()
        _check_positive(
            seq_len=seq_len,
            in_channels=in_channels,
            conv_channels=conv_channels,
            pool=pool,
            encoder_hidden=encoder_hidden,
            encoder_layers=encoder_layers,
            latent_dim=latent_dim,
            decoder_hidden=decoder_hidden,
            decoder_layers=decoder_layers,
            samples_per_step=samples_per_step,
            head_channels=head_channels,
        )
        _check_divides(seq_len, pool=pool, samples_per_step=samples_per_step)
        _check_kernels(kernel_sizes)
        _check_kernels([head_kernel], key="head_kernel")
        if head not in HEADS:
            raise ValueError(f"model.net.head must be one of {HEADS}, got {head!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.net.dropout={dropout} must be in [0, 1)")
        self.seq_len, self.in_channels, self.latent_dim = seq_len, in_channels, latent_dim
        self.samples_per_step = samples_per_step
        self.decoder_layers, self.decoder_hidden = decoder_layers, decoder_hidden

        self.conv = MultiScaleConv(in_channels, conv_channels, kernel_sizes)
        self.pool = nn.AvgPool1d(pool)
        self.encoder = nn.LSTM(
            conv_channels * len(kernel_sizes),
            encoder_hidden,
            encoder_layers,
            batch_first=True,
            dropout=dropout if encoder_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        if readout not in READOUTS:
            raise ValueError(f"model.net.readout must be one of {READOUTS}, got {readout!r}")
        self.readout, self.positional = readout, positional
        summary = encoder_hidden * (seq_len // pool if readout == "sequence" else 1)
        self.to_mu = nn.Linear(summary, latent_dim)
        self.to_logvar = nn.Linear(summary, latent_dim)
        # start with a narrow posterior: with sigma = 1 at initialisation the sampled z is mostly noise,
        # the decoder learns to ignore it and the posterior collapses before training gets going
        nn.init.constant_(self.to_logvar.bias, init_logvar)
        self.min_logvar = None if min_logvar is None else float(min_logvar)

        self.to_state = nn.Linear(latent_dim, 2 * decoder_layers * decoder_hidden)
        steps = seq_len // samples_per_step
        self.register_buffer(
            "positions", torch.eye(steps) if positional else torch.zeros(steps, 0), persistent=False
        )
        self.decoder = nn.LSTM(
            latent_dim + self.positions.shape[1],
            decoder_hidden,
            decoder_layers,
            batch_first=True,
            dropout=dropout if decoder_layers > 1 else 0.0,
        )
        self.to_samples = (
            StepHead(decoder_hidden, in_channels, samples_per_step)
            if head == "linear"
            else ConvHead(
                decoder_hidden,
                in_channels,
                samples_per_step,
                head_channels,
                head_kernel,
                within_step=head == "step_conv",
            )
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input has shape {tuple(x.shape)} but the model expects (batch, model.net.in_channels="
                f"{self.in_channels}, samples); set model.net.in_channels to the data's lead count"
            )
        if x.shape[-1] != self.seq_len:
            raise ValueError(
                f"input window has {x.shape[-1]} samples but model.net.seq_len is {self.seq_len}; "
                f"set data.window (or model.net.seq_len) so they match"
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters ``(mu, logvar)``, each ``(batch, latent_dim)``."""
        self._check_input(x)
        steps = self.pool(self.conv(x)).transpose(1, 2)  # (batch, seq_len // pool, features)
        out, (h_n, _) = self.encoder(steps)
        summary = self.drop(out.flatten(1) if self.readout == "sequence" else h_n[-1])
        logvar = self.to_logvar(summary)
        if self.min_logvar is not None:
            logvar = logvar.clamp_min(self.min_logvar)
        return self.to_mu(summary), logvar

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``z = mu + sigma * eps``, sampled in train and eval mode alike; use ``decode(mu)`` for the mean."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Waveform ``(batch, in_channels, seq_len)`` from latent ``z`` ``(batch, latent_dim)``."""
        b = z.shape[0]
        state = self.to_state(z).view(b, 2, self.decoder_layers, self.decoder_hidden)
        h0, c0 = state.permute(1, 2, 0, 3).contiguous().unbind(0)  # each (layers, batch, hidden)
        steps = self.seq_len // self.samples_per_step
        inputs = torch.cat(
            [
                z.unsqueeze(1).expand(b, steps, self.latent_dim),
                self.positions.unsqueeze(0).expand(b, -1, -1).to(z.dtype),
            ],
            dim=2,
        )
        out, _ = self.decoder(inputs, (h0, c0))
        return self.to_samples(out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction, mu, logvar)`` for windows ``x`` ``(batch, in_channels, seq_len)``."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` latents drawn from ``N(0, I)``; ``generator`` makes the draw reproducible."""
        if n < 1:
            raise ValueError(f"number of samples must be positive, got {n}")
        ref = self.to_state.weight
        device = generator.device if generator is not None else ref.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=ref.dtype)
        return self.decode(z.to(ref.device))
