"""Shared fixtures: a composed, shrunk training config on a small synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from ecg_lab.app.config import register_resolvers

REPO = Path(__file__).resolve().parents[1]
SHARED_PN2017 = REPO.parent / "shared" / "data" / "physionet2017" / "training2017"

# small enough to generate in seconds, large enough for every class in every split
SMALL_SYNTHETIC = [
    "data.synthetic.n_records=48",
    "data.synthetic.min_duration_s=10",
    "data.synthetic.max_duration_s=12",
    "data.synthetic.shares=[0.25,0.25,0.25,0.25]",
    "data.batch_size=16",
]

register_resolvers()  # what the entry points do before composing


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so the synthetic dataset is generated once."""
    return tmp_path_factory.mktemp("cache")


def compose_config(name: str, overrides: list[str], output_dir: Path, cache_dir: Path) -> DictConfig:
    """Compose ``conf/<name>.yaml`` as a Hydra app would, with the run folder set to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose(
            config_name=name, return_hydra_config=True, overrides=[f"paths.cache_dir={cache_dir}", *overrides]
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


@pytest.fixture
def train_cfg(tmp_path: Path, cache_dir: Path):
    """Factory: the training config on small synthetic data, CPU, no logger, in ``tmp_path``."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        base = ["trainer=cpu", "logger=csv", *SMALL_SYNTHETIC, "callbacks.progress.interactive=false"]
        return compose_config("train", [*base, *overrides], output_dir or tmp_path / "run", cache_dir)

    return make


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def one_thread():
    """torch on one thread for the test (small LSTMs run faster so than on two busy cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
