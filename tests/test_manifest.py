"""The split is written once and read back: the manifest in the run folder and the checkpoint,
evaluation on a checkpoint's own split, and one assignment rule for both workflows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import hydra
import pytest
import torch

from ecg_lab.app.checkpoints import stored_manifest
from ecg_lab.classification.datamodule import ECGWindowDataModule
from ecg_lab.data.physionet2017 import link_subset
from ecg_lab.data.splits import ManifestMismatchError, SplitManifest
from ecg_lab.eval import evaluate
from ecg_lab.generation.sources import PhysioNet2017Source
from ecg_lab.train import train
from tests.conftest import SHARED_PN2017, SMALL_SYNTHETIC, compose_config
from tests.test_train_eval import SHORT

BASE = ["trainer=cpu", *SMALL_SYNTHETIC, *SHORT, "callbacks.progress.interactive=false"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A short classifier run on the synthetic data; its run folder."""
    out = tmp_path_factory.mktemp("manifest_run")
    train(compose_config("train", BASE, out, cache_dir))
    return out


@pytest.fixture(scope="module")
def data_copy(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real copy of the run's synthetic dataset (files, not links), to damage."""
    cfg = json.loads(json.dumps(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["ecg_lab"]))
    dm = hydra.utils.instantiate(cfg["config"]["data"])
    src = dm.record_root()
    dest = tmp_path_factory.mktemp("copy") / "training2017"
    shutil.copytree(src, dest)
    return dest


def test_the_checkpoint_stores_the_run_folders_manifest(run: Path) -> None:
    rows = read_rows(run / "split.csv")
    assert list(rows[0]) == ["source", "record", "label", "split"] and len(rows) == 48
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        manifest = stored_manifest(torch.load(ckpt, map_location="cpu", weights_only=True))
        assert manifest is not None
        assert manifest == SplitManifest.read_csv(run / "split.csv"), ckpt.name


def test_eval_reads_the_checkpoints_own_split(run: Path, tmp_path: Path, cache_dir: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "trainer=cpu"], tmp_path, cache_dir))
    trained = read_rows(run / "split.csv")
    assert read_rows(tmp_path / "split.csv") == trained
    results = json.loads((tmp_path / "test_metrics.json").read_text())
    assert results["n_records"] == sum(r["split"] == "test" for r in trained)


def test_eval_keeps_the_split_when_the_data_gains_records(
    run: Path, data_copy: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """Records added to the data are not assigned anew: the manifest's records keep their splits."""
    grown = tmp_path / "grown"
    shutil.copytree(data_copy, grown)
    reference = (grown / "REFERENCE.csv").read_text()
    first = reference.splitlines()[0].split(",")[0]
    for i in range(5):  # five more records, copies of the first under new names
        for ext in (".mat", ".hea"):
            text = (grown / f"{first}{ext}").read_bytes()
            new = f"B{i:05d}"
            (grown / f"{new}{ext}").write_bytes(text.replace(first.encode(), new.encode()))
        reference += f"B{i:05d},N\n"
    (grown / "REFERENCE.csv").write_text(reference)
    ckpt = run / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt_path={ckpt}", "trainer=cpu", "data=physionet2017", f"data.root={grown}"]
    evaluate(compose_config("eval", overrides, tmp_path / "eval", cache_dir))
    assert read_rows(tmp_path / "eval" / "split.csv") == read_rows(run / "split.csv")


@pytest.mark.parametrize("damage", ["missing", "unreadable"])
def test_a_record_the_manifest_names_must_be_there(
    run: Path, data_copy: Path, tmp_path: Path, cache_dir: Path, damage: str
) -> None:
    victim = next(r["record"] for r in read_rows(run / "split.csv") if r["split"] == "test")
    damaged = tmp_path / "damaged"
    shutil.copytree(data_copy, damaged)
    if damage == "missing":
        lines = (damaged / "REFERENCE.csv").read_text().splitlines()
        kept = [ln for ln in lines if not ln.startswith(victim)]
        (damaged / "REFERENCE.csv").write_text("".join(f"{ln}\n" for ln in kept))
    else:
        (damaged / f"{victim}.mat").write_bytes(b"not a MATLAB file")
    overrides = [
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "trainer=cpu",
        "data=physionet2017",
        f"data.root={damaged}",
        "data.on_bad_record=skip",
    ]
    with pytest.raises(ManifestMismatchError, match=rf"{victim}.*data\.split=all"):
        evaluate(compose_config("eval", overrides, tmp_path / "eval", cache_dir))
    assert not (tmp_path / "eval" / "test_metrics.json").exists()


def test_a_checkpoint_without_a_manifest_is_an_error_not_a_re_split(
    run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["ecg_lab"]["split"] = None  # as written before 0.2
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(ValueError, match=r"stores no split manifest.*data\.manifest="):
        evaluate(compose_config("eval", [f"ckpt_path={old}", "trainer=cpu"], tmp_path / "eval", cache_dir))
    # the run folder's split.csv serves instead
    overrides = [f"ckpt_path={old}", "trainer=cpu", "data=synthetic", *SMALL_SYNTHETIC[:4]]
    overrides.append(f"data.manifest={run / 'split.csv'}")
    evaluate(compose_config("eval", overrides, tmp_path / "eval2", cache_dir))
    assert read_rows(tmp_path / "eval2" / "split.csv") == read_rows(run / "split.csv")


def test_manifest_csv_round_trip_and_bad_files(tmp_path: Path) -> None:
    m = SplitManifest.build("physionet2017", ["A1", "A2"], ["N", "A"], ["train", "test"], [0, 1])
    assert SplitManifest.read_csv(m.write_csv(tmp_path / "split.csv")) == m
    assert SplitManifest.from_dict(m.to_dict()) == m
    (tmp_path / "bad.csv").write_text("record,label\nA1,N\n")
    with pytest.raises(ValueError, match="not a split manifest"):
        SplitManifest.read_csv(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="split manifest"):
        SplitManifest.read_csv(tmp_path / "none.csv")


# -- one assignment rule for both workflows ---------------------------------------------------------
def _classifier_and_generator_splits(root: Path, cache: Path) -> tuple[dict[str, str], dict[str, str]]:
    clf = ECGWindowDataModule(root, cache_dir=cache)
    clf.setup()
    classifier = {r: s for (_, r), s in clf.manifest.split_of().items()}
    generator = {r: s for r, _, s in PhysioNet2017Source(root=root, labels=["N"])._rows[1]}
    return classifier, generator


def _check_no_leak(classifier: dict[str, str], generator: dict[str, str]) -> None:
    assert generator and set(generator) <= set(classifier)
    assert all(generator[r] == classifier[r] for r in generator)  # the same split, record by record
    held_out = {r for r, s in classifier.items() if s == "test"}
    assert not held_out & {r for r, s in generator.items() if s == "train"}


def test_both_workflows_split_physionet2017_alike_on_the_synthetic_data(run: Path, tmp_path: Path) -> None:
    root = hydra.utils.instantiate(
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["ecg_lab"]["config"]["data"]
    ).record_root()
    _check_no_leak(*_classifier_and_generator_splits(root, tmp_path / "cache"))


@pytest.mark.skipif(not SHARED_PN2017.is_dir(), reason="needs ../shared/data/physionet2017")
def test_both_workflows_split_physionet2017_alike_on_the_shared_data(tmp_path: Path) -> None:
    root = link_subset(SHARED_PN2017, tmp_path / "subset", 300)
    classifier, generator = _classifier_and_generator_splits(root, tmp_path / "cache")
    _check_no_leak(classifier, generator)
    assert len(generator) > 100
