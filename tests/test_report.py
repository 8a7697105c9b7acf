"""``ecg_lab.report`` on fabricated run folders: grouping, mean/std, failed runs, files, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ecg_lab.report import main
from ecg_lab.sweeps.results import aggregate, configuration_name, find_runs, write_report

CLASSES = ["N", "A", "O", "~"]


def make_run(
    folder: Path,
    model: str = "gru",
    overrides: list[str] | None = None,
    seed: int = 42,
    fold: int | None = None,
    f1: float | None = 0.7,
    status: str | None = "completed",
    error: str | None = None,
    epochs: int = 3,
) -> Path:
    """A run folder as a training job leaves it; ``f1=None`` means no ``test_metrics.json``."""
    (folder / ".hydra").mkdir(parents=True)
    cfg: dict[str, Any] = {
        "task_name": f"pn_{model}",
        "seed": seed,
        "model_name": "${hydra:runtime.choices.model}",  # as written by Hydra: unresolved
        "data": {"name": "physionet2017", "fold": fold, "folds": 5, "root": "${oc.env:ECG_LAB_DATA,data}"},
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    (folder / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": model}}}})
    )
    if f1 is not None:
        metrics = {
            "model_name": model,
            "data": "physionet2017",
            "seed": seed,
            "epochs": epochs,
            "wall_time_s": 120.0,
            "n_params": 1000,
            "classes": CLASSES,
            "f1": f1,
            "acc": f1 + 0.01,
            "auroc": f1 + 0.1,
            "official_f1": f1 - 0.02,
            **{f"sensitivity_{c}": f1 - 0.05 * i for i, c in enumerate(CLASSES)},
            **{f"specificity_{c}": 0.9 for c in CLASSES},
            "confusion_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
            "loss": 0.5,
        }
        (folder / "test_metrics.json").write_text(json.dumps(metrics))
    with (folder / "metrics_history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "step", "train/loss", "val/f1", "val/official_f1"])
        for e in range(epochs):
            writer.writerow([e, 10 * (e + 1), 1.0 / (e + 1), (f1 or 0.5) * (e + 1) / epochs, ""])
    if status is not None:
        payload = {
            "status": status,
            "error": error,
            "task_name": f"pn_{model}",
            "started": "2026-11-21T10:00:00",
            "ended": None if status == "running" else "2026-11-21T10:02:00",
            "wall_time_s": 120.0,
            "output_dir": str(folder),
        }
        (folder / "run_status.json").write_text(json.dumps(payload))
    return folder


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["configuration"]: r for r in rows}


def test_configuration_name_drops_repetition_and_path_keys() -> None:
    overrides = ["model=gru", "seed=3", "data.fold=2", "trainer.max_epochs=5", "paths.output_dir=/x",
                 "hydra.run.dir=/y", "data.root=/d", "+data.split_seed=1", "data=physionet2017"]  # fmt: skip
    assert configuration_name("gru", overrides) == "gru data=physionet2017 trainer.max_epochs=5"
    assert configuration_name("cnn", []) == "cnn"


def test_mean_std_across_seeds(tmp_path: Path) -> None:
    f1s = [0.70, 0.74, 0.69]
    for i, (seed, f1) in enumerate(zip([1, 42, 123], f1s, strict=True)):
        make_run(tmp_path / f"m/{i}", overrides=["model=gru", f"seed={seed}"], seed=seed, f1=f1)
    make_run(tmp_path / "single", model="cnn", overrides=["experiment=pn_cnn"], f1=0.8)
    runs = find_runs([tmp_path])
    assert len(runs) == 4
    rows = aggregate(runs)
    assert [r["configuration"] for r in rows] == ["cnn experiment=pn_cnn", "gru"]  # sorted by F1
    gru = by_name(rows)["gru"]
    assert gru["n_runs"] == 3 and gru["n_failed"] == 0 and gru["seeds"] == "1 42 123"
    assert gru["f1_mean"] == pytest.approx(np.mean(f1s))
    assert gru["f1_std"] == pytest.approx(np.std(f1s, ddof=1))
    assert gru["official_f1_mean"] == pytest.approx(np.mean(f1s) - 0.02)
    assert gru["sensitivity_O_mean"] == pytest.approx(np.mean(f1s) - 0.10)
    assert gru["wall_time_min"] == pytest.approx(2.0) and gru["epochs"] == 3 and gru["n_params"] == 1000
    cnn = by_name(rows)["cnn experiment=pn_cnn"]
    assert cnn["n_runs"] == 1 and cnn["f1_mean"] == pytest.approx(0.8) and math.isnan(cnn["f1_std"])
    assert aggregate(runs, sort="configuration")[0]["configuration"] == "cnn experiment=pn_cnn"


def test_grouping_across_folds_and_other_overrides(tmp_path: Path) -> None:
    for fold in range(5):
        make_run(tmp_path / f"cv/{fold}", overrides=["model=gru", f"data.fold={fold}"], fold=fold, f1=0.6)
    make_run(tmp_path / "short", overrides=["model=gru", "trainer.max_epochs=5"], f1=0.5)
    rows = by_name(aggregate(find_runs([tmp_path])))
    assert set(rows) == {"gru", "gru trainer.max_epochs=5"}
    assert rows["gru"]["n_runs"] == 5 and rows["gru"]["folds"] == "0 1 2 3 4"
    assert rows["gru"]["f1_std"] == pytest.approx(0.0)


def test_failed_and_corrupt_runs(tmp_path: Path) -> None:
    make_run(tmp_path / "a", seed=1, f1=0.7)
    make_run(tmp_path / "b", seed=2, f1=0.8)
    make_run(tmp_path / "c", seed=3, f1=None, status="failed", error="CUDA out of memory\ntraceback...")
    make_run(tmp_path / "d", seed=4, f1=None, status=None)  # old run, never finished
    corrupt = make_run(tmp_path / "e", seed=5, f1=0.1)
    (corrupt / "test_metrics.json").write_text("{not json")
    bad_status = make_run(tmp_path / "f", seed=6, f1=0.1)
    (bad_status / "run_status.json").write_text("")
    runs = {r.path.name: r for r in find_runs([tmp_path])}
    assert runs["a"].status == "completed" and runs["c"].status == "failed"
    assert runs["d"].error == "no test_metrics.json"
    assert "corrupt test_metrics.json" in runs["e"].error
    assert "corrupt run_status.json" in runs["f"].error
    row = aggregate(list(runs.values()))[0]
    assert row["n_runs"] == 2 and row["n_failed"] == 4 and row["seeds"] == "1 2"
    assert row["f1_mean"] == pytest.approx(0.75)
    paths = write_report(list(runs.values()), tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "2 (+4 failed)" in md and "0.750 ± 0.071" in md
    failed = md.split("## Failed runs")[1]
    assert "CUDA out of memory" in failed and "traceback" not in failed
    assert all(f"{tmp_path / name}" in failed for name in "cdef")


def test_running_run_is_not_counted(tmp_path: Path) -> None:
    make_run(tmp_path / "a", f1=0.7)
    make_run(tmp_path / "b", f1=None, status="running")
    row = aggregate(find_runs([tmp_path]))[0]
    assert row["n_runs"] == 1 and row["n_failed"] == 0 and row["n_running"] == 1


def test_two_dirs_combined_and_files_written(tmp_path: Path) -> None:
    make_run(tmp_path / "one/run", overrides=["model=gru", "seed=1"], seed=1, f1=0.6)
    make_run(tmp_path / "two/2026/run", overrides=["model=gru", "seed=2"], seed=2, f1=0.8)
    make_run(tmp_path / "two/2026/other", model="cnn", overrides=["model=cnn"], f1=0.9)
    runs = find_runs([tmp_path / "one", tmp_path / "two", tmp_path / "two/2026"])  # overlap counted once
    assert len(runs) == 3
    paths = write_report(runs, tmp_path / "out")
    assert {p.name for p in paths.values()} == {
        "results_table.csv",
        "results_table.md",
        "results_f1.png",
        "validation_curves.png",
        "report.html",
    }
    assert all(p.stat().st_size > 0 for p in paths.values())
    with paths["csv"].open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["configuration"] for r in table] == ["cnn", "gru"]
    assert table[1]["n_runs"] == "2" and table[1]["seeds"] == "1 2"
    assert float(table[1]["f1_mean"]) == pytest.approx(0.7)
    assert float(table[1]["f1_std"]) == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert table[0]["f1_std"] == ""  # one run: no std
    for col in ("model", "n_failed", "folds", "n_params", "epochs", "wall_time_min", "sensitivity_~_mean"):
        assert col in table[0]
    md = paths["markdown"].read_text()
    for header in ("test weighted F1", "AUROC", "accuracy", "official F1", "sens. N", "params", "runs"):
        assert header in md
    assert "| 0.900 |" in md


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "runs/a", f1=0.7, seed=1)
    make_run(tmp_path / "runs/b", f1=0.9, seed=2)
    assert main([str(tmp_path / "runs"), "--metric-key", "loss"]) == 0
    out = capsys.readouterr().out
    assert "0.800 ± 0.141" in out and "results_table.csv" in out
    assert (tmp_path / "runs/results_table.md").exists()
    with (tmp_path / "runs/results_table.csv").open(newline="") as fh:
        assert float(next(csv.DictReader(fh))["loss_mean"]) == pytest.approx(0.5)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere/validation_curves.png").exists()


def test_cli_errors_name_the_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SystemExit, match="nope"):
        main([str(missing)])
    (tmp_path / "empty/sub").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no run folders.*empty"):
        main([str(tmp_path / "empty")])


def test_ablation_columns_and_hardware(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--metrics`` picks the columns (the issue-13 ablation table); the hardware runs used is shown."""
    for i, seed in enumerate((1, 2)):
        run = make_run(tmp_path / f"runs/{seed}", f1=0.7, seed=seed)
        metrics = json.loads((run / "test_metrics.json").read_text())
        metrics |= {"F1_N": 0.8 + 0.1 * i, "F1_A": 0.6, "F1_O": 0.5, "hardware": "cpu: AMD EPYC, 1 thread"}
        (run / "test_metrics.json").write_text(json.dumps(metrics))
    assert main([str(tmp_path / "runs"), "--metrics", "official_f1,F1_N,F1_A,F1_O,f1"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[2:5]
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[3:] == [
        "official F1",
        "F1 N",
        "F1 A",
        "F1 O",
        "test weighted F1",
        "params",
        "epochs",
        "wall time (min)",
        "hardware",
    ]
    assert "sens. N" not in header and "AUROC" not in header
    assert "0.850 ± 0.071" in row and "cpu: AMD EPYC, 1 thread" in row


def test_aggregate_runs_are_grouped_by_their_window_model(tmp_path: Path) -> None:
    """Aggregators over different window models are different rows: an aggregate run's configuration
    starts with the configuration of the training run whose checkpoint it aggregates."""
    for name, extra in (("plain", ["model.net.conv_bias=true"]), ("spec", [])):
        window = make_run(tmp_path / name, model="cnn_lstm", overrides=extra)
        for seed in (1, 2):
            agg = make_run(tmp_path / name / f"aggregate{seed}", model="cnn_lstm", seed=seed,
                           overrides=[f"seed={seed}", "aggregator=bigru"])  # fmt: skip
            metrics = json.loads((agg / "test_metrics.json").read_text())
            ckpt = window / "checkpoints" / "best-epoch001.ckpt"
            metrics |= {"task_name": "aggregate", "ckpt_path": str(ckpt)}
            (agg / "test_metrics.json").write_text(json.dumps(metrics))
    rows = by_name(aggregate(find_runs([tmp_path])))
    assert rows["[cnn_lstm model.net.conv_bias=true] → aggregate cnn_lstm aggregator=bigru"]["n_runs"] == 2
    assert rows["[cnn_lstm] → aggregate cnn_lstm aggregator=bigru"]["n_runs"] == 2
    assert rows["cnn_lstm model.net.conv_bias=true"]["n_runs"] == 1


def test_an_eval_of_aggregate_runs_is_named_after_them(tmp_path: Path) -> None:
    """``ecg_lab.eval`` of aggregator.ckpt files: the row is the first aggregate run's configuration,
    ``→ ensemble of N`` for several, then the eval's own overrides; a member folder that is gone leaves
    ``aggregate ?``."""
    window = make_run(tmp_path / "window", model="cnn_lstm")
    agg = make_run(window / "aggregate", model="cnn_lstm", overrides=["aggregator=bigru", "members=5"])
    metrics = json.loads((agg / "test_metrics.json").read_text())
    metrics |= {"task_name": "aggregate", "ckpt_path": str(window / "checkpoints" / "best-epoch001.ckpt")}
    (agg / "test_metrics.json").write_text(json.dumps(metrics))
    members = {"one": [agg], "three": [agg, tmp_path / "b", tmp_path / "c"], "gone": [tmp_path / "x"] * 2}
    for name, runs in members.items():
        ev = make_run(tmp_path / "evals" / name, model="cnn_lstm", overrides=["calibration=thresholds"])
        metrics = json.loads((ev / "test_metrics.json").read_text())
        metrics |= {
            "task_name": "eval",
            "aggregators": True,
            "ckpt_paths": [str(r / "aggregator.ckpt") for r in runs],
        }
        (ev / "test_metrics.json").write_text(json.dumps(metrics))
    rows = by_name(aggregate(find_runs([tmp_path / "evals"])))
    aggregate_run = "[cnn_lstm] → aggregate cnn_lstm aggregator=bigru members=5"
    assert set(rows) == {
        f"{aggregate_run} calibration=thresholds",
        f"{aggregate_run} → ensemble of 3 calibration=thresholds",
        "aggregate ? → ensemble of 2 calibration=thresholds",
    }


def test_an_eval_beside_its_run_is_not_one_more_run(tmp_path: Path) -> None:
    """ecg_lab.eval writes into <run>/eval/<stamp>: re-testing a run must not count it twice."""
    run = make_run(tmp_path / "run", model="gru")
    make_run(run / "eval" / "2026-11-30_10-00-00", model="gru")
    (row,) = aggregate(find_runs([tmp_path]))
    assert row["n_runs"] == 1


def test_an_unknown_wall_time_stays_unknown(tmp_path: Path) -> None:
    """wall_time_s null (a resumed run whose checkpoint carried no epoch times) is not replaced by the
    resuming process's few seconds from run_status.json, which would drag the mean down."""
    for seed, wall in ((1, None), (2, 600.0)):
        run = make_run(tmp_path / f"r{seed}", seed=seed)
        metrics = json.loads((run / "test_metrics.json").read_text()) | {"wall_time_s": wall}
        (run / "test_metrics.json").write_text(json.dumps(metrics))
    (row,) = aggregate(find_runs([tmp_path]))
    assert row["wall_time_min"] == pytest.approx(10.0)
