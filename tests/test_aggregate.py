"""``python -m ecg_lab.aggregate``: a learned aggregator over a frozen window model's per-window
embeddings, tested beside the window model's mean of probabilities on the checkpoint's own test records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ecg_lab.aggregate import AggregatorOnTest, aggregate, check_one_split, set_up_data, window_model
from ecg_lab.app.checks import check_overrides
from ecg_lab.classification.aggregator import (
    AggregatorEnsemble,
    AttentionAggregator,
    RecordingSequences,
    WindowOutputs,
    load_aggregator,
    window_outputs,
)
from ecg_lab.edge.runtime import sha256_file
from ecg_lab.errors import ConfigError, MissingFileError
from ecg_lab.eval import evaluate
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.helpers import REPO, run_module

SHORT = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "callbacks.progress.interactive=false",
]
QUICK_FIT = ["fit.max_epochs=4", "fit.patience=2", "fit.batch_size=8", "threads=1"]
TIMES = ("embed_time_s", "fit_time_s", "wall_time_s")


@pytest.fixture(scope="module")
def window_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The run folder of one short training run of cnn_lstm, tested (its best checkpoint), on records
    of 10 to 16 s."""
    run = tmp_path_factory.mktemp("window_run")
    overrides = [*SMALL_SYNTHETIC, "data.synthetic.max_duration_s=16", *SHORT]  # 3 to 5 windows
    train(compose_config("train", overrides, run, cache_dir))
    return run


def best_checkpoint(run: Path) -> Path:
    return next((run / "checkpoints").glob("best-epoch*.ckpt"))


def aggregated(out: Path, cache_dir: Path, *overrides: str) -> dict[str, Any]:
    """``python -m ecg_lab.aggregate *overrides`` in this process; the ``test_metrics.json`` it writes."""
    aggregate(compose_config("aggregate", [*QUICK_FIT, *overrides], out, cache_dir))
    return json.loads((out / "test_metrics.json").read_text())


