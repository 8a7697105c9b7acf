"""Record-level stratified splits (no leakage) and class weights from the training windows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ecg_lab.data.datamodule import ECGWindowDataModule
from ecg_lab.data.splits import stratified_split
from tests.helpers import write_dataset


def test_split_is_stratified_reproducible_and_seeded() -> None:
    labels = np.repeat([0, 1, 2, 3], [200, 40, 100, 20])
    a = stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    assert np.array_equal(a, stratified_split(labels, (0.7, 0.15, 0.15), seed=1))
    assert not np.array_equal(a, stratified_split(labels, (0.7, 0.15, 0.15), seed=2))
    for cls, n in zip(range(4), [200, 40, 100, 20], strict=True):
        parts = a[labels == cls]
        assert (parts == "train").sum() == round(0.7 * n)
        assert (parts == "val").sum() == round(0.15 * n)


def test_bad_fractions_are_rejected() -> None:
    with pytest.raises(ValueError, match="split_fractions"):
        stratified_split(np.zeros(10, dtype=int), (0.8, 0.3, 0.1))


@pytest.fixture
def datamodule(tmp_path: Path) -> ECGWindowDataModule:
    labels = {f"A{i:05d}": "NNNAOO~"[i % 7] for i in range(1, 43)}
    root = write_dataset(tmp_path / "d", labels, n=6000)
    dm = ECGWindowDataModule(root, cache_dir=tmp_path / "cache", run_dir=tmp_path / "run", batch_size=8)
    dm.setup()
    return dm


def test_no_record_has_windows_in_two_splits(datamodule: ECGWindowDataModule) -> None:
    seen = {part: set(ds.records.tolist()) for part, ds in datamodule.datasets.items()}
    assert seen["train"] and seen["val"] and seen["test"]
    assert (
        not (seen["train"] & seen["val"])
        and not (seen["train"] & seen["test"])
        and not (seen["val"] & seen["test"])
    )
    # and what batches carry agrees: every window of a batch belongs to a record of that split
    for part in ("train", "val", "test"):
        loader = getattr(datamodule, f"{part}_dataloader")()
        batch_records = set(np.concatenate([b[2].numpy() for b in loader]).tolist())
        assert batch_records == seen[part]


def test_split_csv_written_to_run_folder(datamodule: ECGWindowDataModule, tmp_path: Path) -> None:
    rows = list(csv.DictReader((tmp_path / "run" / "split.csv").open()))
    assert len(rows) == 42 and set(rows[0]) == {"record", "label", "split"}
    by_split = {r["record"]: r["split"] for r in rows}
    ids = datamodule.record_ids()
    for part, ds in datamodule.datasets.items():
        assert {by_split[ids[r]] for r in ds.records} == {part}


def test_class_weights_are_inverse_frequency_of_training_windows(
    datamodule: ECGWindowDataModule, tmp_path: Path
) -> None:
    counts = np.bincount(datamodule.datasets["train"].labels, minlength=4)
    expected = counts.sum() / (4 * counts)
    assert np.allclose(datamodule.class_weights(), expected)
    assert datamodule.class_weights()[3] > datamodule.class_weights()[0]  # rarer class, larger weight
    logged = json.loads((tmp_path / "run" / "class_weights.json").read_text())
    assert np.allclose(list(logged.values()), expected)


def test_split_all_puts_every_record_in_test(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", {"A00001": "N", "A00002": "A"})
    dm = ECGWindowDataModule(root, split="all", cache_dir=None)
    dm.setup()
    assert len(dm.datasets["train"]) == 0 and len(dm.datasets["test"]) == 2 * 5


def test_window_dataset_pickles_cache_as_path_for_spawned_workers(datamodule: ECGWindowDataModule) -> None:
    import pickle

    fresh = ECGWindowDataModule(datamodule.record_root(), cache_dir=datamodule.cache_dir, batch_size=8)
    fresh.setup()  # loaded from the cache: signals are a memory map
    ds = fresh.datasets["train"]
    assert isinstance(ds.prepared.signals, np.memmap)
    blob = pickle.dumps(ds)
    assert len(blob) < ds.prepared.signals.nbytes / 4  # not a copy of the signals
    clone = pickle.loads(blob)
    x, y, r = clone[3]
    x0, y0, r0 = ds[3]
    assert (x == x0).all() and (y, r) == (y0, r0)
