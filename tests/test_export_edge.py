"""Export to an edge device and the edge runtime: same outputs as the LightningModule, and no training
stack needed to run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_lab import edge
from ecg_lab.eval import model_from_checkpoint
from ecg_lab.export import export
from ecg_lab.train import train
from tests.conftest import REPO, SMALL_SYNTHETIC, compose_config
from tests.test_waveforms import SMALL_NORMAL

ONE_STEP = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "test=false",
    "callbacks.progress.interactive=false",
]
TRAINING_STACK = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb", "neurokit2")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, tuple[Path, Path]]:
    """A classifier and a VAE, each trained one step, checkpointed and exported: {name: (ckpt, export)}."""
    out: dict[str, tuple[Path, Path]] = {}
    torch.set_num_threads(1)
    for name, overrides in {
        "cnn_lstm": [*SMALL_SYNTHETIC],
        "lstm_vae": ["experiment=lstm_vae", *SMALL_NORMAL, "model.fidelity.n_generated=4"],
    }.items():
        run = tmp_path_factory.mktemp(name)
        train(compose_config("train", [*ONE_STEP, *overrides], run / "run", cache_dir))
        ckpt = run / "run" / "checkpoints" / "last.ckpt"
        export(
            compose_config("export", [f"ckpt_path={ckpt}", f"out_dir={run / 'export'}"], run / "x", cache_dir)
        )
        out[name] = (ckpt, run / "export")
    return out


def test_export_folder_holds_weights_config_and_readme(exports) -> None:
    for name, (_, folder) in exports.items():
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["README.md", f"{name}_config.json", f"{name}_weights.pth"]
        )
        config = json.loads((folder / f"{name}_config.json").read_text())
        assert config["weights"] == f"{name}_weights.pth" and config["fs"] > 0
        state = torch.load(folder / config["weights"], weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state dict
    clf = json.loads((exports["cnn_lstm"][1] / "cnn_lstm_config.json").read_text())
    assert (
        clf["classes"] == ["N", "A", "O", "~"]
        and clf["window"] == 1500
        and clf["preprocess"]["highcut"] == 40
    )
    vae = json.loads((exports["lstm_vae"][1] / "lstm_vae_config.json").read_text())
    assert vae["task"] == "generation" and vae["window"] == vae["hyperparameters"]["seq_len"] == 1000


@pytest.mark.parametrize("name", ["cnn_lstm", "lstm_vae"])
def test_edge_network_matches_the_lightning_module(exports, name: str) -> None:
    ckpt, folder = exports[name]
    module, _ = model_from_checkpoint(ckpt)
    net, _ = edge.load(folder)
    torch.manual_seed(0)
    if name == "lstm_vae":
        z = torch.randn(4, net.latent_dim)
        with torch.no_grad():
            assert torch.allclose(net.decode(z), module.net.decode(z), atol=1e-6)
        assert np.allclose(edge.generate(net, 4, seed=1), module.generate(4, seed=1), atol=1e-6)
    else:
        x = torch.randn(3, 1, 1500)
        with torch.no_grad():
            assert torch.allclose(net(x), module(x), atol=1e-6)


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"the edge runtime imported {{name}}")
sys.meta_path.insert(0, Block())
sys.argv = ["ecg_lab.edge", *{argv!r}]
import runpy
runpy.run_module("ecg_lab.edge", run_name="__main__")
"""


def run_edge(*argv: str) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=set(TRAINING_STACK), argv=list(argv))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_edge_generates_without_the_training_stack(exports, tmp_path: Path) -> None:
    out = tmp_path / "synth.csv"
    proc = run_edge("generate", "--export", str(exports["lstm_vae"][1]), "--n", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert table.shape == (1000, 4) and np.isfinite(table).all()
    assert out.read_text().splitlines()[0] == "time_s,ecg_0,ecg_1,ecg_2"


def test_edge_classifies_a_recording_without_the_training_stack(exports, cache_dir: Path) -> None:
    record = next((cache_dir / "synthetic").glob("*/training2017/*.mat"))
    proc = run_edge("classify", "--export", str(exports["cnn_lstm"][1]), "--record", str(record))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["class"] in ("N", "A", "O", "~") and result["windows"] >= 1
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)


def test_the_blocker_would_catch_an_import(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER.format(blocked={"numpy"}, argv=["--help"])],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode != 0 and "the edge runtime imported numpy" in proc.stderr


def test_edge_rejects_a_folder_without_an_export(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pi-export"):
        edge.load(tmp_path)
