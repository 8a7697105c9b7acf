"""The train/val/test DataLoaders every ecg_lab datamodule builds the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from ecg_lab.data.records import SkippedRecord
from ecg_lab.data.splits import SplitManifest


class SplitLoaders:
    """Mixin for a LightningDataModule whose ``setup()`` fills ``self.datasets`` (train/val/test),
    ``self.manifest`` (the split it used) and ``self.skipped``, and which has ``name``, ``batch_size``,
    ``num_workers`` and ``pin_memory``."""

    datasets: dict[str, Dataset[Any]]
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

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        self.setup()  # type: ignore[attr-defined]
        if len(self.datasets[part]) == 0:  # type: ignore[arg-type]
            raise ValueError(
                f"data {self.name}: no {part} windows; check the split settings (data.split_fractions, "
                "data.folds, the sources' folds) and data.window"
            )
        return DataLoader(
            self.datasets[part],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
