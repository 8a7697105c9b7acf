"""A learned aggregator over a window model's per-window embeddings (``python -m ecg_lab.aggregate``).

A window classifier scores a recording by the mean of its windows' probabilities. The aggregator
learns that step instead, on top of the frozen window network:

1. :func:`window_outputs` runs every window of a split through the network (eval mode, no grad) and
   keeps each window's embedding (``CRNN.embed``, the readout the head classifies) and logits;
   :func:`embedded_splits` does it once for the train, val and test windows, through the shared
   cache, keyed by the checkpoint's sha256, the prepared records' entry and the split.
2. :class:`RecordingSequences` groups them per recording, in window order, as zero-padded sequences
   with a mask of the real windows.
3. :class:`AttentionAggregator`: optional GRU over a recording's windows → attention pooling masked
   over the padding → linear → class logits; padding windows never change a recording's logits.
4. :func:`fit_aggregator` trains it on the training recordings (class-weighted cross-entropy, weights
   from the training recordings, Adam), stops early on the validation recordings' official F1 and keeps
   the best epoch's weights. Its shuffle is drawn from (seed, epoch) (:class:`EpochShuffle`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ecg_lab.app.checkpoints import read_checkpoint
from ecg_lab.app.config import instantiate_node
from ecg_lab.classification.calibration import recording_scores
from ecg_lab.classification.loss import WeightedCrossEntropy, balanced_class_weights
from ecg_lab.classification.metrics import record_probabilities
from ecg_lab.classification.module import split_batch
from ecg_lab.data.cache import cached, load_arrays
from ecg_lab.data.sampling import EpochShuffle
from ecg_lab.data.splits import SPLITS
from ecg_lab.errors import ConfigError

log = logging.getLogger(__name__)

WINDOW_ARRAYS = ("embeddings", "logits", "labels", "records")
EMBEDDINGS_FORMAT = 1


# -- 1. window embeddings ----------------------------------------------------------------------------
@dataclass
class WindowOutputs:
    """Each window's embedding ``(W, D)``, logits ``(W, K)``, class ``(W,)`` and record index ``(W,)``."""

    embeddings: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    records: np.ndarray