@pytest.fixture(scope="module")
def agg_run(window_run: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The run folder of one aggregator run over the window run's best checkpoint."""
    out = tmp_path_factory.mktemp("agg_run")
    aggregated(out, cache_dir, f"ckpt_path={best_checkpoint(window_run)}")
    return out


# -- embeddings ---------------------------------------------------------------------------------------
def test_embeddings_are_the_networks_grouped_per_recording_in_window_order(
    window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    cfg = compose_config("aggregate", [f"ckpt_path={best_checkpoint(window_run)}"], tmp_path, cache_dir)
    model, ckpt, stored = window_model(cfg)
    datamodule, _ = set_up_data(cfg, ckpt, stored)
    dataset = datamodule.datasets["test"]
    seqs = RecordingSequences.from_windows(window_outputs(model.net, dataset, batch_size=7))
    n_windows = np.bincount(dataset.records)[seqs.records]
    assert len(seqs) == len(np.unique(dataset.records)) == len(n_windows) > 1
    assert seqs.embeddings.shape == (len(seqs), n_windows.max(), 128)  # cnn_lstm's readout: 128
    assert seqs.logits.shape == (len(seqs), n_windows.max(), 4)
    assert seqs.mask.sum(1).tolist() == n_windows.tolist() and len(set(n_windows)) > 1  # some padded
    assert (seqs.embeddings[~seqs.mask] == 0).all()
    # recording i's row t is the network's embedding of its t-th window, cut from its signal
    i = int(np.argmax(n_windows))
    record = int(seqs.records[i])
    starts = datamodule.preprocess.starts(int(datamodule.prepared.lengths[record]))
    signal = datamodule.prepared.signal(record)
    x = torch.stack([torch.from_numpy(np.array(signal[s : s + dataset.window]))[None] for s in starts])
    with torch.no_grad():
        torch.testing.assert_close(seqs.embeddings[i, : len(starts)], model.net.embed(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(seqs.logits[i, : len(starts)], model.net(x), atol=1e-5, rtol=0)
    assert int(seqs.labels[i]) == int(datamodule.prepared.labels[record])


def test_windows_out_of_order_are_grouped_in_their_order() -> None:
    records = np.array([5, 3, 5, 3, 5])
    out = WindowOutputs(
        embeddings=np.arange(5, dtype=np.float32)[:, None],
        logits=np.zeros((5, 4), dtype=np.float32),
        labels=np.array([1, 2, 1, 2, 1]),
        records=records,
    )
    seqs = RecordingSequences.from_windows(out)
    assert seqs.records.tolist() == [3, 5] and seqs.labels.tolist() == [2, 1]
    assert seqs.embeddings[..., 0].tolist() == [[1, 3, 0], [0, 2, 4]]
    assert seqs.mask.tolist() == [[True, True, False], [True, True, True]]


# -- the aggregator -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gru_hidden", [0, 8], ids=["attention", "bigru_attention"])
def test_padding_windows_does_not_change_a_recordings_logits(gru_hidden: int) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = AttentionAggregator(in_dim=6, num_classes=4, gru_hidden=gru_hidden).eval()
    lengths = torch.tensor([2, 5, 3])
    emb, logits = torch.randn(3, 5, 6, generator=gen), torch.randn(3, 5, 4, generator=gen)
    mask = torch.arange(5)[None] < lengths[:, None]
    with torch.no_grad():
        tight = model(emb, mask, logits)
        # nine steps, everything past a recording's windows (and its own padding) filled with noise
        noisy_emb, noisy_logits = (
            50 * torch.randn(3, 9, 6, generator=gen),
            torch.randn(3, 9, 4, generator=gen),
        )
        wide_mask = torch.arange(9)[None] < lengths[:, None]
        noisy_emb[wide_mask], noisy_logits[wide_mask] = emb[mask], logits[mask]
        padded = model(noisy_emb, wide_mask, noisy_logits)
        alone = torch.cat([model(emb[i : i + 1, :n], mask[i : i + 1, :n], logits[i : i + 1, :n])
                           for i, n in enumerate(lengths.tolist())])  # fmt: skip
    torch.testing.assert_close(padded, tight, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, tight, atol=1e-5, rtol=0)


# -- end to end ---------------------------------------------------------------------------------------
def test_run_scores_the_aggregator_beside_the_baseline_on_the_checkpoints_own_test_records(
    agg_run: Path, window_run: Path
) -> None:
    results = json.loads((agg_run / "test_metrics.json").read_text())
    window = json.loads((window_run / "test_metrics.json").read_text())
    for prefix in ("", "baseline_"):
        for key in ("official_f1", "F1_N", "F1_A", "F1_O", "F1_~"):
            assert 0.0 <= results[f"{prefix}{key}"] <= 1.0
        assert np.sum(results[f"{prefix}record_confusion_matrix"]) == results["n_records"]
    # the test records are the window model's own: its split, and its own recording scores as baseline
    assert (agg_run / "split.csv").read_text() == (window_run / "split.csv").read_text()
    assert results["n_records"] == window["n_records"]
    assert results["baseline_record_confusion_matrix"] == window["record_confusion_matrix"]
    assert results["baseline_official_f1"] == pytest.approx(window["official_f1"])
    ckpt = best_checkpoint(window_run)
    assert results["ckpt_path"] == str(ckpt.resolve()) and results["ckpt_sha256"] == sha256_file(ckpt)
    assert 0 <= results["best_epoch"] < results["epochs"] <= 4
    assert json.loads((agg_run / "run_status.json").read_text())["status"] == "completed"
    assert results["hardware"].startswith("cpu: ")  # the results table names it
    assert (agg_run / "confusion_matrix_records.png").is_file()


def test_aggregator_checkpoint_reloads_and_reproduces_its_test_scores(
    agg_run: Path, window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    results = json.loads((agg_run / "test_metrics.json").read_text())
    model, info = load_aggregator(agg_run / "aggregator.ckpt")
    ckpt = best_checkpoint(window_run)
    assert info["window_checkpoint"] == {"path": str(ckpt.resolve()), "sha256": sha256_file(ckpt)}
    assert info["config"]["fit"]["max_epochs"] == 4 and info["best_epoch"] == results["best_epoch"]
    cfg = compose_config("aggregate", [f"ckpt_path={ckpt}"], tmp_path, cache_dir)
    window, ckpt_dict, stored = window_model(cfg)
    datamodule, _ = set_up_data(cfg, ckpt_dict, stored)
    test = RecordingSequences.from_windows(window_outputs(window.net, datamodule.datasets["test"], 16))
    preds = model.predict(test, 8).argmax(1)
    cm = np.zeros((4, 4), dtype=int)
    np.add.at(cm, (test.labels.numpy(), preds.numpy()), 1)
    assert cm.tolist() == results["record_confusion_matrix"]


def test_same_seed_same_results_and_the_embeddings_come_from_the_cache(
    agg_run: Path, window_run: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ecg_lab.classification.aggregator as aggregator

    def not_again(*args: Any) -> None:
        raise AssertionError("the window embeddings were computed again instead of read from the cache")

    monkeypatch.setattr(aggregator, "window_outputs", not_again)
    again = aggregated(tmp_path, cache_dir, f"ckpt_path={best_checkpoint(window_run)}")
    first = json.loads((agg_run / "test_metrics.json").read_text())
    assert {k: v for k, v in again.items() if k not in TIMES} == {
        k: v for k, v in first.items() if k not in TIMES
    }
    a, b = (torch.load(p / "aggregator.ckpt", weights_only=True)["state_dict"] for p in (agg_run, tmp_path))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_members_average_aggregators_whose_first_is_the_single_one(
    agg_run: Path, window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = best_checkpoint(window_run)
    results = aggregated(tmp_path, cache_dir, f"ckpt_path={ckpt}", "members=2")
    single = json.loads((agg_run / "test_metrics.json").read_text())
    first, second = results["member_fits"]
    assert results["members"] == 2 and (first["seed"], second["seed"]) == (42, 1042)
    assert {k: first[k] for k in ("best_epoch", "epochs", "best_val_official_f1", "official_f1")} == {
        k: single[k] for k in ("best_epoch", "epochs", "best_val_official_f1", "official_f1")
    }
    assert results["epochs"] == first["epochs"] + second["epochs"]
    assert results["n_params"] == 2 * single["n_params"]
    model, info = load_aggregator(tmp_path / "aggregator.ckpt")
    assert isinstance(model, AggregatorEnsemble) and info["members"] == 2
    a = torch.load(agg_run / "aggregator.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], model.members[0].state_dict()[k]) for k in a)
    cfg = compose_config("aggregate", [f"ckpt_path={ckpt}"], tmp_path / "again", cache_dir)
    window, ckpt_dict, stored = window_model(cfg)
    datamodule, _ = set_up_data(cfg, ckpt_dict, stored)
    test = RecordingSequences.from_windows(window_outputs(window.net, datamodule.datasets["test"], 16))
    mean = np.mean([m.probabilities(test, 8) for m in model.members], axis=0)
    cm = np.zeros((4, 4), dtype=int)
    np.add.at(cm, (test.labels.numpy(), mean.argmax(1)), 1)
    assert cm.tolist() == results["record_confusion_matrix"]
    with pytest.raises(ConfigError, match=r"members=0"):
        aggregated(tmp_path / "none", cache_dir, f"ckpt_path={ckpt}", "members=0")


def test_a_calibration_scores_the_aggregator_and_the_baseline_alike(
    window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    results = aggregated(tmp_path, cache_dir, f"ckpt_path={best_checkpoint(window_run)}", "calibration=prior")
    for prefix in ("", "baseline_"):
        fit = results[f"{prefix}calibration"]
        assert fit["method"] == "prior" and fit["n_records"] == results["n_val_records"]
        assert fit["val_official_f1"] >= fit["val_official_f1_uncalibrated"]
        assert np.sum(results[f"{prefix}calibrated_record_confusion_matrix"]) == results["n_records"]
        assert 0.0 <= results[f"{prefix}calibrated_official_f1"] <= 1.0


# -- finished aggregators tested by ecg_lab.eval ---------------------------------------------------------
def evaluated(out: Path, cache_dir: Path, paths: list[Path], *overrides: str) -> dict[str, Any]:
    """``python -m ecg_lab.eval ckpt_path=[paths] *overrides`` in this process; its ``test_metrics.json``."""
    listed = f"[{','.join(map(str, paths))}]" if len(paths) > 1 else str(paths[0])
    evaluate(compose_config("eval", [f"ckpt_path={listed}", "threads=1", *overrides], out, cache_dir))
    return json.loads((out / "test_metrics.json").read_text())


def test_eval_of_an_aggregator_checkpoint_reproduces_its_runs_test_scores(
    agg_run: Path, window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    results = evaluated(tmp_path, cache_dir, [agg_run / "aggregator.ckpt"])
    own = json.loads((agg_run / "test_metrics.json").read_text())
    for key in ("official_f1", "F1_N", "F1_A", "F1_O", "F1_~", "record_confusion_matrix", "n_records"):
        assert results[key] == own[key], key
    assert results["member_official_f1"] == [own["official_f1"]] and results["ensemble_size"] == 1
    assert (tmp_path / "split.csv").read_text() == (window_run / "split.csv").read_text()
    window = json.loads((window_run / "test_metrics.json").read_text())
    assert results["n_params"] == window["n_params"] + own["n_params"]
    assert results["model_name"] == "cnn_lstm" and results["seed"] == 42


def test_eval_of_several_aggregator_checkpoints_averages_their_probabilities(
    agg_run: Path, window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = best_checkpoint(window_run)
    second = aggregated(tmp_path / "seed7", cache_dir, f"ckpt_path={ckpt}", "seed=7")
    paths = [agg_run / "aggregator.ckpt", tmp_path / "seed7" / "aggregator.ckpt"]
    results = evaluated(tmp_path / "eval", cache_dir, paths)
    own = json.loads((agg_run / "test_metrics.json").read_text())
    assert results["member_official_f1"] == [own["official_f1"], second["official_f1"]]
    assert results["ensemble_size"] == 2 and results["ckpt_paths"] == [str(p.resolve()) for p in paths]
    cfg = compose_config("aggregate", [f"ckpt_path={ckpt}"], tmp_path / "again", cache_dir)
    window, ckpt_dict, stored = window_model(cfg)
    datamodule, _ = set_up_data(cfg, ckpt_dict, stored)
    test = RecordingSequences.from_windows(window_outputs(window.net, datamodule.datasets["test"], 16))
    mean = np.mean([load_aggregator(p)[0].probabilities(test, 8) for p in paths], axis=0)
    cm = np.zeros((4, 4), dtype=int)
    np.add.at(cm, (test.labels.numpy(), mean.argmax(1)), 1)
    assert cm.tolist() == results["record_confusion_matrix"]


def test_eval_calibrates_aggregators_as_their_run_did(
    window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = f"ckpt_path={best_checkpoint(window_run)}"
    own = aggregated(tmp_path / "agg", cache_dir, ckpt, "calibration=prior")
    results = evaluated(
        tmp_path / "eval", cache_dir, [tmp_path / "agg" / "aggregator.ckpt"], "calibration=prior"
    )
    assert results["calibration"] == own["calibration"]
    for key in ("official_f1", "F1_O", "record_confusion_matrix"):
        assert results[key] == own[f"calibrated_{key}"] and results[f"{key}_uncalibrated"] == own[key], key


def test_eval_refuses_mixed_lists_changed_window_models_and_other_splits(
    agg_run: Path, window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    aggregator, window = agg_run / "aggregator.ckpt", best_checkpoint(window_run)
    with pytest.raises(ConfigError, match=r"^ckpt_path mixes aggregator\.ckpt files with window checkpoints"):
        evaluated(tmp_path / "mixed", cache_dir, [aggregator, window])
    with pytest.raises(ConfigError, match=r"^\+model\.\* keys change a checkpoint's stored model"):
        evaluated(tmp_path / "keys", cache_dir, [aggregator], "+model.net.dropout=0.5")
    copy = tmp_path / "window.ckpt"
    copy.write_bytes(window.read_bytes())
    aggregated(tmp_path / "agg", cache_dir, f"ckpt_path={copy}")
    torch.save({**torch.load(copy, weights_only=True), "touched": 1}, copy)  # retrained, say
    with pytest.raises(
        ConfigError, match=r"aggregator\.ckpt was trained on the window checkpoint .* has changed"
    ):
        evaluated(tmp_path / "changed", cache_dir, [tmp_path / "agg" / "aggregator.ckpt"])
    with pytest.raises(ConfigError, match=r"^data\.split=all: an aggregator is tested on"):
        evaluated(tmp_path / "all", cache_dir, [aggregator], "data=synthetic", "data.split=all")

    def run(path: str, records: list[int]) -> AggregatorOnTest:
        seqs = {"val": RecordingSequences.from_windows(WindowOutputs(
            np.zeros((len(records), 2), np.float32), np.zeros((len(records), 4), np.float32),
            np.zeros(len(records), int), np.array(records)))}  # fmt: skip
        return AggregatorOnTest(path, {}, seqs, ("N", "A", "O", "~"), None, None, None, 0)

    check_one_split([run("a", [1, 2]), run("b", [1, 2])])
    with pytest.raises(ConfigError, match=r"^ckpt_path member b scores other recordings or classes than a"):
        check_one_split([run("a", [1, 2]), run("b", [1, 3])])


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "nope.ckpt", MissingFileError, r"no such checkpoint file; check the path$"),
        (lambda p: p, ConfigError, r"is a directory, not a readable checkpoint"),
        (lambda p: (p / "notes.ckpt", (p / "notes.ckpt").write_text("a,b\n"))[0], ConfigError,
         r"is not a readable checkpoint \(not the zip archive torch\.save writes"),
    ],
    ids=["missing", "directory", "not_a_checkpoint"],
)  # fmt: skip
def test_a_bad_ckpt_path_is_one_line_naming_it(
    make, error: type[Exception], message: str, tmp_path: Path, cache_dir: Path
) -> None:
    path = make(tmp_path)
    with pytest.raises(error) as err:
        aggregate(compose_config("aggregate", [f"ckpt_path={path}"], tmp_path / "run", cache_dir))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"ckpt_path={path}") and err.match(message)


def test_the_app_ends_with_one_line_for_a_missing_checkpoint(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "nope.ckpt"
    proc = run_module(
        "ecg_lab.aggregate", [f"ckpt_path={path}", f"paths.cache_dir={cache_dir}"], tmp_path, timeout=120
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: ckpt_path={path}: no such checkpoint file; check the path"
    )
    assert "Traceback" not in proc.stderr


def test_split_all_is_refused_and_bad_settings_name_their_key(
    window_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = f"ckpt_path={best_checkpoint(window_run)}"
    cfg = compose_config("aggregate", [ckpt, "data=synthetic", "data.split=all"], tmp_path, cache_dir)
    with pytest.raises(ConfigError, match=r"^data\.split=all puts every record in the test set"):
        aggregate(cfg)
    cfg = compose_config("aggregate", [ckpt, "fit.patience=soon"], tmp_path / "b", cache_dir)
    with pytest.raises(
        ConfigError, match=r"^fit\.patience='soon' is a string, but .*FitSettings takes an int"
    ):
        check_overrides(cfg)
    cfg = compose_config("aggregate", [ckpt, "fit.lr=0"], tmp_path / "c", cache_dir)
    with pytest.raises(ConfigError, match=r"^fit: .*lr=0.*need positive epochs, patience, batch size and lr"):
        aggregate(cfg)


def test_make_best_ensemble_runs_three_seeds_of_make_best_then_tests_their_aggregators_as_one(
    tmp_path: Path,
) -> None:
    """``make best-ensemble SEED=45`` (issue 13's ensemble recipe), with a stand-in python that logs what
    it is asked to run: make best for seeds 45, 46 and 47, then ecg_lab.eval of their aggregator.ckpt."""
    log = tmp_path / "calls.txt"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" = -c ] && echo W/best-epoch050.ckpt\nexit 0\n')
    python.chmod(0o755)
    best = tmp_path / "best"
    make = [
        "make",
        "-s",
        "-C",
        str(REPO),
        "best-ensemble",
        "STAMP=",
        f"PY={python}",
        "SEED=45",
        f"BEST={best}",
    ]
    proc = subprocess.run([*make, "ARGS=threads=1"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = [c for c in log.read_text().splitlines() if not c.startswith("-c ")]
    expected = []
    for seed in (45, 46, 47):
        run = f"seed={seed} hydra.run.dir={best}/s{seed}"
        expected += [
            f"-m ecg_lab.train experiment=physionet2017_best {run} threads=1",
            f"-m ecg_lab.aggregate aggregator=bigru members=5 {run}/aggregate threads=1 "
            "ckpt_path=W/best-epoch050.ckpt",
        ]
    members = ",".join(f"{best}/s{seed}/aggregate/aggregator.ckpt" for seed in (45, 46, 47))
    expected.append(f"-m ecg_lab.eval hydra.run.dir={best}/ensemble_s45 threads=1 ckpt_path=[{members}]")
    assert calls == expected
