"""Edge export and runtime integrity: recordings at other rates, checksummed configs and weights,
atomic exports, re-export rules, one-line runtime errors, ``make pi-export`` with an awkward path and
``threads=N`` for the export verb."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import scipy.io
import torch
from scipy.signal import resample_poly

from ecg_lab.app.config import to_container
from ecg_lab.edge import export as edge_export
from ecg_lab.edge import runtime as edge
from ecg_lab.export import export
from tests.conftest import REPO, compose_config
from tests.helpers import ecg_like, write_record

NAME = "cnn_lstm"
CONFIG = f"{NAME}_config.json"
WEIGHTS = f"{NAME}_weights.pth"
ONNX = f"{NAME}.onnx"
NO_RATE = "no sampling rate stated (--fs HZ for a CSV, a .hea beside a .mat); assuming the export's 300 Hz"


def write_checkpoint(path: Path, cache_dir: Path, seed: int) -> Path:
    """A cnn_lstm checkpoint as ``ecg_lab.train`` writes one (state dict + run config), of fresh weights
    drawn with ``seed``: no training needed."""
    cfg = compose_config("train", [], path.parent / "run", cache_dir)
    torch.manual_seed(seed)
    module = hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss))
    with torch.no_grad():  # move BatchNorm statistics off their initial values
        module.net.train()(torch.randn(8, 1, 1500) * 3 + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "ecg_lab": {"config": to_container(cfg)}}, path)
    return path


def run_export(ckpt: Path, out: Path, cache_dir: Path, *overrides: str) -> dict[str, Any]:
    """``python -m ecg_lab.export ckpt_path=CKPT out_dir=OUT ...`` in this process."""
    cfg = compose_config(
        "export",
        [f"ckpt_path={ckpt}", f"out_dir={out}", *overrides],
        out.parent / f"{out.name}.run",
        cache_dir,
    )
    return export(cfg)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """Two checkpoints of different weights (``a``, ``b``), the export of ``a`` and a 30 s recording at
    300 Hz (``record``: ``.mat`` + ``.hea``)."""
    tmp = tmp_path_factory.mktemp("integrity")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a = write_checkpoint(tmp / "a" / "best.ckpt", cache_dir, seed=0)
    b = write_checkpoint(tmp / "b" / "best.ckpt", cache_dir, seed=1)
    run_export(a, tmp / "export_a", cache_dir)
    torch.set_num_threads(threads)
    write_record(tmp / "records", "A00001", ecg_like(9000, 300, seed=3), fs=300)
    return {"a": a, "b": b, "export": tmp / "export_a", "record": tmp / "records" / "A00001.mat"}


@pytest.fixture
def folder(made: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the export of checkpoint ``a``, free to damage."""
    return Path(shutil.copytree(made["export"], tmp_path / "export"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_config(folder: Path, edit: Any) -> None:
    path = folder / CONFIG
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config, indent=2))


def edge_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """``python -m ecg_lab.edge ARGV`` in this process: exit code, stdout, stderr."""
    code = 0
    try:
        edge.main([str(a) for a in argv])
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def write_csv(path: Path, signal: np.ndarray) -> Path:
    np.savetxt(path, signal, fmt="%.6f", header="mV", comments="")
    return path


# -- 1. recordings at another sampling rate --------------------------------------------------------


def test_a_csv_at_another_rate_is_resampled_to_the_exports(made, tmp_path: Path, capsys) -> None:
    signal, fs = edge.read_recording(made["record"])
    assert fs == 300
    model = edge.EdgeModel(made["export"])
    want = edge.classify(model, signal, fs)
    csv = write_csv(tmp_path / "at500.csv", resample_poly(signal, 5, 3))  # 300 Hz → 500 Hz
    code, out, err = edge_cli(capsys, "classify", "--export", made["export"], "--record", csv, "--fs", "500")
    assert code == 0 and err == ""
    got = json.loads(out)
    assert got["windows"] == want["windows"] == 11  # 30 s, not the 50 s that 15,000 samples at 300 Hz are
    assert got["class"] == want["class"]
    config = edge.read_config(made["export"])
    back = edge.windows_of(config, *edge.read_recording(csv, 500))  # 500 Hz → the export's 300 Hz
    assert np.abs(back - edge.windows_of(config, signal, fs)).mean() < 0.01  # z-scored: mean |x| 0.4
    code, out, err = edge_cli(capsys, "classify", "--export", made["export"], "--record", csv)
    assert code == 0 and json.loads(out)["windows"] == 19  # taken as 300 Hz, as it says on stderr:
    assert err.splitlines() == [f"{csv}: {NO_RATE}"]


