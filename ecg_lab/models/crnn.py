"""One configurable CNN → RNN → readout → linear classifier covering the CNN-RNN variants.

``conv_channels=[]`` drops the CNN (the raw signal, optionally framed into ``patch``-sample
steps, goes to the RNN); ``rnn=None`` drops the RNN (CNN features are average-pooled);
``seq_len`` pools the CNN output to a fixed number of time steps; ``readout`` picks the last
state, the mean of all outputs or an attention-weighted sum; ``residual`` adds the pooled CNN
features to the readout; ``layer_norm`` normalises the RNN outputs; ``conv_dropout`` adds dropout
after each conv block (as the source's plain PyTorch loop had), ``dropout`` before the head;
``extra_features`` widens the head for per-recording features given as ``forward(x, rr=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

READOUTS = ("last", "mean", "attention")


def conv_block(
    c_in: int, c_out: int, kernel: int, pool: int, batch_norm: bool, bias: bool, dropout: float = 0.0
) -> nn.Sequential:
    """Conv1d → BatchNorm → ReLU → MaxPool (→ Dropout when ``dropout`` > 0)."""
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=bias)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(c_out))
    layers.append(nn.ReLU(inplace=True))
    if pool > 1:
        layers.append(nn.MaxPool1d(pool))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class CRNN(nn.Module):
    """CNN feature extractor → (optional) recurrent layers → readout → linear head.

    Input ``(batch, in_channels, samples)``, output logits ``(batch, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 4,
        in_channels: int = 1,
        conv_channels: Sequence[int] = (32, 64, 128),
        kernel_sizes: Sequence[int] = (8, 9, 3),
        pool_sizes: Sequence[int] = (4, 4, 4),
        batch_norm: bool = True,
        conv_bias: bool = False,
        conv_dropout: float = 0.0,
        seq_len: int | None = None,
        patch: int = 1,
        rnn: str | None = "lstm",
        rnn_hidden: int = 128,
        rnn_layers: int = 2,
        bidirectional: bool = False,
        rnn_dropout: float = 0.2,
        layer_norm: bool = False,
        readout: str = "last",
        residual: bool = False,
        dropout: float = 0.3,
        extra_features: int = 0,
    ) -> None:
        super().__init__()
        if not (len(conv_channels) == len(kernel_sizes) == len(pool_sizes)):
            raise ValueError("model.net.conv_channels, kernel_sizes and pool_sizes must have the same length")
        if readout not in READOUTS:
            raise ValueError(f"model.net.readout must be one of {READOUTS}, got {readout!r}")
        if rnn not in (None, "lstm", "gru"):
            raise ValueError(f"model.net.rnn must be 'lstm', 'gru' or null, got {rnn!r}")
        blocks, c = [], in_channels
        for c_out, k, p in zip(conv_channels, kernel_sizes, pool_sizes, strict=True):
            blocks.append(conv_block(c, c_out, k, p, batch_norm, conv_bias, conv_dropout))
            c = c_out
        self.cnn = nn.Sequential(*blocks)
        self.patch = patch
        feat = c * patch if not conv_channels else c
        self.seq_pool = nn.AdaptiveAvgPool1d(seq_len) if seq_len else nn.Identity()
        self.rnn: nn.Module | None = None
        out_dim = feat
        if rnn is not None:
            cls = nn.LSTM if rnn == "lstm" else nn.GRU
            self.rnn = cls(
                feat,
                rnn_hidden,
                rnn_layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=rnn_dropout if rnn_layers > 1 else 0.0,
            )
            out_dim = rnn_hidden * (2 if bidirectional else 1)
        self.norm = nn.LayerNorm(out_dim) if layer_norm and rnn is not None else nn.Identity()
        self.readout = readout
        self.attn = nn.Linear(out_dim, 1) if readout == "attention" and rnn is not None else None
        self.residual = nn.Linear(feat, out_dim) if residual and feat != out_dim else None
        self.use_residual = residual
        self.drop = nn.Dropout(dropout)
        self.extra_features = extra_features
        self.head = nn.Linear(out_dim + extra_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """CNN features as a sequence ``(batch, steps, channels)``."""
        if len(self.cnn) == 0 and self.patch > 1:
            b, c, n = x.shape
            n = n - n % self.patch
            x = (
                x[..., :n]
                .reshape(b, c, n // self.patch, self.patch)
                .permute(0, 1, 3, 2)
                .reshape(b, c * self.patch, -1)
            )
        return self.seq_pool(self.cnn(x)).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, rr: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``(batch, num_classes)``; ``rr`` ``(batch, extra_features)`` joins the embedding."""
        z = self.drop(self.embed(x, lengths))
        if self.extra_features:
            if rr is None or rr.shape[-1] != self.extra_features:
                got = None if rr is None else tuple(rr.shape)
                raise ValueError(
                    f"model.net.extra_features={self.extra_features} needs an rr input of that width "
                    f"(got {got}); turn on the data's RR features or set model.net.extra_features=0"
                )
            z = torch.cat([z, rr.to(z.dtype)], dim=-1)
        return self.head(z)

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The readout ``(batch, out_dim)`` the head classifies. ``lengths``: each item's valid samples
        when ``x`` is padded (None: all valid)."""
        f = self.features(x)
        if self.rnn is None:
            z = f.mean(dim=1)
        else:
            out, _ = self.rnn(f)
            out = self.norm(out)
            if self.readout == "last" and self.rnn.bidirectional:
                # each direction's final state: forward at the end, backward at the start
                h = out.shape[-1] // 2
                z = torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=-1)
            elif self.readout == "last":
                z = out[:, -1]
            elif self.readout == "mean":
                z = out.mean(dim=1)
            else:
                w = torch.softmax(self.attn(out).squeeze(-1), dim=1)
                z = torch.einsum("bt,btd->bd", w, out)
            if self.use_residual:
                pooled = f.mean(dim=1)
                z = z + (self.residual(pooled) if self.residual is not None else pooled)
        return z


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
