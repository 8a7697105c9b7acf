"""Figures fit for a paper (issue 14): integer epoch ticks and the best epoch on training curves, titles
naming model, data, split and checkpoint, the VAE's curves as a bounded grid, generated ECGs beside real
ones on one y scale with units, and a classifier's ROC, precision-recall and reliability figures. The
tests read the drawn :class:`matplotlib.figure.Figure` objects back, and the run folders' files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ecg_lab.app import figures as app_figures
from ecg_lab.app.figures import run_title, save_figure, training_curves_figure
from ecg_lab.callbacks.history import best_epoch
from ecg_lab.classification import figures as clf_figures
from ecg_lab.classification.figures import pr_figure, reliability_bins, reliability_figure, roc_figure
from ecg_lab.eval import evaluate
from ecg_lab.generation import figures as gen_figures
from ecg_lab.generation.figures import amplitude_unit
from ecg_lab.generation.module import ECGGenerator
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config

CLASSES = ("N", "A", "O", "~")
VAE_CURVES = ECGGenerator.CURVES


def drawn(fig: Figure, tmp_path: Path) -> Figure:
    """``fig`` after it was rendered to a file (tick labels get their text then)."""
    save_figure(fig, tmp_path / "figure.png")
    return fig


def capture(
    monkeypatch: pytest.MonkeyPatch, module, saved: dict[str, Figure] | None = None
) -> dict[str, Figure]:
    """Keep every Figure ``module`` saves in ``saved`` (a new dict if None), by file name, and still write
    it; return ``saved``."""
    saved = {} if saved is None else saved
    original = module.save_figure

    def keep(fig: Figure, path: Path, *args) -> Path:
        saved[Path(path).name] = fig
        return original(fig, path, *args)

    monkeypatch.setattr(module, "save_figure", keep)
    return saved


def tick_labels(ax) -> list[str]:
    """The x tick labels shown inside the axis' view."""
    low, high = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]


def best_lines(ax) -> list:
    return [line for line in ax.lines if line.get_gid() == "best"]