def test_a_mat_takes_its_rate_from_its_hea(made, tmp_path: Path, capsys) -> None:
    signal, _ = edge.read_recording(made["record"])
    at500 = resample_poly(signal, 5, 3)  # 300 Hz → 500 Hz
    write_record(tmp_path, "B00001", np.round(at500 * 1000).astype(np.int16), fs=500)
    mat = tmp_path / "B00001.mat"
    assert edge.read_recording(mat)[1] == 500
    code, out, err = edge_cli(capsys, "classify", "--export", made["export"], "--record", mat)
    assert code == 0 and err == "" and json.loads(out)["windows"] == 11
    code, _, err = edge_cli(capsys, "classify", "--export", made["export"], "--record", mat, "--fs", "300")
    assert code == 2 and "--fs 300 disagrees with B00001.hea (500 Hz); drop --fs or fix it" in err
    (tmp_path / "B00001.hea").unlink()  # no header: the export's rate, said on stderr
    code, out, err = edge_cli(capsys, "classify", "--export", made["export"], "--record", mat)
    assert code == 0 and json.loads(out)["windows"] == 19
    assert err.splitlines() == [f"{mat}: {NO_RATE}"]


# -- 2. the config and the weights checked against each other ----------------------------------------


def test_the_export_records_checksums_of_its_config_and_weights(made) -> None:
    config = json.loads((made["export"] / CONFIG).read_text())
    assert config["sha256"]["config"] == edge.config_checksum(config)
    assert config["sha256"]["files"] == {f: edge.sha256_file(made["export"] / f) for f in (WEIGHTS, ONNX)}
    canonical = {k: v for k, v in config.items() if k != "sha256"}  # the checksum's own input
    assert (
        edge.config_checksum(config)
        == hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["hyperparameters"].update(readout="mean"),
        lambda c: c.update(window=1200),
        lambda c: c.update(fs=250.0),
        lambda c: c.update(classes=["A", "N", "O", "~"]),
    ],
    ids=["readout", "window", "fs", "classes"],
)
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_an_edited_config_is_refused(folder: Path, edit, backend: str) -> None:
    edit_config(folder, edit)
    with pytest.raises(
        ValueError, match=rf"{CONFIG}: does not match the sha256 .*export the checkpoint again"
    ):
        edge.EdgeModel(folder, backend)


def test_weights_of_another_export_are_refused(folder: Path) -> None:
    state = torch.load(folder / WEIGHTS, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, folder / WEIGHTS)
    with pytest.raises(ValueError, match=rf"{WEIGHTS}: does not match the sha256 {CONFIG} records.*again"):
        edge.EdgeModel(folder, "torch")
    edge.EdgeModel(folder, "onnx")  # the ONNX backend does not load the .pth: it runs


# -- 3. and 4. exports are atomic; a different checkpoint needs overwrite=true -----------------------


def leftovers(folder: Path) -> list[str]:
    """Whatever sits beside ``folder`` and its run folder (temporary folders of an export)."""
    return sorted(
        p.name for p in folder.parent.iterdir() if p.name not in (folder.name, f"{folder.name}.run")
    )


