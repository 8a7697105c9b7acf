"""Whole recordings as items instead of 5-s windows (``data.recordings``; ``data=physionet2017_records``,
``data=synthetic_records``).

Training items are a crop of ``train_length`` samples of each training recording, its start drawn
from (run seed, epoch, record) by a generator of its own (:func:`crop_start`), never from torch's or
numpy's global one: a run resumed from a checkpoint crops as one that never stopped. The sampler
(:class:`EpochCrops`) carries the seed and epoch to the items, so worker processes need no state of
their own. A recording shorter than ``train_length`` is served whole. Validation and test items are
the full recordings, ordered by length so that a batch holds recordings of similar length. Each item
is ``(x[1, n], label, record, {"lengths": n})``; :func:`~ecg_lab.data.loaders.pad_collate` zero-pads a
batch to its longest item and the network (``CRNN.embed(x, lengths)``) ignores the padding. A
recording's prediction is then its one item's (the mean over its windows, with windows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig

from ecg_lab.app.checks import choice
from ecg_lab.classification.augment import stream_seed
from ecg_lab.classification.prepared import PreparedRecords
from ecg_lab.classification.windows import WindowDataset
from ecg_lab.data.loaders import pad_collate
from ecg_lab.data.sampling import EpochShuffle
from ecg_lab.edge.preprocess import Preprocessing
from ecg_lab.errors import ConfigError


class Draw(NamedTuple):
    """A training item's key: the item and the (seed, epoch) its crop is drawn from."""

    item: int
    seed: int
    epoch: int


def crop_start(n_samples: int, length: int, seed: int) -> int:
    """The start of a ``length``-sample crop of ``n_samples``, uniform over every possible start,
    drawn from a generator seeded with ``seed`` (0 when the recording is no longer than the crop)."""
    if n_samples <= length:
        return 0
    return int(np.random.default_rng(seed).integers(0, n_samples - length + 1))


class EpochCrops(EpochShuffle):
    """:class:`~ecg_lab.data.sampling.EpochShuffle`'s (seed, epoch) order, each item as a :class:`Draw`
    that tells the dataset which crop to cut."""

    def __iter__(self) -> Iterator[Draw]:  # type: ignore[override]
        return (Draw(i, self.seed, self.epoch) for i in super().__iter__())


class RecordingDataset(WindowDataset):
    """Whole recordings of the selected records, in the given order; item ``(x[1, n], label, record,
    {"lengths": n})``. ``crop``: the most samples an item holds, cut at :func:`crop_start` of the key's
    (seed, epoch) and the record (a plain index key: seed and epoch 0); None: the whole recording.
    Shares :class:`WindowDataset`'s pickling (a cached signal array travels as its path) and class
    counts (one label per recording)."""

    def __init__(self, prepared: PreparedRecords, record_indices: np.ndarray, crop: int | None) -> None:
        # not WindowDataset.__init__: no windows, one item per recording
        self.prepared = prepared
        self.crop = crop
        self.records = np.asarray(record_indices, dtype=np.int64)
        self.labels = prepared.labels[self.records]

    def __len__(self) -> int:
        return int(self.records.size)

    def __getitem__(  # type: ignore[override]
        self, key: int | Draw
    ) -> tuple[torch.Tensor, int, int, dict[str, int]]:
        i, seed, epoch = key if isinstance(key, tuple) else Draw(int(key), 0, 0)
        record = int(self.records[i])
        n_samples = int(self.prepared.lengths[record])
        n, start = n_samples, 0
        if self.crop is not None:
            n = min(n_samples, self.crop)
            start = crop_start(n_samples, self.crop, stream_seed(seed, epoch, record))
        begin = int(self.prepared.offsets[record]) + start
        x = torch.from_numpy(np.array(self.prepared.signals[begin : begin + n], dtype=np.float32))
        return x.unsqueeze(0), int(self.labels[i]), record, {"lengths": n}


class WholeRecordings:
    """``data.recordings``: the datamodule serves whole recordings, training ones cropped to
    ``train_length`` samples (at the data's rate after preprocessing; 9000 = 30 s at 300 Hz), and
    batches them padded (:class:`~ecg_lab.data.loaders.Batching`)."""

    ITEMS = "recordings"

    def __init__(self, train_length: int = 9000) -> None:
        self.train_length = train_length

    def check(self, preprocess: Preprocessing) -> None:
        """ConfigError naming ``data.recordings.train_length`` when it is shorter than the shortest
        recording kept (``data.preprocess.window``, the length the network is checked on)."""
        if self.train_length < preprocess.window:
            raise ConfigError(
                f"data.recordings.train_length={self.train_length} is shorter than "
                f"data.preprocess.window={preprocess.window} (the shortest recording kept, and the length "
                f"the network is checked on); set it to at least {preprocess.window} samples"
            )

    def dataset(self, part: str, prepared: PreparedRecords, record_indices: np.ndarray) -> RecordingDataset:
        """The ``part`` split's items: training recordings cropped; the others whole, by length."""
        if part == "train":
            return RecordingDataset(prepared, record_indices, self.train_length)
        by_length = np.argsort(prepared.lengths[record_indices], kind="stable")
        return RecordingDataset(prepared, np.asarray(record_indices)[by_length], None)

    def training_sampler(self, n: int, seed: int) -> EpochCrops:
        return EpochCrops(n, seed)

    def collate(self, items: Sequence[tuple[Any, ...]]) -> list[Any]:
        return pad_collate(items)


def check_augment(cfg: DictConfig) -> None:
    """ConfigError naming ``augment`` when it is on with whole recordings: its transforms treat a
    padded batch as one long window (noise and wander in the padding, stretch and crop across it)."""
    data = cfg.get("data")
    if cfg.get("augment") and data is not None and data.get("recordings"):
        raise ConfigError(
            f"augment={choice('augment', cfg.augment)} does not respect the padding of whole recordings "
            f"(data={choice('data', data)} sets data.recordings); use augment=none with it, or a window "
            "data config (data=physionet2017, data=synthetic) with augment"
        )