def panels(fig: Figure) -> dict[str, object]:
    """The visible axes of a figure by title."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.axison}


# -- titles ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "checkpoint", "expected"),
    [
        ({"name": "physionet2017", "split": "stratified", "folds": None, "fold": 0},
         "/runs/x/checkpoints/best-epoch012.ckpt", "cnn_lstm · physionet2017 · test split · best-epoch012"),
        ({"name": "physionet2017", "split": "all"}, ["/runs/x/checkpoints/last.ckpt"],
         "cnn_lstm · physionet2017 · all records · last"),
        ({"name": "physionet2017", "split": "stratified", "folds": 5, "fold": 2}, ["a.ckpt", "b.ckpt"],
         "cnn_lstm · physionet2017 · test split (fold 2) · ensemble of 2"),
        ({"name": "synthetic"}, "", "cnn_lstm · synthetic · test split · current weights"),
    ],
)  # fmt: skip
def test_run_title_names_model_data_split_and_checkpoint(data, checkpoint, expected) -> None:
    assert run_title("cnn_lstm", data, checkpoint) == expected


# -- training curves -------------------------------------------------------------------------------------
def history_rows(n: int, keys: dict[str, list[float]]) -> list[dict[str, float]]:
    """``n`` rows of ``metrics_history.csv`` (0-based ``epoch``)."""
    return [{"epoch": float(e), **{k: v[e] for k, v in keys.items()}} for e in range(n)]


def test_training_curves_tick_whole_epochs_from_one_and_mark_the_best(tmp_path: Path) -> None:
    rows = history_rows(
        5,
        {
            "train/loss": [1.2, 0.9, 0.7, 0.6, 0.5],
            "val/loss": [1.3, 1.0, 0.8, 0.75, 0.8],
            "train/f1": [0.5, 0.6, 0.65, 0.7, 0.72],
            "val/f1": [0.45, 0.55, 0.6, 0.66, 0.64],
        },
    )
    fig = training_curves_figure(rows, ("loss", "f1"), best_epoch=4, title="cnn_lstm · synthetic")
    drawn(fig, tmp_path)
    axes = panels(fig)
    assert set(axes) == {"loss", "f1"}
    for ax in axes.values():
        labels = tick_labels(ax)
        assert labels and all(re.fullmatch(r"\d+", t) for t in labels), labels  # no 1.5, 2.5, ...
        assert {int(t) for t in labels} <= {1, 2, 3, 4, 5}  # 1-based, as checkpoint names count
        (line,) = best_lines(ax)
        assert list(line.get_xdata()) == [4, 4] and line.get_label() == "best: epoch 4"
    assert axes["f1"].get_ylim() == (0.0, 1.0)
    assert axes["loss"].get_ylim()[0] == 0.0
    assert fig.get_suptitle() == "cnn_lstm · synthetic"


def test_vae_curves_are_a_bounded_grid_with_mmd_and_rhythm(tmp_path: Path) -> None:
    assert {"mmd", "rhythm_plausible", "rpeak_recall"} <= set(VAE_CURVES)
    n = 12
    rows = history_rows(
        n,
        {
            "train/wmse": list(np.linspace(0.2, 0.01, n)),
            "val/wmse": list(np.linspace(0.25, 0.012, n)),
            "train/kl": list(np.linspace(10, 50, n)),
            "val/kl": list(np.linspace(10, 52, n)),
            "val/rpeak_recall": list(0.9 + 0.02 * np.sin(np.arange(n))),  # autoscaled: a ±0.02 band
            "val/r_amplitude_ratio": list(np.linspace(0.85, 0.92, n)),
            "val/mmd": list(np.linspace(0.03, -0.001, n)),  # unbiased MMD² may dip below 0
            "val/rhythm_plausible": list(np.linspace(0.5, 0.8, n)),
            "val/rhythm_plausible_input": [0.88] * n,
        },
    )
    fig = drawn(training_curves_figure(rows, VAE_CURVES, best_epoch=9), tmp_path)
    width, height = fig.get_size_inches() * fig.dpi
    assert width / height < 2.5, (width, height)  # a grid, not a 2400x432 strip
    axes = panels(fig)
    assert set(axes) == set(VAE_CURVES)
    assert len({round(ax.get_position().y0, 3) for ax in axes.values()}) >= 2  # more than one row
    for name in ("rpeak_recall", "rhythm_plausible"):
        assert axes[name].get_ylim() == (0.0, 1.0), name
    low, high = axes["r_amplitude_ratio"].get_ylim()
    assert low == 0.0 and high >= 1.0  # 1 = faithful is in view
    low, high = axes["mmd"].get_ylim()
    assert low < -0.001 and 0.03 < high < 0.04
    assert [ln.get_label() for ln in axes["rhythm_plausible"].lines][:2] == ["val", "val, real inputs"]
    for ax in axes.values():
        assert all(re.fullmatch(r"\d+", t) for t in tick_labels(ax))
        assert len(best_lines(ax)) == 1


def test_best_epoch_is_the_checkpoint_callbacks_best_counted_from_one() -> None:
    rows = history_rows(4, {"val/f1": [0.5, 0.7, 0.7, 0.6]})

    def trainer(monitor: str | None, score: float | None) -> SimpleNamespace:
        best = None if score is None else torch.tensor(score)
        return SimpleNamespace(checkpoint_callback=SimpleNamespace(monitor=monitor, best_model_score=best))

    assert best_epoch(rows, trainer("val/f1", 0.7)) == 2  # the first epoch that reached it; epoch index 1
    assert best_epoch(rows, trainer("val/f1", None)) is None
    assert best_epoch(rows, trainer(None, 0.7)) is None
    assert best_epoch(rows, SimpleNamespace(checkpoint_callback=None)) is None


# -- generated beside real ------------------------------------------------------------------------------
def test_generated_ecgs_stand_beside_real_ones_on_one_scale(tmp_path: Path, monkeypatch) -> None:
    saved = capture(monkeypatch, gen_figures)
    t = np.arange(1000) / 100
    real = np.stack([3.0 * np.sin(2 * np.pi * t + k) for k in range(6)])
    generated = 0.2 * real[:, ::-1].copy()
    title = "lstm_vae · synthetic_normal · test split · best-epoch002"
    module = SimpleNamespace(
        test_examples={"inputs": real, "reconstructions": 0.9 * real, "generated": generated},
        fs=100.0,
        _test_metrics={},
        figure_title=title,
        run_config={"data": {"name": "synthetic_normal", "input": "raw"}},  # cleaned, z-scored windows
        run_warnings=[],
    )
    outcome = ECGGenerator.test_outcome(module)  # the test stage's figures, as the run writer draws them
    for name, draw in outcome.figures.items():
        draw(tmp_path / name)
    fig = saved["generated.png"]
    axes = [ax for ax in fig.axes if ax.lines]
    assert {ax.get_title() for ax in fig.axes} >= {"real", "generated"}
    assert len({ax.get_ylim() for ax in axes}) == 1  # one y scale for real and generated
    assert axes[0].get_ylim()[1] >= 3.0  # the real signals' range, so the small generated ones are seen small
    assert fig.get_supylabel() == "amplitude (z-score)" and fig.get_supxlabel() == "time (s)"
    assert fig.get_suptitle().startswith(title)
    overlays = saved["reconstructions.png"]
    assert overlays.get_suptitle().startswith(title) and overlays.get_supylabel() == "amplitude (z-score)"


def test_analytic_windows_are_labelled_in_relative_units() -> None:
    assert amplitude_unit({"input": "raw"}) == "z-score"
    assert amplitude_unit({"input": "analytic", "analytic": {"r_amplification": 2.0}}) == "a.u., R = 2"
    assert amplitude_unit(None) == "a.u., R = 1"  # analytic is the default input


# -- ROC, precision-recall, reliability ------------------------------------------------------------------
def separable(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Recording probabilities whose argmax is always right and whose true class always ranks first."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % len(CLASSES)
    probs = rng.dirichlet(np.ones(len(CLASSES)), n)
    probs[np.arange(n), targets] += 2.0
    return probs / probs.sum(1, keepdims=True), targets


def test_roc_and_pr_curves_one_vs_rest(tmp_path: Path) -> None:
    probs, targets = separable()
    roc = drawn(roc_figure(probs, targets, CLASSES, "run"), tmp_path).axes[0]
    assert roc.get_xlabel().startswith("false positive rate") and roc.get_ylabel().startswith("true positive")
    assert roc.get_xlim() == (0.0, 1.0) and roc.get_ylim() == (0.0, 1.0)
    legend = [t.get_text() for t in roc.get_legend().get_texts()]
    assert legend == ["chance"] + [f"{c} (AUC 1.000)" for c in CLASSES]
    pr = drawn(pr_figure(probs, targets, CLASSES), tmp_path).axes[0]
    assert pr.get_xlabel().startswith("recall") and pr.get_ylabel().startswith("precision")
    assert [t.get_text() for t in pr.get_legend().get_texts()] == [f"{c} (AP 1.000)" for c in CLASSES]
    # a class absent from the test recordings has no curve (and no error)
    roc3 = roc_figure(probs[targets != 3], targets[targets != 3], CLASSES).axes[0]
    assert len(roc3.get_legend().get_texts()) == 1 + 3


def test_reliability_bins_and_diagram() -> None:
    # ten recordings at confidence 0.8: eight right is calibrated, ten right is 0.2 under-confident
    probs = np.tile([0.8, 0.1, 0.05, 0.05], (10, 1))
    right = np.zeros(10, dtype=int)
    eight = right.copy()
    eight[:2] = 1
    assert float(reliability_bins(probs, eight)["ece"]) == pytest.approx(0.0)
    bins = reliability_bins(probs, right)
    assert float(bins["ece"]) == pytest.approx(0.2) and bins["count"][8] == 10 and bins["count"].sum() == 10
    top, bottom = reliability_figure(probs, right, "run").axes
    assert top.get_ylabel().startswith("accuracy") and bottom.get_xlabel().startswith("confidence")
    assert top.get_xlim() == (0.0, 1.0) and top.get_ylim() == (0.0, 1.0)
    assert "ECE 0.200" in top.get_title() and top.get_title().startswith("run\n")


# -- end to end: training's test and an evaluation on every record --------------------------------------
RECORD_FIGURES = ("roc_curves.png", "pr_curves.png", "reliability.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, dict[str, Figure]]:
    """A 3-epoch run on small synthetic data; its folder and the figures it drew."""
    out = tmp_path_factory.mktemp("paper_figures")
    cfg = compose_config(
        "train",
        ["trainer=cpu", *SMALL_SYNTHETIC, "trainer.max_epochs=3", "trainer.limit_train_batches=3",
         "trainer.limit_val_batches=2", "callbacks.progress.interactive=false", "model.net.rnn_hidden=16"],
        out,
        cache_dir,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        saved = capture(mp, clf_figures, capture(mp, app_figures))
        train(cfg)
    return out, saved


def test_training_run_marks_its_best_checkpoint_and_titles_its_test_figures(trained) -> None:
    out, saved = trained
    (best,) = (out / "checkpoints").glob("best-epoch*.ckpt")
    epoch = int(best.stem.removeprefix("best-epoch"))  # 1-based, as the curves count
    curves = saved["training_curves.png"]
    for ax in panels(curves).values():
        (line,) = best_lines(ax)
        assert line.get_xdata()[0] == epoch
    assert curves.get_suptitle().startswith("cnn_lstm · synthetic")
    title = f"cnn_lstm · synthetic · test split · {best.stem}"
    assert saved["confusion_matrix.png"].axes[0].get_title() == f"{title}\nwindows"
    assert saved["confusion_matrix_records.png"].axes[0].get_title() == f"{title}\nrecordings"
    for name in RECORD_FIGURES:
        assert (out / name).is_file(), name
        assert saved[name].axes[0].get_title().startswith(title), name
    n_records = json.loads((out / "test_metrics.json").read_text())["n_records"]
    counts = [p.get_height() for p in saved["reliability.png"].axes[1].patches]
    assert sum(counts) == n_records  # every test recording in the diagram


def test_evaluation_on_every_record_says_so(trained, tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    from tests.helpers import write_dataset

    out, _ = trained
    folder = write_dataset(tmp_path / "heldback", {f"B{i:05d}": "NAO~"[i % 4] for i in range(8)}, n=3000)
    cfg = compose_config(
        "eval",
        [f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "data=physionet2017", f"data.root={folder}",
         "data.split=all", "callbacks.progress.interactive=false"],
        tmp_path / "eval",
        cache_dir,
    )  # fmt: skip
    saved = capture(monkeypatch, clf_figures)
    evaluate(cfg)
    for name in ("confusion_matrix.png", "confusion_matrix_records.png", *RECORD_FIGURES):
        assert (tmp_path / "eval" / name).is_file(), name
        title = saved[name].axes[0].get_title()
        assert title.startswith("cnn_lstm · physionet2017 · all records · last"), title
        assert "test" not in title, title
