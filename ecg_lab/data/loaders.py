"""The train/val/test DataLoaders every ecg_lab datamodule builds the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset


class SplitLoaders:
    """Mixin for a LightningDataModule whose ``setup()`` fills ``self.datasets`` (train/val/test) and
    which has ``name``, ``batch_size``, ``num_workers`` and ``pin_memory``."""

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
        run_dir: str | Path | None,
        name: str,
    ) -> None:
        """The loading, bad-record and folder settings every ecg_lab datamodule keeps."""
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.on_bad_record = on_bad_record
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.name = name

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
