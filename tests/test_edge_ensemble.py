"""Ensembles in the edge export and runtime: ``python -m ecg_lab.export ckpt_path=[a,b]`` (and ``make
pi-export CKPT='[a,b]'``) writes one folder with every member's checksummed files; the runtime's window
probabilities are the mean of the members' on both backends; members that differ, tampered or missing
member files and a generation member are refused; calibrations are ignored; the overwrite rules hold."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from ecg_lab.app.checkpoints import model_from_checkpoint
from ecg_lab.classification.ensemble import ensemble_classifier
from ecg_lab.edge import runtime as edge
from ecg_lab.edge.export import export_ensemble
from ecg_lab.errors import ConfigError
from tests.helpers import ecg_like, write_record
from tests.test_edge_integrity import CONFIG, edge_cli, make_pi_export, run_export, snapshot, write_checkpoint

MEMBER_FILES = ["cnn_lstm_1_weights.pth", "cnn_lstm_1.onnx", "cnn_lstm_2_weights.pth", "cnn_lstm_2.onnx"]


def export_of(ckpts: list[Path], out: Path, cache_dir: Path, *overrides: str) -> dict[str, Any]:
    """``python -m ecg_lab.export ckpt_path=[...] out_dir=OUT`` in this process."""
    return run_export(f"[{','.join(map(str, ckpts))}]", out, cache_dir, *overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """Two checkpoints of different weights (``a``, ``b``), each exported alone, their ensemble's
    export and a 30 s recording at 300 Hz (``record``: ``.mat`` + ``.hea``)."""
    tmp = tmp_path_factory.mktemp("edge_ensemble")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a = write_checkpoint(tmp / "a" / "best.ckpt", cache_dir, seed=0)
    b = write_checkpoint(tmp / "b" / "best.ckpt", cache_dir, seed=1)
    for name, ckpt in (("a", a), ("b", b)):
        run_export(ckpt, tmp / f"export_{name}", cache_dir)
    export_of([a, b], tmp / "ensemble", cache_dir)
    torch.set_num_threads(threads)
    write_record(tmp / "records", "A00001", ecg_like(9000, 300, seed=3), fs=300)
    return {
        "a": a,
        "b": b,
        "export_a": tmp / "export_a",
        "export_b": tmp / "export_b",
        "ensemble": tmp / "ensemble",
        "record": tmp / "records" / "A00001.mat",
    }


@pytest.fixture
def folder(made: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the ensemble's export, free to damage."""
    return Path(shutil.copytree(made["ensemble"], tmp_path / "ensemble"))


