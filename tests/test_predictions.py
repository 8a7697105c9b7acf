"""Per-record predictions (``predictions.csv``, ``window_predictions.csv``) from a run's test,
``ecg_lab.eval`` (one checkpoint and an ensemble) and ``python -m ecg_lab.edge classify --predictions``;
bootstrap intervals of the test scores; ``ecg_lab.report --ci``."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hydra
import numpy as np
import pytest
import sklearn.metrics
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

from ecg_lab.classification.calibration import recording_scores
from ecg_lab.classification.metrics import bootstrap_intervals, resample_counts
from ecg_lab.classification.predictions import predictions_of, with_items
from ecg_lab.edge import runtime as edge
from ecg_lab.eval import evaluate
from ecg_lab.export import export
from ecg_lab.report import main as report_main
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.test_export_edge import run_edge
from tests.test_report import make_run

CLASSES = ("N", "A", "O", "~")
SHORT = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "callbacks.progress.interactive=false",
]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows])


# -- bootstrap intervals ---------------------------------------------------------------------------
def confusion_case(n: int, seed: int, right: float = 0.8) -> tuple[np.ndarray, ...]:
    """``n`` recordings of 2-5 windows: recordings right with probability ``right``, windows 0.7."""
    rng = np.random.default_rng(seed)
    targets = rng.choice(4, n, p=[0.55, 0.1, 0.3, 0.05])
    preds = np.where(rng.random(n) < right, targets, rng.integers(0, 4, n))
    window_record = np.repeat(np.arange(n), rng.integers(2, 6, n))
    window_preds = np.where(
        rng.random(window_record.size) < 0.7, targets[window_record], rng.integers(0, 4, window_record.size)
    )
    return targets, preds, window_record, window_preds


def test_bootstrap_equals_a_plain_loop_over_resamples() -> None:
    """The vectorised bootstrap (draw counts × each recording's confusion) equals resampling recordings
    one resample at a time and scoring them with scikit-learn."""
    targets, preds, window_record, window_preds = confusion_case(150, seed=3)
    got = bootstrap_intervals(targets, preds, window_record, window_preds, CLASSES, n=200, seed=7)
    draws = np.random.default_rng(7).integers(0, 150, size=(200, 150))  # what resample_counts draws
    np.testing.assert_array_equal(
        resample_counts(150, 200, 7), [np.bincount(d, minlength=150) for d in draws]
    )
    stats: dict[str, list[float]] = {}
    for d in draws:
        per_class = sklearn.metrics.f1_score(
            targets[d], preds[d], labels=range(4), average=None, zero_division=0
        )
        windows = np.concatenate([np.flatnonzero(window_record == r) for r in d])
        for key, value in (
            *((f"F1_{c}", per_class[i]) for i, c in enumerate(CLASSES)),
            ("official_f1", per_class[:3].mean()),
            (
                "f1",
                sklearn.metrics.f1_score(
                    targets[window_record[windows]], window_preds[windows], average="weighted"
                ),
            ),
        ):
            stats.setdefault(key, []).append(value)
    for key, values in stats.items():
        assert got[f"{key}_ci"] == pytest.approx(np.quantile(values, [0.025, 0.975]), abs=1e-6), key
    assert got["bootstrap"] == {"n": 200, "seed": 7, "level": 0.95, "resampled": "recordings"}


def test_bootstrap_interval_holds_the_estimate_and_narrows_as_one_over_root_n() -> None:
    """Known answers: a perfect classifier's interval is [1, 1]; the same confusion on four times the
    recordings gives an interval half as wide (the width of a mean goes as 1/√n)."""
    targets, preds, window_record, window_preds = confusion_case(300, seed=0)
    perfect = bootstrap_intervals(targets, targets, window_record, targets[window_record], CLASSES)
    assert perfect["official_f1_ci"] == perfect["f1_ci"] == [1.0, 1.0]
    one = bootstrap_intervals(targets, preds, window_record, window_preds, CLASSES)
    four = bootstrap_intervals(  # each recording four times: the same point estimates
        np.tile(targets, 4),
        np.tile(preds, 4),
        np.repeat(np.arange(4), window_record.size) * 300 + np.tile(window_record, 4),
        np.tile(window_preds, 4),
        CLASSES,
    )
    point = recording_scores(targets, preds, CLASSES)
    weighted = sklearn.metrics.f1_score(targets[window_record], window_preds, average="weighted")
    for key, estimate in (("official_f1", point["official_f1"]), ("F1_N", point["F1_N"]), ("f1", weighted)):
        for result in (one, four):
            lo, hi = result[f"{key}_ci"]
            assert lo < estimate < hi, key
        ratio = np.diff(one[f"{key}_ci"])[0] / np.diff(four[f"{key}_ci"])[0]
        assert 1.6 < ratio < 2.5, (key, ratio)


def test_bootstrap_costs_well_under_a_second_for_the_real_test_set() -> None:
    """1,087 recordings (PhysioNet 2017's 15% test split) of ~13 windows, 1000 resamples."""
    targets, preds, window_record, window_preds = confusion_case(1087, seed=1)
    bootstrap_intervals(targets, preds, window_record, window_preds, CLASSES)  # warm-up
    t0 = time.perf_counter()
    bootstrap_intervals(targets, preds, window_record, window_preds, CLASSES)
    assert time.perf_counter() - t0 < 0.5


# -- the rows of every DDP rank are put back in order ---------------------------------------------------
def test_windows_served_by_two_ranks_get_their_index_and_start(tmp_path: Path, cache_dir: Path) -> None:
    """Two ranks serve interleaved windows (UnrepeatedDistributedSampler); after gathering, each window
    is named by its recording, index and start sample, as one process names it."""
    cfg = compose_config("train", [*SMALL_SYNTHETIC], tmp_path / "run", cache_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]

    def rank_rows(sampler: Any) -> torch.Tensor:
        module = SimpleNamespace(_trainer=SimpleNamespace(test_dataloaders=SimpleNamespace(sampler=sampler)))
        items = list(sampler)
        probs = torch.tensor([[float(i), 0.0, 0.0, 0.0] for i in items])  # the item, to check the naming
        rows = torch.cat(
            [probs, torch.zeros(len(items), 1), torch.as_tensor(dataset.records[items])[:, None]], 1
        )
        return with_items(module, "test", rows.float())

    ranks = [UnrepeatedDistributedSampler(dataset, num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    gathered = torch.cat([rank_rows(s) for s in ranks])
    assert not torch.equal(gathered[:, 0], torch.arange(len(dataset)).float())  # the order is interleaved
    module = SimpleNamespace(classes=CLASSES, _trainer=SimpleNamespace(datamodule=datamodule))
    n_records = len(np.unique(dataset.records))
    predictions = predictions_of(module, gathered, np.full((n_records, 4), 0.25), None)
    predictions.write(tmp_path / "predictions.csv")
    windows = read_rows(tmp_path / "window_predictions.csv")
    assert [float(r["prob_N"]) for r in windows] == list(range(len(dataset)))  # dataset order restored
    ids = datamodule.record_ids()
    stride = datamodule.preprocess.stride
    for row in windows:
        item = int(float(row["prob_N"]))
        record = int(dataset.records[item])
        assert row["record"] == ids[record]
        assert int(row["start"]) == dataset.starts[item] - datamodule.prepared.offsets[record]
        assert int(row["start"]) == int(row["window"]) * stride


def test_a_calibration_decides_predicted_and_the_argmax_is_kept(tmp_path: Path) -> None:
    """Under a calibration ``predicted`` is the calibrated decision and ``predicted_uncalibrated`` the
    argmax of the (uncalibrated) probabilities written beside it."""
    probs = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.6, 0.1]], dtype=np.float32)
    rows = torch.cat([torch.from_numpy(probs), torch.tensor([[1.0, 0.0], [2.0, 1.0]])], 1)
    calibration = {"method": "prior", "values": [0.0, float(np.log(2.0)), 0.0, 0.0]}
    module = SimpleNamespace(classes=CLASSES)
    predictions_of(module, rows, probs, calibration).write(tmp_path / "predictions.csv")
    got = read_rows(tmp_path / "predictions.csv")
    assert [(r["record"], r["label"], r["predicted"], r["predicted_uncalibrated"]) for r in got] == [
        ("0", "A", "A", "N"),
        ("1", "O", "O", "O"),
    ]
    np.testing.assert_array_equal(probabilities(got).astype(np.float32), probs)  # 9 digits: float32 exact


# -- end to end: train's test, eval, an ensemble, the edge runtime -------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("predictions")
    train(compose_config("train", [*SMALL_SYNTHETIC, *SHORT], out, cache_dir))
    return out


def synthetic_root(tmp: Path, cache_dir: Path) -> Path:
    """The record folder of the synthetic data ``trained`` used (the shared cache may hold others)."""
    cfg = compose_config("train", [*SMALL_SYNTHETIC, *SHORT], tmp, cache_dir)
    return hydra.utils.instantiate(cfg.data).record_root()


def best_of(run: Path) -> Path:
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    return best


def test_predictions_csv_holds_every_test_recording_as_scored(trained: Path) -> None:
    metrics = json.loads((trained / "test_metrics.json").read_text())
    rows = read_rows(trained / "predictions.csv")
    split = [r for r in read_rows(trained / "split.csv") if r["split"] == "test"]
    assert [(r["record"], r["label"]) for r in rows] == [(r["record"], r["label"]) for r in split]
    assert list(rows[0]) == ["record", "label", "predicted", "n_windows", *(f"prob_{c}" for c in CLASSES)]
    probs = probabilities(rows)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert [CLASSES[i] for i in probs.argmax(1)] == [r["predicted"] for r in rows]
    targets = [CLASSES.index(r["label"]) for r in rows]
    rescored = recording_scores(
        np.array(targets), np.array([CLASSES.index(r["predicted"]) for r in rows]), CLASSES
    )
    for key in ("official_f1", "F1_N", "F1_A", "F1_O", "F1_~", "record_confusion_matrix"):
        assert rescored[key] == metrics[key], key
    assert (
        len(rows) == metrics["n_records"] and sum(int(r["n_windows"]) for r in rows) == metrics["n_windows"]
    )
    for key in ("official_f1", "F1_N", "F1_A", "F1_O", "F1_~", "f1"):
        lo, hi = metrics[f"{key}_ci"]
        assert 0.0 <= lo <= metrics[key] + 1e-6 and metrics[key] - 1e-6 <= hi <= 1.0, key
    assert metrics["bootstrap"] == {"n": 1000, "seed": 0, "level": 0.95, "resampled": "recordings"}


def test_window_predictions_add_up_to_the_recordings(trained: Path) -> None:
    metrics = json.loads((trained / "test_metrics.json").read_text())
    rows = {r["record"]: r for r in read_rows(trained / "predictions.csv")}
    windows = read_rows(trained / "window_predictions.csv")
    assert list(windows[0]) == ["record", "window", "start", *(f"prob_{c}" for c in CLASSES)]
    assert len(windows) == metrics["n_windows"]
    by_record: dict[str, list[dict[str, str]]] = {}
    for w in windows:
        by_record.setdefault(w["record"], []).append(w)
    assert list(by_record) == list(rows)
    for record, ws in by_record.items():
        assert [int(w["window"]) for w in ws] == list(range(int(rows[record]["n_windows"])))
        assert [int(w["start"]) for w in ws] == [750 * i for i in range(len(ws))]
        np.testing.assert_allclose(probabilities(ws).mean(0), probabilities([rows[record]])[0], atol=1e-6)
    labels = [CLASSES.index(rows[w["record"]]["label"]) for w in windows]
    weighted = sklearn.metrics.f1_score(labels, probabilities(windows).argmax(1), average="weighted")
    assert weighted == pytest.approx(metrics["f1"], abs=1e-6)  # the window metric, from the file


@pytest.mark.parametrize("members", [1, 2])
def test_eval_writes_the_predictions_training_tested(
    trained: Path, tmp_path: Path, cache_dir: Path, members: int
) -> None:
    """``eval`` on the best checkpoint, and on an ensemble of it with itself, writes training's rows."""
    best = str(best_of(trained))
    ckpt_path = best if members == 1 else f"[{best},{best}]"
    evaluate(compose_config("eval", [f"ckpt_path={ckpt_path}", SHORT[-1]], tmp_path, cache_dir))
    for name in ("predictions.csv", "window_predictions.csv"):
        want, got = read_rows(trained / name), read_rows(tmp_path / name)
        assert [r["record"] for r in got] == [r["record"] for r in want], name
        np.testing.assert_allclose(probabilities(got), probabilities(want), atol=1e-6, err_msg=name)
        other = [c for c in want[0] if not c.startswith("prob_")]
        assert [[r[c] for c in other] for r in got] == [[r[c] for c in other] for r in want], name
    evaluated = json.loads((tmp_path / "test_metrics.json").read_text())
    assert evaluated["ensemble_size"] == members and "official_f1_ci" in evaluated


@pytest.fixture(scope="module")
def exported(trained: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The export folder of the trained run's best checkpoint."""
    out = tmp_path_factory.mktemp("exported")
    export(
        compose_config(
            "export", [f"ckpt_path={best_of(trained)}", f"out_dir={out / 'export'}"], out, cache_dir
        )
    )
    return out / "export"


def test_edge_classify_writes_the_same_predictions(
    trained: Path, exported: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """``classify --record ... --predictions OUT.csv --reference REFERENCE.csv`` from the export folder (no
    training stack) writes the rows training's test wrote; without ``--reference`` the labels are empty."""
    folder = exported
    want = read_rows(trained / "predictions.csv")
    root = synthetic_root(tmp_path, cache_dir)
    records = [str(root / f"{r['record']}.mat") for r in want]
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    argv = [
        "classify",
        "--export",
        ".",
        *(a for r in records for a in ("--record", r)),
        "--predictions",
        str(out),
    ]
    proc = run_edge(folder, *argv, "--reference", str(root / "REFERENCE.csv"))
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == len(records) and [line["class"] for line in lines] == [r["predicted"] for r in want]
    got = read_rows(out)
    assert [(r["record"], r["label"], r["n_windows"]) for r in got] == [
        (r["record"], r["label"], r["n_windows"]) for r in want
    ]
    np.testing.assert_allclose(probabilities(got), probabilities(want), atol=1e-5)
    assert read_rows(tmp_path / "out" / "window_predictions.csv") and len(
        read_rows(tmp_path / "out" / "window_predictions.csv")
    ) == len(read_rows(trained / "window_predictions.csv"))
    run_edge(folder, *argv)
    assert {r["label"] for r in read_rows(out)} == {""}  # no reference: unknown


def test_edge_predictions_refuse_bad_input(exported: Path, tmp_path: Path, cache_dir: Path, capsys) -> None:
    folder = exported
    record = synthetic_root(tmp_path, cache_dir) / "A00001.mat"
    reference = tmp_path / "REFERENCE.csv"
    reference.write_text("A00001,X\n")
    for extra, message in (
        (["--predictions", str(tmp_path)], f"--predictions {tmp_path}: is a folder"),
        (["--predictions", str(tmp_path / "p.csv"), "--reference", str(reference)], "label 'X', not one of"),
    ):
        with pytest.raises(SystemExit) as exit_:
            edge.main(["classify", "--export", str(folder), "--record", str(record), *extra])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


# -- the report ---------------------------------------------------------------------------------------------
def with_intervals(run: Path, intervals: dict[str, list[float]]) -> None:
    path = run / "test_metrics.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | intervals))


def test_report_ci_shows_intervals(tmp_path: Path, capsys) -> None:
    with_intervals(make_run(tmp_path / "one" / "0", "gru", f1=0.7), {"f1_ci": [0.65, 0.75]})
    for i, (f1, ci) in enumerate(((0.7, [0.6, 0.8]), (0.8, [0.7, 0.9]))):
        run = make_run(tmp_path / "two" / str(i), "lstm", seed=i, f1=f1)
        with_intervals(run, {"f1_ci": ci, "official_f1_ci": [ci[0] - 0.02, ci[1] - 0.02]})
    assert report_main([str(tmp_path), "--ci", "--metrics", "f1,official_f1,acc"]) == 0
    table = capsys.readouterr().out
    assert "| 0.700 [0.650, 0.750] | 0.680 |" in table  # one run: its interval
    assert "| 0.750 ± 0.071 [0.650, 0.850] | 0.730 ± 0.071 [0.630, 0.830] |" in table  # mean of the bounds
    rows = {r["model"]: r for r in read_rows(tmp_path / "results_table.csv")}
    assert float(rows["lstm"]["f1_ci_lo"]) == pytest.approx(0.65) and rows["gru"]["official_f1_ci_lo"] == ""
    assert report_main([str(tmp_path), "--metrics", "f1"]) == 0
    assert "[" not in capsys.readouterr().out.split("## Failed")[0]  # without --ci: no intervals


@pytest.mark.slow  # two training processes: ~1 min
def test_ddp_ranks_write_every_test_record_once(tmp_path: Path, cache_dir: Path) -> None:
    """A two-rank CPU run writes the predictions a single-process eval of its checkpoint writes: every
    test recording once, every window once, with its index and start."""
    from tests.test_ddp import ddp_args, run_train, single_process_eval

    run_train([*ddp_args(cache_dir), "trainer.max_epochs=1"], tmp_path)
    (run,) = {p.resolve() for p in (tmp_path / "outputs").glob("*/*") if (p / "test_metrics.json").is_file()}
    single_process_eval(
        json.loads((run / "test_metrics.json").read_text())["ckpt_path"], tmp_path / "eval", cache_dir
    )
    for name in ("predictions.csv", "window_predictions.csv"):
        want, got = read_rows(tmp_path / "eval" / name), read_rows(run / name)
        keys = [c for c in want[0] if not c.startswith("prob_")]
        assert [[r[c] for c in keys] for r in got] == [[r[c] for c in keys] for r in want], name
        np.testing.assert_allclose(probabilities(got), probabilities(want), atol=1e-6, err_msg=name)
