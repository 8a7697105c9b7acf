"""The embedded default recipe (experiment=lstm_vae) keeps its posterior open: trained briefly on a small
synthetic set, its validation KL never falls below the collapse threshold and no collapse of the KL is
warned about; its generated samples come from the latent mixture stored in the tested checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ecg_lab.train import train
from tests.conftest import compose_config
from tests.test_waveforms import SMALL_NORMAL

BRIEF = [
    "experiment=lstm_vae",
    "trainer=cpu",
    *SMALL_NORMAL,
    "callbacks.progress.interactive=false",
    "trainer.max_epochs=30",
    "trainer.limit_train_batches=6",
    "trainer.check_val_every_n_epoch=1",
    "model.fidelity.n_generated=8",
    "model.fidelity.discriminative.epochs=1",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def validation_kl(run: Path) -> list[float]:
    with (run / "csv" / "metrics.csv").open() as f:
        return [float(r["val/kl"]) for r in csv.DictReader(f) if r.get("val/kl")]


def test_default_recipe_keeps_the_kl_open(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", BRIEF, tmp_path, cache_dir)
    train(cfg)
    kl = validation_kl(tmp_path)
    assert len(kl) == 30
    assert min(kl) > cfg.model.collapse.min_kl, kl  # 180 steps, β on from the 55th: still open
    # (180 steps are too few for the beats: the reconstructions' recall may be warned about, not the KL)
    warnings = json.loads((tmp_path / "run_status.json").read_text()).get("warnings", [])
    assert not [w for w in warnings if "min_kl" in w or "min_active_units" in w], warnings

    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert metrics["sampler"] == "gmm, 10 components"
    assert 0 <= metrics["rhythm_plausible_prior"] <= 1 and metrics["nearest_train_ratio"] > 0
    assert metrics["step_artefact_ratio"] > 0  # at the decoder's step rate, 100 Hz / 10 samples
    state = torch.load(metrics["ckpt_path"], map_location="cpu", weights_only=False)["state_dict"]
    assert bool(state["latent_density.fitted"]) and state["latent_density.scale_tril"].shape == (10, 16, 16)
