"""Export to an edge device and the edge runtime: the same outputs as the LightningModule on torch
and ONNX Runtime, for every classifier and the VAE, and no training stack needed to run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

import ecg_lab
from ecg_lab.app.checkpoints import model_from_checkpoint
from ecg_lab.classification.variants import model_names
from ecg_lab.edge import runtime as edge
from ecg_lab.edge.export import edge_requirements, export_model, runtime_files
from ecg_lab.export import export
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
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


def test_export_folder_holds_weights_config_onnx_runtime_and_readme(exports) -> None:
    onnx = {"cnn_lstm": ["cnn_lstm.onnx"], "lstm_vae": ["lstm_vae.onnx", "lstm_vae_encoder.onnx"]}
    for name, (_, folder) in exports.items():
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["README.md", "ecg_lab", "requirements.txt", f"{name}_config.json", f"{name}_weights.pth"]
            + onnx[name]
        )
        config = json.loads((folder / f"{name}_config.json").read_text())
        assert config["format"] == edge.FORMAT and config["ecg_lab_version"] == ecg_lab.__version__
        assert config["source_checkpoint"] == "last.ckpt"
        assert Path(config["source_checkpoint_path"]) == exports[name][0].resolve()
        assert config["source_checkpoint_sha256"] == edge.sha256_file(exports[name][0])
        assert sorted(config["sha256"]["files"]) == sorted([f"{name}_weights.pth", *onnx[name]])
        requirements = [ln for ln in (folder / "requirements.txt").read_text().splitlines() if ln[:1] != "#"]
        assert requirements == edge_requirements() and any(r.startswith("onnxruntime") for r in requirements)
        assert config["weights"] == f"{name}_weights.pth" and config["fs"] > 0
        assert config["onnx"] == f"{name}.onnx"
        state = torch.load(folder / config["weights"], weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state dict
        assert (
            sorted(str(p.relative_to(folder / "ecg_lab")) for p in (folder / "ecg_lab").rglob("*.py"))
            == runtime_files()
        )
        assert "python -m ecg_lab.edge" in (folder / "README.md").read_text()
    clf = json.loads((exports["cnn_lstm"][1] / "cnn_lstm_config.json").read_text())
    assert (
        clf["classes"] == ["N", "A", "O", "~"]
        and clf["window"] == 1500
        and clf["preprocess"]["highcut"] == 40
    )
    vae = json.loads((exports["lstm_vae"][1] / "lstm_vae_config.json").read_text())
    assert vae["task"] == "generation" and vae["window"] == vae["hyperparameters"]["seq_len"] == 1000
    assert vae["onnx_encoder"] == "lstm_vae_encoder.onnx"


def test_the_runtime_files_are_the_edge_package_and_what_it_imports() -> None:
    files = runtime_files()
    for needed in ("__init__.py", "edge/__main__.py", "edge/runtime.py", "edge/preprocess.py"):
        assert needed in files
    for needed in ("models/crnn.py", "models/lstm_vae.py", "data/records.py", "models/__init__.py"):
        assert needed in files  # imported by the runtime, so copied with it
    assert "edge/export.py" not in files and not any(f.startswith(("app/", "classification/")) for f in files)


def test_the_runtime_refuses_an_unknown_export_format(exports, tmp_path: Path) -> None:
    folder = tmp_path / "future"
    shutil.copytree(exports["cnn_lstm"][1], folder)
    config_path = folder / "cnn_lstm_config.json"
    config = json.loads(config_path.read_text()) | {"format": 99, "ecg_lab_version": "9.0"}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"format 99 \(written by ecg_lab 9\.0\) is not one this runtime"):
        edge.EdgeModel(folder, "onnx")


@pytest.mark.parametrize("name", model_names())
def test_every_classifier_exports_with_parity(name: str, tmp_path: Path, cache_dir: Path) -> None:
    """torch export == LightningModule (atol 1e-6), ONNX Runtime == torch (atol 1e-4)."""
    torch.manual_seed(0)
    cfg = compose_config("train", [f"model={name}"], tmp_path / "run", cache_dir)
    module = hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss)).eval()
    with torch.no_grad():  # move BatchNorm statistics off their initial values
        module.net.train()(torch.randn(8, 1, 1500) * 3 + 1)
    module.eval()
    export_model(module, cfg, tmp_path / "export", name)
    x = torch.randn(5, 1, 1500).numpy()
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    on_torch = edge.EdgeModel(tmp_path / "export", "torch").logits(x)
    on_onnx = edge.EdgeModel(tmp_path / "export", "onnx").logits(x)
    np.testing.assert_allclose(on_torch, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(on_onnx, on_torch, rtol=0, atol=1e-4)


def test_vae_export_has_parity(exports) -> None:
    ckpt, folder = exports["lstm_vae"]
    module, _ = model_from_checkpoint(ckpt)
    on_torch, on_onnx = edge.EdgeModel(folder, "torch"), edge.EdgeModel(folder, "onnx")
    assert len(on_torch.config["latent_density"]["weights"]) == 10  # experiment=lstm_vae: its mixture
    z = edge.latents(on_torch.config, 6, seed=3)
    with torch.no_grad():
        want = module.net.decode(torch.from_numpy(z))[:, 0].numpy()
        x = module.net.decode(torch.randn(4, module.net.latent_dim))
        mu, logvar = module.net.encode(x)
    np.testing.assert_allclose(on_torch.decode(z), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(on_onnx.decode(z), want, rtol=0, atol=1e-4)
    encoder = edge.onnx_session(folder / "lstm_vae_encoder.onnx")
    got_mu, got_logvar = encoder.run(None, {"window": x.numpy()})
    np.testing.assert_allclose(got_mu, mu.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_logvar, logvar.numpy(), rtol=0, atol=1e-4)


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
import ecg_lab
print("runtime from", ecg_lab.__file__, file=sys.stderr)
"""


