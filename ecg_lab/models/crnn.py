"""One configurable CNN → RNN → readout → linear classifier covering the CNN-RNN variants.

``conv_channels=[]`` drops the CNN (the raw signal, optionally framed into ``patch``-sample
steps, goes to the RNN); ``rnn=None`` drops the RNN (CNN features are average-pooled);
``seq_len`` pools the CNN output to a fixed number of time steps; ``readout`` picks the last
state, the mean of all outputs or an attention-weighted sum; ``residual`` adds the pooled CNN
features to the readout; ``layer_norm`` normalises the RNN outputs; ``conv_dropout`` adds dropout
after each conv block (as the source's plain PyTorch loop had), ``dropout`` before the head;
``extra_features`` widens the head for per-recording features given as ``forward(x, rr=...)``.

``lengths`` (each item's valid samples of a zero-padded batch, e.g. whole recordings) makes every
readout ignore the padding: the valid time steps follow the conv and pool layers (or ``patch``), the
features beyond them are zeroed after each conv block (so the next block's edge sees the zeros a
lone item's conv padding gives), the RNN runs packed, and ``last``, ``mean``, ``attention`` and the
CNN-only mean use each item's valid steps only. In eval mode a padded item's logits are those of the
item alone. In training, BatchNorm's batch statistics include the padded positions (zeros, and what a
conv makes of them): padding is not invisible to training, only to the readout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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


def output_lengths(module: nn.Module, lengths: torch.Tensor) -> torch.Tensor:
    """The output length of a Conv1d or MaxPool1d for inputs of ``lengths`` (other layers keep it)."""
    if not isinstance(module, (nn.Conv1d, nn.MaxPool1d)):
        return lengths
    kernel, stride, padding, dilation = (
        int(v if isinstance(v, int) else v[0])
        for v in (module.kernel_size, module.stride, module.padding, module.dilation)
    )
    span = lengths + 2 * padding - dilation * (kernel - 1) - 1
    return (torch.div(span, stride, rounding_mode="floor") + 1).clamp(min=0)


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``(batch, steps)``: True at each item's first ``lengths`` steps."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(seq: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The mean over time of ``seq`` ``(batch, steps, dim)``, over each item's valid steps only."""
    if lengths is None:
        return seq.mean(dim=1)
    mask = step_mask(lengths, seq.shape[1]).to(seq.dtype)
    return torch.einsum("bt,btd->bd", mask, seq) / lengths[:, None].to(seq.dtype)


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

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """CNN features as a sequence ``(batch, steps, channels)`` (zero beyond each item's valid steps
        when ``lengths`` is given)."""
        return self.sequence(x, lengths)[0]

    def sequence(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CNN features ``(batch, steps, channels)`` and each item's valid steps (None: all valid)."""
        if len(self.cnn) == 0:
            if self.patch > 1:
                b, c, n = x.shape
                n = n - n % self.patch
                x = (
                    x[..., :n]
                    .reshape(b, c, n // self.patch, self.patch)
                    .permute(0, 1, 3, 2)
                    .reshape(b, c * self.patch, -1)
                )
            steps = None if lengths is None else torch.div(lengths, self.patch, rounding_mode="floor")
            return self.seq_pool(x).transpose(1, 2), steps
        if lengths is None:
            return self.seq_pool(self.cnn(x)).transpose(1, 2), None
        for block in self.cnn:
            x = block(x)
            for layer in block:
                lengths = output_lengths(layer, lengths)
            x = x * step_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        return x.transpose(1, 2), lengths

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
                    f"(got {got}); use features=rr (it sets data.features) or model.net.extra_features=0"
                )
            z = torch.cat([z, rr.to(z.dtype)], dim=-1)
        return self.head(z)

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The readout ``(batch, out_dim)`` the head classifies. ``lengths``: each item's valid samples
        when ``x`` is zero-padded at the end (None: all valid); see the module's docstring."""
        f, out, steps = self._outputs(x, lengths)
        if out is None:
            return masked_mean(f, steps)
        if self.readout == "last":
            z = self._last(out, steps)
        elif self.readout == "mean":
            z = masked_mean(out, steps)
        else:
            z = torch.einsum("bt,btd->bd", self._attention(out, steps), out)
        if self.use_residual:
            pooled = masked_mean(f, steps)
            z = z + (self.residual(pooled) if self.residual is not None else pooled)
        return z

    def attention_weights(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The attention readout's weights ``(batch, steps)`` over the RNN's time steps (each row sums
        to 1, zero at padded steps), as :meth:`embed` uses them; ValueError for another readout."""
        if self.attn is None:
            raise ValueError(f"this CRNN reads out {self.readout!r} (rnn={self.rnn!r}), not attention")
        _, out, steps = self._outputs(x, lengths)
        return self._attention(out, steps)

    def _outputs(
        self, x: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """CNN features, the (normalised) RNN outputs (None without an RNN) and each item's valid steps."""
        lengths = self._padded(x, lengths)
        f, steps = self.sequence(x, lengths)
        if lengths is not None and steps is not None and bool((steps < 1).any()):
            raise ValueError(
                f"a padded item of {int(lengths[steps.argmin()])} samples gives the network no time "
                "step; keep shorter recordings out (data.preprocess.window sets the shortest kept)"
            )
        return f, (None if self.rnn is None else self.norm(self._recur(f, steps))), steps

    def _attention(self, out: torch.Tensor, steps: torch.Tensor | None) -> torch.Tensor:
        """Softmax of the attention scores of ``out`` over each item's valid steps ``(batch, steps)``."""
        assert self.attn is not None
        scores = self.attn(out).squeeze(-1)
        if steps is not None:
            scores = scores.masked_fill(~step_mask(steps, out.shape[1]), float("-inf"))
        return torch.softmax(scores, dim=1)

    def _padded(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """``lengths`` when some item is padded, None when none is; ValueError with ``seq_len``, which
        pools every item's padding with its signal."""
        if lengths is None:
            return None
        if isinstance(self.seq_pool, nn.AdaptiveAvgPool1d):
            raise ValueError(
                f"model.net.seq_len={self.seq_pool.output_size} pools padded batches (whole recordings) "
                "over their padding; set model.net.seq_len=null or use a window data config"
            )
        lengths = lengths.to(device=x.device, dtype=torch.long)
        return None if bool((lengths >= x.shape[-1]).all()) else lengths

    def _recur(self, f: torch.Tensor, steps: torch.Tensor | None) -> torch.Tensor:
        """The RNN's outputs ``(batch, steps, out_dim)``; packed when ``steps`` is given, so no direction
        reads padding (outputs beyond an item's steps are zero)."""
        assert self.rnn is not None
        if steps is None:
            return self.rnn(f)[0]
        packed = pack_padded_sequence(f, steps.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=f.shape[1])[0]

    def _last(self, out: torch.Tensor, steps: torch.Tensor | None) -> torch.Tensor:
        """Each item's final state: at its last valid step; bidirectional: the backward direction's at
        step 0 (which, packed, has read the item's valid steps only)."""
        rows = torch.arange(out.shape[0], device=out.device)
        last = out[rows, steps - 1] if steps is not None else out[:, -1]
        if not self.rnn.bidirectional:  # type: ignore[union-attr]
            return last
        h = out.shape[-1] // 2
        return torch.cat([last[:, :h], out[:, 0, h:]], dim=-1)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