def window_outputs(
    net: nn.Module, dataset: Dataset[Any], batch_size: int, collate: Callable[..., Any] | None = None
) -> WindowOutputs:
    """Every item of ``dataset`` through the frozen ``net`` (eval mode, no grad), in dataset order;
    ``collate``: the datamodule's own, for items that are not windows of one length."""
    loader = DataLoader(  # its own generator: nothing drawn from torch's global one
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    parts: dict[str, list[np.ndarray]] = {name: [] for name in WINDOW_ARRAYS}
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        for batch in loader:
            x, y, rec, inputs = split_batch(batch)
            z = net.embed(x, inputs.get("lengths"))
            # in eval mode the head classifies the embedding itself; a head widened for extra inputs
            # (rr) takes them through forward
            logits = net(x, **inputs) if getattr(net, "extra_features", 0) else net.head(z)
            for name, value in zip(WINDOW_ARRAYS, (z.float(), logits.float(), y, rec), strict=True):
                parts[name].append(value.cpu().numpy())
    net.train(was_training)
    return WindowOutputs(**{k: np.concatenate(v) for k, v in parts.items()})


def manifest_digest(datamodule: Any) -> str:
    """SHA-256 of the datamodule's split (source, record, label, split of every record used)."""
    return hashlib.sha256(repr(sorted(datamodule.manifest.to_dict().items())).encode()).hexdigest()


def embedded_splits(
    net: nn.Module, datamodule: Any, checkpoint_sha256: str, cache_dir: str | Path | None
) -> dict[str, WindowOutputs]:
    """:func:`window_outputs` of the train, val and test windows of a set-up ``datamodule``, through the
    shared cache (kind ``window_embeddings``)."""
    prepared = datamodule.prepared
    key = {
        "kind": "window_embeddings",
        "format": EMBEDDINGS_FORMAT,
        "checkpoint_sha256": checkpoint_sha256,
        "prepared": prepared.cache_path.name if prepared.cache_path is not None else None,
        "split": manifest_digest(datamodule),
    }

    collate = getattr(getattr(datamodule, "batching", None), "collate", None)  # whole recordings: padded

    def build(folder: Path) -> dict[str, Any]:
        for part in SPLITS:
            out = window_outputs(net, datamodule.datasets[part], datamodule.batch_size, collate)
            np.savez(folder / f"{part}.npz", **vars(out))
        return {"splits": list(SPLITS)}

    def load(folder: Path, info: dict[str, Any]) -> dict[str, WindowOutputs]:
        return {part: WindowOutputs(**load_arrays(folder / f"{part}.npz", WINDOW_ARRAYS)) for part in SPLITS}

    splits, _ = cached(cache_dir, "window_embeddings", key, build, load)
    return splits


# -- 2. per-recording sequences ----------------------------------------------------------------------
@dataclass
class RecordingSequences:
    """One split's recordings, ordered by record index: zero-padded window embeddings ``(R, T, D)`` and
    logits ``(R, T, K)``, ``mask`` ``(R, T)`` (True for real windows), classes ``(R,)`` and record
    indices ``(R,)``."""

    embeddings: torch.Tensor
    logits: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    records: np.ndarray

    @classmethod
    def from_windows(cls, out: WindowOutputs) -> RecordingSequences:
        """Group windows per recording (a stable sort by record index keeps their order within one)."""
        order = np.argsort(out.records, kind="stable")
        records, first, counts = np.unique(out.records[order], return_index=True, return_counts=True)
        labels = out.labels[order][first]
        if not np.array_equal(np.repeat(labels, counts), out.labels[order]):
            raise ValueError("windows of one recording carry different classes")
        cuts = np.cumsum(counts)[:-1]

        def padded(values: np.ndarray) -> torch.Tensor:
            chunks = [torch.from_numpy(c) for c in np.split(values[order], cuts)]
            return nn.utils.rnn.pad_sequence(chunks, batch_first=True)

        mask = torch.arange(int(counts.max(initial=0)))[None, :] < torch.from_numpy(counts)[:, None]
        return cls(padded(out.embeddings), padded(out.logits), mask, torch.from_numpy(labels), records)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(embeddings, mask, logits)`` of recordings ``idx``, cut to their longest."""
        mask = self.mask[idx]
        t = int(mask.sum(1).max())
        return self.embeddings[idx, :t], mask[:, :t], self.logits[idx, :t]

    def mean_probabilities(self) -> np.ndarray:
        """The window model's own recording scores: the mean of its windows' softmax probabilities."""
        probs = torch.softmax(self.logits, dim=-1)[self.mask]
        rec = torch.arange(len(self)).repeat_interleave(self.mask.sum(1))
        return record_probabilities(probs, self.labels[rec], rec)[0].numpy()


# -- 3. the aggregator ------------------------------------------------------------------------------
class AttentionAggregator(nn.Module):
    """A recording's window embeddings (and, with ``use_logits``, the window model's log-probabilities)
    → LayerNorm → optional GRU (``gru_hidden`` > 0) → attention pooling masked over padding → dropout →
    linear → class logits."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int = 4,
        use_logits: bool = True,
        gru_hidden: int = 0,
        bidirectional: bool = True,
        attention_hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if in_dim < 1 or gru_hidden < 0 or attention_hidden < 1 or not 0 <= dropout < 1:
            raise ConfigError(
                f"aggregator: in_dim={in_dim}, gru_hidden={gru_hidden}, attention_hidden="
                f"{attention_hidden}, dropout={dropout}: need in_dim >= 1, gru_hidden >= 0, "
                "attention_hidden >= 1 and 0 <= dropout < 1"
            )
        self.use_logits = use_logits
        width = in_dim + (num_classes if use_logits else 0)
        self.norm = nn.LayerNorm(width)
        self.gru: nn.GRU | None = None
        if gru_hidden:
            self.gru = nn.GRU(width, gru_hidden, batch_first=True, bidirectional=bidirectional)
            width = gru_hidden * (2 if bidirectional else 1)
        self.score = nn.Sequential(
            nn.Linear(width, attention_hidden), nn.Tanh(), nn.Linear(attention_hidden, 1)
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(
        self, embeddings: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``(R, classes)`` of recordings given as ``(R, T, D)`` windows, ``mask`` ``(R, T)``."""
        x = embeddings
        if self.use_logits:
            if logits is None:
                raise ValueError("aggregator.use_logits=true needs the windows' logits")
            x = torch.cat([x, torch.log_softmax(logits, dim=-1)], dim=-1)
        x = self.norm(x.masked_fill(~mask[..., None], 0.0))  # whatever pads, it is zero from here on
        if self.gru is not None:
            lengths = mask.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x = nn.utils.rnn.pad_packed_sequence(
                self.gru(packed)[0], batch_first=True, total_length=x.shape[1]
            )[0]
        weights = torch.softmax(self.score(x).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)
        return self.head(self.drop(torch.einsum("rt,rtd->rd", weights, x)))

    def probabilities(self, seqs: RecordingSequences, batch_size: int) -> np.ndarray:
        """Softmax probabilities ``(R, classes)`` of every recording of ``seqs``."""
        return torch.softmax(self.predict(seqs, batch_size).float(), dim=1).numpy()

    def predict(self, seqs: RecordingSequences, batch_size: int) -> torch.Tensor:
        """Logits of every recording of ``seqs`` (eval mode, no grad), in batches."""
        self.eval()
        with torch.inference_mode():
            idx = torch.arange(len(seqs))
            return torch.cat([self(*seqs.batch(chunk)) for chunk in idx.split(batch_size)])


class AggregatorEnsemble(nn.Module):
    """Aggregators of one window model (``python -m ecg_lab.aggregate members=K``): a recording's
    probabilities are the mean of the members'."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def probabilities(self, seqs: RecordingSequences, batch_size: int) -> np.ndarray:
        """The mean of the members' softmax probabilities ``(R, classes)``."""
        return np.mean([m.probabilities(seqs, batch_size) for m in self.members], axis=0)

    def predict(self, seqs: RecordingSequences, batch_size: int) -> torch.Tensor:
        """Log of the mean probabilities (argmax: the ensemble's decisions)."""
        return torch.from_numpy(np.log(self.probabilities(seqs, batch_size)))


# -- 4. training ------------------------------------------------------------------------------------
@dataclass
class FitSettings:
    """How the aggregator is trained (config node ``fit``): Adam with ``lr`` and ``weight_decay``,
    ``batch_size`` recordings a step, at most ``max_epochs``, stopping after ``patience`` epochs without
    a better validation official F1."""

    max_epochs: int = 100
    patience: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if min(self.max_epochs, self.patience, self.batch_size) < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(
                f"fit: max_epochs={self.max_epochs}, patience={self.patience}, batch_size={self.batch_size}, "
                f"lr={self.lr}, weight_decay={self.weight_decay}: need positive epochs, patience, batch size "
                "and lr, and weight_decay >= 0"
            )


@dataclass
class FitResult:
    """The epoch whose weights were kept, its validation official F1, the epochs run and each epoch's
    training loss and validation official F1."""

    best_epoch: int
    best_val_official_f1: float
    epochs: int
    history: list[dict[str, float]]


def recording_class_weights(labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Inverse-frequency ("balanced") class weights of the training recordings: ``N / (K * n_c)``."""
    return balanced_class_weights(labels, classes, "recordings", "the aggregator needs every class")


def official_score(
    model: AttentionAggregator, seqs: RecordingSequences, classes: tuple[str, ...], batch_size: int
) -> float:
    """The official F1 (mean F1 of N, A, O) of ``model``'s argmax decisions on ``seqs``."""
    preds = model.predict(seqs, batch_size).argmax(1).numpy()
    return float(recording_scores(seqs.labels.numpy(), preds, classes)["official_f1"])


def fit_aggregator(
    model: AttentionAggregator,
    train: RecordingSequences,
    val: RecordingSequences,
    classes: tuple[str, ...],
    settings: FitSettings,
    seed: int,
) -> FitResult:
    """Train ``model`` on ``train``; early stopping on ``val``'s official F1; the best epoch's weights are
    loaded back (ties: the earlier epoch). Dropout draws from torch's global generator (seed it)."""
    loss_fn = WeightedCrossEntropy("inverse_frequency", len(classes))
    loss_fn.set_class_weights(recording_class_weights(train.labels.numpy(), classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    shuffle = EpochShuffle(len(train), seed)
    best = FitResult(-1, -1.0, 0, [])
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(settings.max_epochs):
        shuffle.set_epoch(epoch)
        model.train()
        losses = []
        for idx in BatchSampler(shuffle, settings.batch_size, drop_last=False):
            loss = loss_fn(model(*train.batch(idx)), train.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        score = official_score(model, val, classes, settings.batch_size)
        best.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_official_f1": score})
        best.epochs = epoch + 1
        if score > best.best_val_official_f1:
            best.best_epoch, best.best_val_official_f1 = epoch, score
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best.best_epoch >= settings.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    log.info(
        "aggregator: best epoch %d of %d, validation official F1 %.4f",
        best.best_epoch,
        best.epochs,
        best.best_val_official_f1,
    )
    return best


# -- 5. its checkpoint -------------------------------------------------------------------------------
def aggregator_checkpoint(model: nn.Module, info: dict[str, Any]) -> dict[str, Any]:
    """What ``aggregator.ckpt`` holds: the weights and, under ``ecg_lab``, ``info`` (plain values: the
    run config, the aggregator's build arguments, the window checkpoint's path and sha256, the number
    of ``members`` of an ensemble, ...)."""
    return {"state_dict": model.state_dict(), "ecg_lab": info}


def load_aggregator(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The aggregator (or :class:`AggregatorEnsemble`) saved at ``path``, in eval mode, and what its
    checkpoint says about it."""
    ckpt = read_checkpoint(path)
    info = ckpt.get("ecg_lab") or {}
    if "aggregator" not in info:
        raise ConfigError(f"{path} holds no aggregator; give the aggregator.ckpt of an ecg_lab.aggregate run")

    def build() -> nn.Module:
        return instantiate_node(OmegaConf.create(info["aggregator"]))  # its _target_ and build arguments

    members = int(info.get("members", 1))
    model = build() if members == 1 else AggregatorEnsemble([build() for _ in range(members)])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), info