def with_ckpt(source: Path, target: Path, change: Any) -> Path:
    """A copy of the checkpoint ``source`` at ``target``, changed in place by ``change(ckpt)``."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    change(ckpt)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, target)
    return target


# -- 1. one folder holding every member, checksummed -----------------------------------------------


def test_an_ensemble_export_holds_every_members_files_checksummed(made) -> None:
    folder = made["ensemble"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["README.md", "ecg_lab", "requirements.txt", CONFIG, *MEMBER_FILES]
    )
    config = edge.check_export(folder)
    assert config["format"] == edge.FORMAT == 4 and config["task"] == "classification"
    assert "weights" not in config and "calibration" not in config
    members = config["members"]
    assert [m["source_checkpoint_path"] for m in members] == [
        str(made["a"].resolve()),
        str(made["b"].resolve()),
    ]
    assert [m["source_checkpoint_sha256"] for m in members] == [edge.sha256_file(made[k]) for k in "ab"]
    assert [(m["weights"], m["onnx"]) for m in members] == [tuple(MEMBER_FILES[:2]), tuple(MEMBER_FILES[2:])]
    assert all(m["architecture"] == "CRNN" for m in members)
    assert config["n_params"] == sum(m["n_params"] for m in members)
    assert config["sha256"]["files"] == {f: edge.sha256_file(folder / f) for f in MEMBER_FILES}
    single = json.loads((made["export_a"] / CONFIG).read_text())
    for key in ("classes", "fs", "window", "preprocess"):
        assert config[key] == single[key]
    readme = (folder / "README.md").read_text()
    assert "the state dicts of the ensemble's 2 members" in readme and "cnn_lstm_2.onnx" in readme


# -- 2. the runtime averages the members' probabilities --------------------------------------------


@pytest.mark.parametrize("backend", edge.BACKENDS)
def test_ensemble_probabilities_are_the_mean_of_its_members(made, backend: str, capsys) -> None:
    ensemble = edge.EdgeModel(made["ensemble"], backend)
    alone = [edge.EdgeModel(made[f"export_{k}"], backend) for k in "ab"]
    signal, fs = edge.read_recording(made["record"])
    windows = edge.windows_of(ensemble.config, signal, fs)
    probs = [edge.softmax(m.logits(windows)) for m in alone]
    mean = np.mean(probs, axis=0)
    assert not np.allclose(probs[0], probs[1], atol=1e-3)  # members that disagree: the mean is neither
    np.testing.assert_allclose(edge.softmax(ensemble.logits(windows)), mean, rtol=0, atol=1e-6)
    result = edge.classify_file(ensemble, made["record"])
    singles = [edge.classify_file(m, made["record"]) for m in alone]
    classes = ensemble.config["classes"]
    want = np.mean([[s["probabilities"][c] for c in classes] for s in singles], axis=0)
    np.testing.assert_allclose([result["probabilities"][c] for c in classes], want, rtol=0, atol=1e-4)
    assert result["class"] == classes[int(mean.mean(0).argmax())] and result["windows"] == len(windows)
    code, out, _ = edge_cli(
        capsys, "classify", "--export", made["ensemble"], "--record", made["record"], "--backend", backend
    )
    assert code == 0 and json.loads(out) == result


def test_the_runtime_ensemble_equals_evals(made) -> None:
    """The torch runtime's ensemble gives the probabilities of ``ecg_lab.eval``'s (MeanProbabilities)."""
    models = [model_from_checkpoint(made[k])[0] for k in "ab"]
    evaluated = ensemble_classifier(models, ["a", "b"])
    x = torch.randn(4, 1, 1500, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = torch.softmax(evaluated(x), dim=1).numpy()
    got = edge.softmax(edge.EdgeModel(made["ensemble"], "torch").logits(x.numpy()))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# -- 3. members that differ, and a generation member, are refused ----------------------------------


def other_classes(ckpt: dict[str, Any]) -> None:
    ckpt["ecg_lab"]["config"]["model"]["classes"] = ["N", "A", "O"]


def other_window(ckpt: dict[str, Any]) -> None:
    ckpt["ecg_lab"]["config"]["data"]["preprocess"]["window"] += 300


def other_fs(ckpt: dict[str, Any]) -> None:
    ckpt["ecg_lab"]["config"]["data"]["fs"] = 250


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (other_classes, r"differ in classes \(\['N', 'A', 'O', '~'\] vs \['N', 'A', 'O'\]\)"),
        (other_window, r"differ in data\.preprocess \(.*'window': 1500.* vs .*'window': 1800"),
        (other_fs, r"differ in data\.fs \(300 vs 250\)"),
    ],
    ids=["classes", "window", "fs"],
)
def test_members_that_differ_are_refused_in_one_line(
    made, tmp_path: Path, cache_dir: Path, change: Any, message: str
) -> None:
    other = with_ckpt(made["b"], tmp_path / "other" / "best.ckpt", change)
    with pytest.raises(ConfigError, match=message) as err:
        export_of([made["a"], other], tmp_path / "export", cache_dir)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"ckpt_path members {made['a']} and {other} differ in ")
    assert not (tmp_path / "export").exists()


def test_a_generation_member_is_refused(tmp_path: Path) -> None:
    models = [SimpleNamespace(TASK="classification"), SimpleNamespace(TASK="generation")]
    with pytest.raises(
        ValueError, match=r"^ckpt_path member vae\.ckpt holds a generation model; .*classification"
    ):
        export_ensemble(models, [None, None], tmp_path / "export", "x", ["clf.ckpt", "vae.ckpt"])  # type: ignore[list-item]
    assert not (tmp_path / "export").exists()


def test_members_calibrations_are_ignored_with_a_warning(
    made, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def calibrate(ckpt: dict[str, Any]) -> None:
        ckpt["ecg_lab"]["calibration"] = {
            "method": "prior",
            "classes": ["N", "A", "O", "~"],
            "values": [0, 0, 0, 9],
        }

    calibrated = with_ckpt(made["b"], tmp_path / "calibrated" / "best.ckpt", calibrate)
    with caplog.at_level(logging.WARNING, logger="ecg_lab.classification.ensemble"):
        config = export_of([made["a"], calibrated], tmp_path / "export", cache_dir)
    assert f"ignoring the calibration stored in {calibrated}" in caplog.text
    assert "calibration" not in config and not any("calibration" in m for m in config["members"])
    assert "calibration" not in edge.classify_file(
        edge.EdgeModel(tmp_path / "export", "onnx"), made["record"]
    )


# -- 4. integrity: each member's files checked ----------------------------------------------------


def tamper(name: str) -> Any:
    def damage(folder: Path) -> None:
        data = bytearray((folder / name).read_bytes())
        data[-100] ^= 0xFF  # one flipped byte near the end: same size, other contents
        (folder / name).write_bytes(bytes(data))

    return damage


def remove(name: str) -> Any:
    return lambda folder: (folder / name).unlink()


def drop_member(folder: Path) -> None:
    config = json.loads((folder / CONFIG).read_text())
    config["members"].pop()
    (folder / CONFIG).write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "backend", "problem"),
    [
        (
            tamper("cnn_lstm_2_weights.pth"),
            "torch",
            rf"cnn_lstm_2_weights\.pth: does not match the sha256 {CONFIG}",
        ),
        (tamper("cnn_lstm_2.onnx"), "onnx", rf"cnn_lstm_2\.onnx: does not match the sha256 {CONFIG} records"),
        (
            remove("cnn_lstm_2_weights.pth"),
            "torch",
            rf"cnn_lstm_2_weights\.pth: the file named by member 2's 'weights' in {CONFIG} is missing",
        ),
        (
            remove("cnn_lstm_1.onnx"),
            "onnx",
            rf"cnn_lstm_1\.onnx: the file named by member 1's 'onnx' in {CONFIG}",
        ),
        (drop_member, "onnx", rf"{CONFIG}: does not match the sha256 the export recorded for it"),
    ],
    ids=["tampered-pth", "tampered-onnx", "missing-pth", "missing-onnx", "dropped-member"],
)
def test_a_damaged_member_is_refused_in_one_line(
    made, folder: Path, capsys, damage: Any, backend: str, problem: str
) -> None:
    damage(folder)
    argv = ["classify", "--export", folder, "--record", made["record"], "--backend", backend]
    code, out, err = edge_cli(capsys, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert re.search(problem, err), err
    with pytest.raises((ValueError, FileNotFoundError), match=problem):
        edge.check_export(folder)


# -- 5. overwrite rules: the same members may replace their export, others need overwrite ----------


def test_reexporting_the_same_members_is_allowed_and_others_need_overwrite(
    made, folder: Path, cache_dir: Path
) -> None:
    before = snapshot(folder)
    with pytest.raises(
        FileExistsError,
        match=rf"{folder} already holds another export \({CONFIG}, of an ensemble of 2: "
        rf"{made['a'].resolve()}, {made['b'].resolve()}\); pass overwrite=true",
    ):
        run_export(made["a"], folder, cache_dir)
    assert snapshot(folder) == before
    config = export_of([made["b"], made["a"]], folder, cache_dir)  # the same members, in another order
    assert [m["source_checkpoint_path"] for m in config["members"]] == [
        str(made["b"].resolve()),
        str(made["a"].resolve()),
    ]
    edge.check_export(folder)


# -- 6. make pi-export CKPT='[a,b]' -----------------------------------------------------------------


@pytest.mark.slow  # a child process and two members' ONNX exports: ~35 s
def test_make_pi_export_exports_an_ensemble(made, tmp_path: Path) -> None:
    out = tmp_path / "pi"
    ckpt = f"[{made['a']},{made['b']}]"
    make_pi_export(ckpt, sys.executable, f"out_dir={out} paths.log_dir={tmp_path / 'outputs'} threads=1")  # type: ignore[arg-type]
    config = edge.check_export(out)
    assert [m["source_checkpoint_path"] for m in config["members"]] == [str(made["a"]), str(made["b"])]
    assert sorted(config["sha256"]["files"]) == sorted(MEMBER_FILES)
