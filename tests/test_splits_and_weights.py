"""Record-level stratified splits (no leakage) and class weights from the training windows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ecg_lab.app.outputs import RunOutputs
from ecg_lab.classification.datamodule import ECGWindowDataModule
from ecg_lab.data.splits import assign_splits
from tests.helpers import write_dataset


def ids(n: int, prefix: str = "A") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(1, n + 1)]


def stratified_split(labels: np.ndarray, fractions=(0.7, 0.15, 0.15), seed: int = 42) -> np.ndarray:
    return assign_splits(ids(len(labels)), labels, fractions, seed)[0]


def kfold_split(labels: np.ndarray, folds: int, fold: int, fractions=(0.7, 0.15, 0.15), seed: int = 42):
    return assign_splits(ids(len(labels)), labels, fractions, seed, folds, fold)[0]


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


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {r for r in before.keys() & after.keys() if before[r] != after[r]}


@pytest.mark.parametrize("seed", [42, 1, 123])
@pytest.mark.parametrize("folds", [None, 5])
def test_adding_or_removing_one_record_moves_only_its_class_boundary(seed: int, folds: int | None) -> None:
    """A record added or removed changes no record of another class, and at most the record at each
    cut of its own class (two cuts for train/val/test; with k-fold, the fold cuts too)."""
    rng = np.random.default_rng(seed)
    records = [f"A{i:05d}" for i in rng.choice(99999, size=400, replace=False)]
    labels = rng.choice(list("NAO~"), size=400, p=[0.6, 0.1, 0.25, 0.05])
    label_of = dict(zip(records, labels, strict=True))
    cuts = 2 if folds is None else folds + 1

    def split_map(recs: list[str]) -> dict[str, str]:
        splits, _ = assign_splits(recs, [label_of[r] for r in recs], seed=seed, folds=folds, fold=1)
        return dict(zip(recs, splits, strict=True))

    base = split_map(records)
    for i in rng.choice(len(records), size=25, replace=False):
        removed = records[:i] + records[i + 1 :]
        changed = _changed(base, split_map(removed))
        assert {label_of[r] for r in changed} <= {label_of[records[i]]}
        assert len(changed) <= cuts
    for k in range(25):
        new = f"B{k:05d}"
        label_of[new] = str(rng.choice(list("NAO~")))
        changed = _changed(base, split_map([*records[:k], new, *records[k:]]))
        assert {label_of[r] for r in changed} <= {label_of[new]}
        assert len(changed) <= cuts


def test_a_skipped_record_moves_no_other(tmp_path: Path) -> None:
    """Splits are assigned over REFERENCE.csv before reading, so skipping a bad record changes nothing."""
    labels = {f"A{i:05d}": "NNNAOO~"[i % 7] for i in range(1, 43)}
    root = write_dataset(tmp_path / "d", labels, n=6000)
    clean = ECGWindowDataModule(root, cache_dir=tmp_path / "c1")
    clean.setup()
    (root / "A00010.mat").write_bytes(b"broken")
    skipping = ECGWindowDataModule(root, cache_dir=tmp_path / "c2", on_bad_record="skip")
    skipping.setup()
    before, after = clean.manifest.split_of(), skipping.manifest.split_of()
    assert set(before) - set(after) == {("physionet2017", "A00010")}
    assert all(before[k] == v for k, v in after.items())


@pytest.fixture
def datamodule(tmp_path: Path) -> ECGWindowDataModule:
    labels = {f"A{i:05d}": "NNNAOO~"[i % 7] for i in range(1, 43)}
    root = write_dataset(tmp_path / "d", labels, n=6000)
    dm = ECGWindowDataModule(root, cache_dir=tmp_path / "cache", batch_size=8)
    dm.setup()
    RunOutputs(tmp_path / "run").data_files(dm)
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
    assert len(rows) == 42 and list(rows[0]) == ["source", "record", "label", "split"]
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


# -- stratified k-fold by record ----------------------------------------------------------------

KFOLD_COUNTS = [203, 41, 100, 22]  # uneven, so folds differ by one record in some classes
KFOLD_LABELS = np.repeat([0, 1, 2, 3], KFOLD_COUNTS)


def test_kfold_test_sets_partition_the_records() -> None:
    tests = [kfold_split(KFOLD_LABELS, 5, k) == "test" for k in range(5)]
    assert (np.sum(tests, axis=0) == 1).all()  # disjoint, and every record once


def test_kfold_test_sets_are_stratified() -> None:
    per_fold = np.array(
        [np.bincount(KFOLD_LABELS[kfold_split(KFOLD_LABELS, 5, k) == "test"], minlength=4) for k in range(5)]
    )
    assert (per_fold.max(axis=0) - per_fold.min(axis=0) <= 1).all()
    assert (per_fold.sum(axis=0) == KFOLD_COUNTS).all()


@pytest.mark.parametrize("fold", range(5))
def test_kfold_train_val_split_the_rest_in_proportion(fold: int) -> None:
    parts = kfold_split(KFOLD_LABELS, 5, fold, (0.7, 0.15, 0.15))
    assert set(parts) == {"train", "val", "test"}  # one name per record: the three partition them
    for cls in range(4):
        p = parts[KFOLD_LABELS == cls]
        rest = (p != "test").sum()
        assert (p == "train").sum() + (p == "val").sum() == rest
        assert abs((p == "val").sum() - 0.15 / 0.85 * rest) <= 0.5 + 1e-9


def test_kfold_is_reproducible_and_seeded() -> None:
    a = kfold_split(KFOLD_LABELS, 5, 2, seed=7)
    assert np.array_equal(a, kfold_split(KFOLD_LABELS, 5, 2, seed=7))
    assert not np.array_equal(a, kfold_split(KFOLD_LABELS, 5, 2, seed=8))


@pytest.mark.parametrize(
    ("folds", "fold", "key"),
    [
        (1, 0, "folds"),
        (0, 0, "folds"),
        (2.5, 0, "folds"),
        ("5", 0, "folds"),
        (5, 5, "fold"),
        (5, -1, "fold"),
        (5, 1.0, "fold"),
        (5, "1", "fold"),
    ],
)
def test_bad_kfold_values_name_the_config_key(folds: object, fold: object, key: str) -> None:
    pattern = rf"^data\.{key}\b"
    with pytest.raises(ValueError, match=pattern):
        kfold_split(KFOLD_LABELS, folds, fold)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=pattern):  # the datamodule checks before any work
        ECGWindowDataModule("unused", folds=folds, fold=fold)  # type: ignore[arg-type]


def test_kfold_config_keys_reach_the_datamodule(train_cfg) -> None:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    dm = instantiate(train_cfg("data.folds=5", "data.fold=3").data)
    assert (dm.folds, dm.fold) == (5, 3)
    with pytest.raises(InstantiationException, match=r"data\.fold must"):
        instantiate(train_cfg("data.folds=5", "data.fold=5").data)


@pytest.fixture(scope="module")
def kfold_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """42 records (N, A, O, ~ in 3:1:2:1), and one preprocessing cache for every fold."""
    tmp = tmp_path_factory.mktemp("kfold")
    labels = {f"A{i:05d}": "NNNAOO~"[i % 7] for i in range(1, 43)}
    return write_dataset(tmp / "d", labels, n=6000), tmp / "cache"


def test_kfold_datamodule_writes_the_folds_split(kfold_dataset: tuple[Path, Path], tmp_path: Path) -> None:
    root, cache = kfold_dataset
    test_records: list[set[str]] = []
    for k in range(5):
        run = tmp_path / f"fold{k}"
        dm = ECGWindowDataModule(root, cache_dir=cache, batch_size=8, folds=5, fold=k)
        dm.setup()
        RunOutputs(run).data_files(dm)
        rows = list(csv.DictReader((run / "split.csv").open()))
        assert len(rows) == 42
        expected, folds = assign_splits(
            [r["record"] for r in rows], [r["label"] for r in rows], dm.split_fractions, dm.split_seed, 5, k
        )
        assert [r["split"] for r in rows] == expected.tolist()
        assert [int(r["fold"]) for r in rows] == folds.tolist()
        test_records.append({r["record"] for r in rows if r["split"] == "test"})
        # no record has windows in two splits, and each split's windows are its records'
        ids = dm.record_ids()
        seen = {part: {ids[r] for r in ds.records.tolist()} for part, ds in dm.datasets.items()}
        assert all(seen.values())
        assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
        assert seen["test"] == test_records[-1]
    assert sum(len(s) for s in test_records) == 42 and len(set().union(*test_records)) == 42
