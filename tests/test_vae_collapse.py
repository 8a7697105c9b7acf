"""A collapsed VAE is caught: a forced collapse (a posterior that starts as the prior, β huge) is warned
about in the log and in run_status.json, the tested checkpoint is named as collapsed, and checkpoints
follow val/guarded_loss, which adds a penalty to a collapsed epoch."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_lab.generation.collapse import CollapseCheck, active_units
from ecg_lab.train import train
from tests.conftest import compose_config
from tests.test_waveforms import SMALL_NORMAL

TINY = [
    "experiment=lstm_vae",
    "trainer=cpu",
    *SMALL_NORMAL,
    "callbacks.progress.interactive=false",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.check_val_every_n_epoch=1",
    "model.fidelity.n_generated=8",
    "model.fidelity.discriminative.epochs=1",
]
#: a posterior that starts as wide as the prior (log-variance 0) and a KL weight of 100 from the second
#: step on: it closes at once
FORCED_COLLAPSE = [
    "model.net.init_logvar=0",
    "loss.beta.beta_max=100",
    "loss.beta.warmup_fraction=0",
    "loss.beta.cycles=1",
    "loss.beta.rising_fraction=0.01",
    "loss.free_bits=0",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_collapse_check_reasons_and_guarded_loss() -> None:
    check = CollapseCheck(min_kl=2.0, min_active_units=1, min_rpeak_recall=0.2, penalty=1.0)
    assert check.reasons(30.0, 0.9, 16) == []
    assert [r.split(" ")[0] for r in check.reasons(0.5, 0.05, 0)] == ["KL", "0", "rpeak_recall"]
    assert "model.collapse.min_kl=2" in check.reasons(0.5, 0.9, 16)[0]
    assert "model.collapse.min_active_units=1" in check.reasons(30.0, 0.9, 0)[0]  # a wide, idle posterior
    assert check.reasons(30.0, float("nan"), 16) == []  # no input R-peaks: recall is not judged
    # a collapsed epoch loses against any healthy one whose val/loss is less than the penalty higher
    assert check.guarded(0.05, True) > check.guarded(0.9, False)
    assert check.guarded(0.05, False) == 0.05
    with pytest.raises(ValueError, match=r"model\.collapse\.min_kl=-1"):
        CollapseCheck(min_kl=-1)


def test_active_units_count_the_latent_means_that_vary() -> None:
    rng = np.random.default_rng(0)
    mu = np.zeros((200, 4))
    mu[:, 0] = rng.standard_normal(200)  # used
    mu[:, 1] = 0.05 * rng.standard_normal(200)  # variance 0.0025: idle
    mu[:, 2] = 3.0  # constant: idle
    assert active_units(mu) == 1 and active_units(mu[:1]) == 0


def test_checkpoints_and_early_stopping_follow_the_guarded_loss(tmp_path: Path, cache_dir: Path) -> None:
    for experiment in ("lstm_vae", "lstm_vae_normal_ecg", "lstm_vae_real"):
        cfg = compose_config("train", [f"experiment={experiment}"], tmp_path, cache_dir)
        assert cfg.model.monitor == "val/guarded_loss"
        assert (
            cfg.callbacks.model_checkpoint.monitor
            == cfg.callbacks.early_stopping.monitor
            == "val/guarded_loss"
        )


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("collapsed")
    torch.set_num_threads(1)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("ecg_lab.generation.module")
    logger.addHandler(handler)
    try:
        train(compose_config("train", [*TINY, *FORCED_COLLAPSE], out, cache_dir))
    finally:
        logger.removeHandler(handler)
    return out, [r.getMessage() for r in records]


def test_forced_collapse_is_warned_in_the_log_and_run_status(collapsed_run) -> None:
    out, logged = collapsed_run
    status = json.loads((out / "run_status.json").read_text())
    assert status["status"] == "completed"
    assert status["warnings"] == logged and len(logged) == 2
    ended, tested = logged
    start = "the VAE ended training collapsed: its last 2 validation epoch(s), 1-2, were collapsed; "
    assert ended.startswith(start + "at epoch 2: KL ")
    assert "loss.free_bits" in ended  # what to try
    best = next((out / "checkpoints").glob("best-*.ckpt"))
    epoch = int(best.stem.removeprefix("best-epoch"))  # counted from 1
    assert tested.startswith(f"the tested checkpoint {best} (epoch {epoch}) is collapsed: KL ")
    assert "rpeak_recall" in tested
    assert json.loads((out / "test_metrics.json").read_text())["collapsed"] is True


def test_collapsed_epochs_carry_the_penalty_in_the_checkpoint_metric(collapsed_run) -> None:
    out, _ = collapsed_run
    with (out / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/guarded_loss")]
    assert len(rows) == 2
    for row in rows:
        assert float(row["val/collapsed"]) == 1.0 and float(row["val/kl"]) < 2.0
        assert float(row["val/guarded_loss"]) == pytest.approx(float(row["val/loss"]) + 1.0, rel=1e-5)
