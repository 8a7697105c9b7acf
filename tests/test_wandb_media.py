"""wandb dashboards worth opening, read back from what an OFFLINE run wrote (no network).

A run with ``logger=wandb`` writes ``<run>/wandb/offline-run-*/run-*.wandb`` (the protobuf records that
``wandb sync`` uploads, read with ``tests.test_sweeps.wandb_records``) and the media files under
``offline-run-*/files/``. The tests train tiny models in process and check that the classifier's run holds
its figures, the test recordings' confusion matrix (a wandb chart whose table matches
``test_metrics.json``), its worst recordings explained, the test metrics in the summary and, on request,
the best checkpoint as a ``model`` artifact; that a VAE's run holds its reconstructions and generated
ECGs; that a failing wandb call is a warning and the run completes; and that ``ecg_lab.report --wandb``
logs the results table as a ``wandb.Table`` in the sweep's group.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecg_lab import report
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.test_report import make_run
from tests.test_sweeps import wandb_records
from tests.test_waveforms import SMALL_NORMAL

TINY = ["trainer=cpu", "logger=wandb", "callbacks.progress.interactive=false", "trainer.max_epochs=1"]
CLASSIFIER = [*TINY, *SMALL_SYNTHETIC, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
VAE = [
    *TINY, "experiment=lstm_vae", *SMALL_NORMAL, "model.fidelity.n_generated=4",
    "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
]  # fmt: skip
MEDIA_LOG = "ecg_lab.callbacks.wandb_media"
ITEMS = {"history": "item", "summary": "update", "config": "update"}  # the repeated field of each record


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """wandb offline and quiet, its caches and artifact staging in a temporary folder (module scope:
    conftest's own settings are per test)."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
            mp.setenv(key, str(home))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CONSOLE", "off")
        yield


def offline_run(folder: Path, wait_s: float = 60.0) -> tuple[list[Any], Path]:
    """The records of the one offline run under ``folder/wandb`` and its ``files`` folder. wandb's
    service process writes the transaction log on its own, and on busy cores it can still be writing
    after ``finish()`` returns: wait (at most ``wait_s``) for the run record every log holds."""
    (run_dir,) = (folder / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + wait_s

    def read() -> list[Any]:
        return wandb_records(log) if log.stat().st_size >= 7 else []  # 7: the header

    records = read()
    while not of_kind(records, "run") and time.monotonic() < deadline:
        time.sleep(0.5)
        records = read()
    return records, run_dir / "files"


def values(records: list[Any], kind: str) -> dict[str, Any]:
    """The ``history`` rows, ``summary`` updates or ``config`` updates merged into one dict (later
    values win; nested keys become nested dicts)."""
    out: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") != kind:
            continue
        for item in getattr(getattr(r, kind), ITEMS[kind]):
            path = [item.key] if item.key else list(item.nested_key)
            node = out
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = json.loads(item.value_json)
    return out


def of_kind(records: list[Any], kind: str) -> list[Any]:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def worst_in_predictions(run_dir: Path, n: int) -> list[str]:
    """The ``n`` rows of ``predictions.csv`` (uncalibrated run) predicted wrong with the highest
    probability of the predicted class, in that order."""
    with (run_dir / "predictions.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] != r["predicted"]]
    return [r["record"] for r in sorted(rows, key=lambda r: -float(r[f"prob_{r['predicted']}"]))][:n]


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, offline_env: None) -> Path:
    """A tiny classifier trained and tested with logger=wandb and the best checkpoint uploaded."""
    out = tmp_path_factory.mktemp("classifier")
    train(compose_config("train", [*CLASSIFIER, "callbacks.wandb_media.log_checkpoint=true"], out, cache_dir))
    return out


def test_classifier_run_logs_its_figures_confusion_matrix_and_worst_recordings(classifier_run: Path) -> None:
    records, files = offline_run(classifier_run)
    history = values(records, "history")
    for name in ("training_curves", "confusion_matrix", "confusion_matrix_records"):
        image = history[f"figures/{name}"]
        assert image["_type"] == "image-file" and (files / image["path"]).is_file(), name
    # the test recordings' confusion matrix: a wandb chart over a table of (true, predicted, count)
    chart = values(records, "config")["_wandb"]["visualize"]["confusion_matrix"]
    assert chart["panel_config"]["panelDefId"].startswith("wandb/confusion_matrix")
    table = json.loads((files / history["confusion_matrix_table"]["path"]).read_text())
    metrics = json.loads((classifier_run / "test_metrics.json").read_text())
    classes = metrics["classes"]
    counts = [[0] * len(classes) for _ in classes]
    for actual, predicted, n in table["data"]:
        counts[classes.index(actual)][classes.index(predicted)] = n
    assert counts == metrics["record_confusion_matrix"]
    # the worst test recordings, explained, in the order ecg_lab.explain worst=3 would draw them
    explained = history["explanations"]
    expected = worst_in_predictions(classifier_run, 3)
    assert expected and [c.split(":")[0] for c in explained["captions"]] == expected
    assert explained["count"] == len(expected) and all((files / f).is_file() for f in explained["filenames"])


def test_classifier_run_summary_holds_the_test_metrics_and_the_best_checkpoint(classifier_run: Path) -> None:
    records, _ = offline_run(classifier_run)
    summary = values(records, "summary")
    metrics = json.loads((classifier_run / "test_metrics.json").read_text())
    for key in (
        "official_f1",
        "F1_A",
        "f1",
        "auroc",
        "official_f1_ci",
        "n_records",
    ):
        assert summary[f"test/{key}"] == pytest.approx(metrics[key]), key
    assert summary["test/record_confusion_matrix"] == metrics["record_confusion_matrix"]
    (artifact,) = of_kind(records, "artifact")[-1:]  # the confusion matrix's table is an artifact too
    assert artifact.type == "model" and "best" in artifact.aliases
    assert [e.path for e in artifact.manifest.contents] == [Path(metrics["ckpt_path"]).name]
    assert [e.exit_code for e in of_kind(records, "exit")] == [0]


def test_vae_run_logs_reconstructions_and_generated_ecgs(
    tmp_path: Path, cache_dir: Path, offline_env: None
) -> None:
    train(compose_config("train", VAE, tmp_path / "vae", cache_dir))
    records, files = offline_run(tmp_path / "vae")
    history = values(records, "history")
    for name in ("reconstructions", "generated", "training_curves"):
        assert (files / history[f"figures/{name}"]["path"]).is_file(), name
    assert "explanations" not in history and "confusion_matrix_table" not in history  # a classifier's
    metrics = json.loads((tmp_path / "vae" / "test_metrics.json").read_text())
    summary = values(records, "summary")
    assert summary["test/rpeak_recall"] == pytest.approx(metrics["rpeak_recall"])
    assert summary["test/mmd"] == pytest.approx(metrics["mmd"])
    assert not of_kind(records, "artifact")  # callbacks.wandb_media.log_checkpoint is off by default


def test_a_failing_wandb_call_is_a_warning_and_the_run_completes(
    tmp_path: Path, cache_dir: Path, offline_env: None, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import wandb

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("media upload refused\nsecond line of the reason")

    monkeypatch.setattr(wandb, "Image", broken)
    monkeypatch.setattr(wandb.plot, "confusion_matrix", broken)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger=MEDIA_LOG):
        train(compose_config("train", [*CLASSIFIER, "trainer.limit_train_batches=1"], out, cache_dir))
    assert json.loads((out / "run_status.json").read_text())["status"] == "completed"
    warnings = [r.getMessage() for r in caplog.records if r.name == MEDIA_LOG]
    assert any("the confusion matrix" in w for w in warnings) and any("figure" in w for w in warnings)
    assert all("RuntimeError: media upload refused" in w and "\n" not in w for w in warnings), warnings
    records, _ = offline_run(out)
    assert "test/official_f1" in values(records, "summary")  # the parts that work are still logged


def test_report_logs_its_results_table_to_wandb_offline(tmp_path: Path, offline_env: None) -> None:
    sweep = tmp_path / "multirun" / "2026-11-21" / "10-00-00-000001_train"
    for i, seed in enumerate((1, 2)):
        make_run(
            sweep / f"{i}_seed={seed}", model="gru", overrides=[f"seed={seed}"], seed=seed, f1=0.6 + i / 10
        )
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # what Hydra leaves in a sweep's folder
    assert report.main([str(sweep), "--wandb", "ecg_lab_reports"]) == 0
    records, files = offline_run(sweep)
    (info,) = of_kind(records, "run")
    assert (info.project, info.job_type, info.run_group) == (
        "ecg_lab_reports",
        "report",
        "2026-11-21_10-00-00-000001_train",
    )
    history = values(records, "history")
    table = json.loads((files / history["results_table"]["path"]).read_text())
    with (sweep / "results_table.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert table["columns"] == rows[0] and len(table["data"]) == len(rows) - 1 == 1
    assert (files / history["figures/results_f1"]["path"]).is_file()