def run_edge(
    folder: Path, *argv: str, blocked: tuple[str, ...] = TRAINING_STACK
) -> subprocess.CompletedProcess:
    """``python -m ecg_lab.edge ARGV`` from the export folder, where importing ``blocked`` raises."""
    code = BLOCKER.format(blocked=set(blocked), argv=list(argv))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=folder, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert f"runtime from {folder / 'ecg_lab' / '__init__.py'}" in proc.stderr  # the folder's own copy
    return proc


@pytest.mark.parametrize(
    ("backend", "blocked"), [("torch", TRAINING_STACK), ("onnx", (*TRAINING_STACK, "torch"))]
)
def test_edge_generates_without_the_training_stack(exports, tmp_path: Path, backend, blocked) -> None:
    folder = exports["lstm_vae"][1]
    out = tmp_path / "synth.csv"
    run_edge(
        folder,
        "generate",
        "--export",
        ".",
        "--n",
        "3",
        "--out",
        str(out),
        "--backend",
        backend,
        blocked=blocked,
    )
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert table.shape == (1000, 4) and np.isfinite(table).all()
    assert out.read_text().splitlines()[0] == "time_s,ecg_0,ecg_1,ecg_2"
    want = edge.generate(edge.EdgeModel(folder, "torch"), 3, seed=0)
    np.testing.assert_allclose(table[:, 1:].T, want, rtol=1e-4, atol=1e-4)  # both backends, same ECGs


def test_edge_writes_a_png(exports, tmp_path: Path) -> None:
    out = tmp_path / "synth.csv"
    run_edge(exports["lstm_vae"][1], "generate", "--export", ".", "--n", "2", "--out", str(out), "--png")
    assert out.with_suffix(".png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("backend", "blocked"), [("torch", TRAINING_STACK), ("onnx", (*TRAINING_STACK, "torch"))]
)
def test_edge_classifies_a_recording_without_the_training_stack(
    exports, cache_dir: Path, backend, blocked
) -> None:
    folder = exports["cnn_lstm"][1]
    record = next((cache_dir / "synthetic").glob("*/training2017/*.mat"))
    argv = ["classify", "--export", ".", "--record", str(record), "--backend", backend]
    result = json.loads(run_edge(folder, *argv, blocked=blocked).stdout)
    assert result["class"] in ("N", "A", "O", "~") and result["windows"] >= 1
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    expected = edge.classify(edge.EdgeModel(folder, "torch"), *edge.read_recording(record))
    assert result["class"] == expected["class"]
    for cls, p in expected["probabilities"].items():
        assert result["probabilities"][cls] == pytest.approx(p, abs=2e-4)