def test_a_failed_onnx_check_leaves_the_previous_export_intact(
    made, folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(folder)

    def fail(*_: Any) -> float:
        raise RuntimeError("ONNX Runtime differs from torch (simulated)")

    monkeypatch.setattr(edge_export, "check_onnx", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        run_export(made["a"], folder, cache_dir)
    assert snapshot(folder) == before and leftovers(folder) == []


def test_a_killed_exports_temporary_folder_is_removed_by_the_next(
    made, folder: Path, cache_dir: Path
) -> None:
    """An export SIGKILLed while writing leaves its temporary folder; the next export removes it."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = folder.parent / f".{folder.name}.tmp-{int(dead.stdout)}@{socket.gethostname()}-x1y2z3"
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"\0" * 10)
    run_export(made["a"], folder, cache_dir)
    assert not stale.exists() and leftovers(folder) == []


def test_reexporting_the_same_checkpoint_is_allowed(made, folder: Path, cache_dir: Path) -> None:
    (folder / "stale.txt").write_text("left by the previous export")
    config = run_export(made["a"], folder, cache_dir)
    assert config["source_checkpoint_path"] == str(made["a"].resolve())
    assert config["source_checkpoint_sha256"] == edge.sha256_file(made["a"])
    assert json.loads((folder / CONFIG).read_text()) == config
    assert not (folder / "stale.txt").exists() and leftovers(folder) == []  # replaced as a whole
    edge.check_export(folder)


def test_reexporting_another_checkpoint_needs_overwrite(made, folder: Path, cache_dir: Path) -> None:
    before = snapshot(folder)
    with pytest.raises(
        FileExistsError,
        match=rf"{folder} already holds another export \({CONFIG}, of "
        rf"{made['a'].resolve()}\); pass overwrite=true",
    ):
        run_export(made["b"], folder, cache_dir)
    assert snapshot(folder) == before and leftovers(folder) == []
    run_export(made["b"], folder, cache_dir, "overwrite=true")
    config = edge.check_export(folder)
    assert config["source_checkpoint_sha256"] == edge.sha256_file(made["b"]) != edge.sha256_file(made["a"])
    assert leftovers(folder) == []


def test_an_export_refuses_a_folder_of_other_files(made, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=rf"out_dir={out} holds files that are not an ecg_lab export"):
        run_export(made["a"], out, cache_dir, "overwrite=true")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# -- 5. runtime errors: one line each, naming the file, the problem and what to do ------------------


def mat_without_val(tmp: Path) -> Path:
    scipy.io.savemat(tmp / "x.mat", {"ecg": np.ones((1, 3000))}, format="4")
    return tmp / "x.mat"


def empty(suffix: str) -> Any:
    def make(tmp: Path) -> Path:
        (tmp / f"x{suffix}").write_bytes(b"")
        return tmp / f"x{suffix}"

    return make


def header_only_csv(tmp: Path) -> Path:
    (tmp / "x.csv").write_text("mV\n\n")
    return tmp / "x.csv"


def short_csv(tmp: Path) -> Path:
    return write_csv(tmp / "x.csv", np.sin(np.arange(600) / 10))


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (mat_without_val, r"holds no `val` variable \(it holds ecg\); give a PhysioNet 2017 \.mat"),
        (empty(".mat"), r"empty file \(0 bytes\); give a PhysioNet 2017 \.mat"),
        (empty(".csv"), r"empty file \(0 bytes\); give a PhysioNet 2017 \.mat .* or a CSV of mV values"),
        (header_only_csv, r"holds no samples; give a PhysioNet 2017 \.mat .* or a CSV of mV values"),
        (short_csv, r"600 samples at 300 Hz, shorter than the export's window of 1500; give a recording of"),
    ],
    ids=["mat-without-val", "empty-mat", "empty-csv", "header-only-csv", "short-csv"],
)
def test_a_bad_recording_is_one_line_naming_it(made, tmp_path: Path, capsys, make, problem: str) -> None:
    record = make(tmp_path)
    code, out, err = edge_cli(
        capsys, "classify", "--export", made["export"], "--record", record, "--fs", "300"
    )
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"python -m ecg_lab.edge classify: error: {record}: ")
    assert re.search(problem, err), err
    assert "on_bad_record" not in err and "data." not in err  # no training options on a device


def drop_key(key: str) -> Any:
    return lambda folder: edit_config(folder, lambda c: c.pop(key))


def blank(name: str) -> Any:
    return lambda folder: (folder / name).write_bytes(b"")


def truncate(name: str) -> Any:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:1000])


@pytest.mark.parametrize(
    ("damage", "backend", "problem"),
    [
        (drop_key("window"), "torch", rf"{CONFIG}: missing key 'window'; .*export the checkpoint again"),
        (drop_key("sha256"), "onnx", rf"{CONFIG}: missing key 'sha256'; .*export the checkpoint again"),
        (blank(WEIGHTS), "torch", rf"{WEIGHTS}: empty file \(0 bytes\); copy .* export the checkpoint again"),
        (truncate(WEIGHTS), "torch", rf"{WEIGHTS}: does not match the sha256 {CONFIG} records for it"),
        (blank(ONNX), "onnx", rf"{ONNX}: empty file \(0 bytes\); copy .* export the checkpoint again"),
        (truncate(ONNX), "onnx", rf"{ONNX}: does not match the sha256 {CONFIG} records for it"),
    ],
    ids=["no-window", "no-checksums", "empty-pth", "truncated-pth", "empty-onnx", "truncated-onnx"],
)
def test_a_damaged_export_is_one_line_naming_the_file(
    made, folder: Path, capsys, damage, backend: str, problem: str
) -> None:
    damage(folder)
    argv = ["classify", "--export", folder, "--record", made["record"], "--backend", backend]
    code, out, err = edge_cli(capsys, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert re.search(problem, err), err


def test_a_damaged_weights_file_of_an_unchecked_export_is_one_line(folder: Path, made) -> None:
    """Exports before format 3 record no checksums: a truncated file still gets one line, not a traceback."""
    edit_config(folder, lambda c: c.update(format=2) or c.pop("sha256", None))
    truncate(WEIGHTS)(folder)
    truncate(ONNX)(folder)
    with pytest.raises(ValueError, match=rf"{WEIGHTS}: not a state dict of this network \(.*\); export"):
        edge.EdgeModel(folder, "torch")
    with pytest.raises(ValueError, match=rf"{ONNX}: ONNX Runtime cannot load it \(.*\); export"):
        edge.EdgeModel(folder, "onnx")


def test_out_pointing_at_a_folder_is_one_line(made, tmp_path: Path, capsys) -> None:
    code, _, err = edge_cli(capsys, "generate", "--export", made["export"], "--out", tmp_path)
    assert code == 2 and err.splitlines() == [
        f"python -m ecg_lab.edge generate: error: --out {tmp_path}: is a folder; "
        f"give a file name, e.g. --out {tmp_path / 'synth.csv'}"
    ]


# -- 6. make pi-export with an apostrophe in the path; 7. threads=N ----------------------------------


AWKWARD = ("bob's run", 'say "hi" $HOME `x`, 100%')  # an apostrophe; quotes, $, backquotes, a comma
#: a stand-in for Python at the end of ``make pi-export``: prints the overrides as Hydra parses them
ECHO_OVERRIDES = """#!{python}
import json, sys
from hydra.core.override_parser.overrides_parser import OverridesParser
assert sys.argv[1:3] == ["-m", "ecg_lab.export"], sys.argv
overrides = OverridesParser.create().parse_overrides(sys.argv[3:])
print(json.dumps({{o.key_or_group: o.value() for o in overrides}}))
"""


def make_pi_export(ckpt: Path, python: str | Path, args: str) -> subprocess.CompletedProcess:
    """``make pi-export CKPT=ckpt ARGS=args`` with ``python`` as the venv's (and no venv check)."""
    make = [
        "make",
        "-s",
        "-C",
        str(REPO),
        "pi-export",
        "STAMP=",
        f"PY={python}",
        f"CKPT={ckpt}",
        f"ARGS={args}",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(make, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("folder_name", AWKWARD)
def test_make_pi_export_passes_an_awkward_checkpoint_path_to_hydra(tmp_path: Path, folder_name: str) -> None:
    echo = tmp_path / "python"
    echo.write_text(ECHO_OVERRIDES.format(python=sys.executable))
    echo.chmod(0o755)
    ckpt = tmp_path / folder_name / "best.ckpt"
    overrides = json.loads(make_pi_export(ckpt, echo, "out_dir=x threads=1").stdout)
    assert overrides == {"ckpt_path": str(ckpt), "out_dir": "x", "threads": 1}


@pytest.mark.slow
def test_make_pi_export_exports_a_checkpoint_whose_path_has_an_apostrophe(made, tmp_path: Path) -> None:
    ckpt = tmp_path / "runs" / AWKWARD[0] / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copyfile(made["a"], ckpt)
    out = tmp_path / "pi"
    make_pi_export(ckpt, sys.executable, f"out_dir={out} paths.log_dir={tmp_path / 'outputs'} threads=1")
    config = edge.check_export(out)
    assert config["source_checkpoint_path"] == str(ckpt) and config["source_checkpoint"] == "best.ckpt"


def test_the_export_verb_takes_threads(made, tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr("ecg_lab.export.export_model", lambda *_, **__: {})  # the settings, not the export
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run_export(made["a"], tmp_path / "x", cache_dir, "threads=1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
