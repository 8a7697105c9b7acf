"""The train/val/test DataLoaders every ecg_lab datamodule builds the same way; items of different
lengths (whole recordings) are batched through a :class:`Batching` and :func:`pad_collate`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ecg_lab.data.records import SkippedRecord
from ecg_lab.data.sampling import EpochShuffle
from ecg_lab.data.splits import SplitManifest
from ecg_lab.errors import ConfigError


def pad_collate(items: Sequence[tuple[Any, ...]]) -> list[Any]:
    """A batch of items ``(x[C, T_i], *rest)``: each ``x`` zero-padded at the end to the longest ``T_i``
    (the items' ``lengths`` input tells the network how many are valid), the rest collated as usual."""
    longest = max(int(item[0].shape[-1]) for item in items)
    x = items[0][0].new_zeros((len(items), *items[0][0].shape[:-1], longest))
    for i, item in enumerate(items):
        x[i, ..., : item[0].shape[-1]] = item[0]
    return [x, *default_collate([tuple(item[1:]) for item in items])]


class Batching(Protocol):
    """How a datamodule's items other than fixed-length windows are sampled and batched."""

    #: what an item is, in messages ("recordings")
    ITEMS: str

    def training_sampler(self, n: int, seed: int) -> Sampler:
        """The training order of ``n`` items, from ``(seed, epoch)`` alone."""
        ...

    def collate(self, items: Sequence[tuple[Any, ...]]) -> Any:
        """A batch of ``items``: the collate function of every split's loader."""
        ...


class SplitLoaders:
    """Mixin for a LightningDataModule whose ``setup()`` fills ``self.datasets`` (train/val/test),
    ``self.manifest`` (the split it used) and ``self.skipped``, and which has ``name``, ``batch_size``,
    ``num_workers`` and ``pin_memory``; ``batching`` (None: windows, each batch one shape) says how
    items of other lengths are sampled and padded."""

    datasets: dict[str, Dataset[Any]]
    batching: Batching | None = None
    name: str
    batch_size: int
    num_workers: int
    pin_memory: bool

    def keep_run_settings(
        self,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        on_bad_record: str,
        cache_dir: str | Path | None,
        name: str,
        manifest: str | Path | None = None,
    ) -> None:
        """The loading, bad-record, folder and fixed-split settings every ecg_lab datamodule keeps."""
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.on_bad_record = on_bad_record
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.name = name
        self.given_manifest = SplitManifest.read_csv(manifest) if manifest is not None else None
        self.manifest: SplitManifest | None = None  # the split setup() used
        self.skipped: list[SkippedRecord] = []

    def use_manifest(self, manifest: SplitManifest) -> None:
        """Take every record's split from ``manifest`` (e.g. a checkpoint's own) instead of assigning it."""
        if self.datasets:
            raise RuntimeError("use_manifest() must come before setup()")
        self.given_manifest = manifest

    def _unpadded_sampler(self, part: str) -> Sampler | None:
        """Under DDP, the ``part`` items shared out between the ranks without padding, so val/test metrics
        count each window (or recording) once (Lightning's DistributedSampler repeats items to even the
        ranks out);
        None outside DDP. Ranks may run one batch apart: the eval steps hold no collective operation but
        DDP's buffer broadcast in the first batch, which every rank runs."""
        trainer = getattr(self, "trainer", None)
        kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
        if not kwargs or kwargs.get("num_replicas", 1) < 2:
            return None
        n, ranks = len(self.datasets[part]), kwargs["num_replicas"]  # type: ignore[arg-type]
        if n < ranks:
            raise ConfigError(
                f"data {self.name}: {n} {part} {self.item_kind} for {ranks} DDP ranks, and every rank needs "
                "one; use fewer trainer.devices or give the split more records (data.split_fractions)"
            )
        return UnrepeatedDistributedSampler(self.datasets[part], shuffle=False, **kwargs)

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        self.setup()  # type: ignore[attr-defined]
        if len(self.datasets[part]) == 0:  # type: ignore[arg-type]
            raise ValueError(
                f"data {self.name}: no {part} {self.item_kind}; check the split settings "
                "(data.split_fractions, data.folds, the sources' folds) and data.window"
            )
        dataset = self.datasets[part]
        # training order from (seed, epoch); the loader's own generator draws the worker seeds, so
        # neither touches torch's global generator (resumed runs repeat uninterrupted ones)
        seed = torch.initial_seed() % 2**63  # an unseeded process's is a 64-bit unsigned number
        batching = self.batching
        if shuffle:
            order = batching.training_sampler if batching is not None else EpochShuffle
            sampler = order(len(dataset), seed)  # type: ignore[arg-type]
        else:
            sampler = self._unpadded_sampler(part)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=batching.collate if batching is not None else None,
            generator=torch.Generator().manual_seed(seed),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    @property
    def item_kind(self) -> str:
        """What an item is, in messages: windows, or what ``batching`` serves."""
        return self.batching.ITEMS if self.batching is not None else "windows"

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