def test_edge_windows_match_the_training_pipeline(exports, cache_dir: Path) -> None:
    """The runtime's preprocessing gives the windows the datamodule trains on."""
    from ecg_lab.data.physionet2017 import read_record
    from ecg_lab.edge.preprocess import Preprocessing

    folder = exports["cnn_lstm"][1]
    config = edge.read_config(folder)
    record_path = next((cache_dir / "synthetic").glob("*/training2017/*.mat"))
    record = read_record(record_path.parent, record_path.stem, "N", 300.0, ["N"])
    prep = Preprocessing(**config["preprocess"])
    x = prep.apply(record)
    want = np.stack([x[s : s + prep.window] for s in prep.starts(x.size)])
    np.testing.assert_array_equal(edge.windows_of(config, *edge.read_recording(record_path)), want)


def test_edge_reads_a_csv_recording(exports, cache_dir: Path, tmp_path: Path) -> None:
    record = next((cache_dir / "synthetic").glob("*/training2017/*.mat"))
    signal, fs = edge.read_recording(record)
    assert fs == 300  # from the .hea beside the .mat
    csv = tmp_path / "record.csv"
    np.savetxt(
        csv,
        np.column_stack([np.arange(signal.size) / 300, signal]),
        delimiter=",",
        header="t,mV",
        comments="",
    )
    from_csv, stated = edge.read_recording(csv)
    np.testing.assert_allclose(from_csv, signal, atol=1e-6)
    assert stated is None  # a CSV states no rate: the runtime assumes the export's (or --fs)
    model = edge.EdgeModel(exports["cnn_lstm"][1])
    assert edge.classify(model, from_csv) == edge.classify(model, signal)


def test_the_blocker_would_catch_an_import(exports) -> None:
    code = BLOCKER.format(blocked={"numpy"}, argv=["generate", "--export", "."])
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=exports["lstm_vae"][1], timeout=120
    )
    assert proc.returncode != 0 and "the edge runtime imported numpy" in proc.stderr


def test_a_missing_backend_says_what_to_install(exports) -> None:
    code = BLOCKER.format(blocked={"torch"}, argv=["generate", "--export", "."])
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=exports["lstm_vae"][1], timeout=120
    )
    assert proc.returncode == 2
    assert "--backend torch needs torch (pip install torch); or use --backend onnx" in proc.stderr


def test_edge_errors_name_the_problem(exports, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(FileNotFoundError, match="pi-export"):
        edge.EdgeModel(tmp_path)
    with pytest.raises(SystemExit):
        edge.main(["generate", "--export", str(exports["cnn_lstm"][1]), "--out", str(tmp_path / "x.csv")])
    assert "holds a classification model; `generate` needs a generation export" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(SystemExit):  # a VAE export, --out a folder: one line, not IsADirectoryError
        edge.main(["generate", "--export", str(exports["lstm_vae"][1]), "--out", str(tmp_path)])
    assert capsys.readouterr().err.splitlines() == [
        f"python -m ecg_lab.edge generate: error: --out {tmp_path}: is a folder; "
        f"give a file name, e.g. --out {tmp_path / 'synth.csv'}"
    ]
    with pytest.raises(FileNotFoundError, match="no such recording"):
        edge.read_recording(tmp_path / "missing.mat")
    with pytest.raises(ValueError, match="backend"):
        edge.EdgeModel(exports["cnn_lstm"][1], "tflite")
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in ("lstm_vae_config.json", "lstm_vae_weights.pth"):
        (partial / f).write_bytes((exports["lstm_vae"][1] / f).read_bytes())
    with pytest.raises(FileNotFoundError, match="lstm_vae.onnx.*copy the whole export folder"):
        edge.EdgeModel(partial, "onnx")


def test_export_refuses_a_folder_holding_another_export(exports, cache_dir: Path, tmp_path: Path) -> None:
    ckpt, folder = exports["lstm_vae"]
    cfg = compose_config(
        "export", [f"ckpt_path={ckpt}", f"out_dir={exports['cnn_lstm'][1]}"], tmp_path, cache_dir
    )
    with pytest.raises(FileExistsError, match="already holds another export.*cnn_lstm_config.json"):
        export(cfg)
    assert not (exports["cnn_lstm"][1] / "lstm_vae_config.json").exists()
