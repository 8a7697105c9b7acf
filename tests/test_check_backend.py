"""The accelerator check: gradients on the training device against the CPU in float64, as a verb
(``python -m ecg_lab.check_backend``) and as a callback before training. The "accelerator" here is the
CPU in float32; a wrong backend is an LSTM whose float32 backward pass is off by a few percent."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import ecg_lab.app.launch
import ecg_lab.callbacks.backend_check
from ecg_lab.app.backend import GradientMismatchError, relative_differences
from ecg_lab.check_backend import _hydra_main, check_backend
from ecg_lab.train import train
from tests.conftest import REPO, SMALL_SYNTHETIC, compose_config
from tests.helpers import run_module
from tests.test_waveforms import SMALL_NORMAL

MODELS = {
    "cnn_lstm": (["model=cnn_lstm", *SMALL_SYNTHETIC], r"net\.rnn\.weight_hh_l[01]"),
    "lstm_vae": (["experiment=lstm_vae", *SMALL_NORMAL], r"net\.(encoder|decoder)\.weight_hh_l0"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def wrong_lstm_backward(monkeypatch: pytest.MonkeyPatch, factor: float = 1.05) -> None:
    """Make float32 LSTMs (the "accelerator"; the float64 reference stays exact) return recurrent-weight
    gradients ``factor`` times too large, as a faulty backend kernel would."""
    forward = nn.LSTM.forward

    def perturbed(self: nn.LSTM, input: torch.Tensor, hx: object = None) -> object:  # noqa: A002
        if input.dtype == torch.float32 and torch.is_grad_enabled():
            for name, param in self.named_parameters():
                if name.startswith("weight_hh"):
                    param.register_hook(lambda grad: grad * factor)
        return forward(self, input, hx)

    monkeypatch.setattr(nn.LSTM, "forward", perturbed)


def check_cfg(model: str, tmp_path: Path, cache_dir: Path, *overrides: str):
    return compose_config(
        "check_backend", ["trainer=cpu", *MODELS[model][0], *overrides], tmp_path / "run", cache_dir
    )


@pytest.mark.parametrize("model", MODELS)
def test_a_sound_backend_passes_with_one_line(model: str, tmp_path: Path, cache_dir: Path, capsys) -> None:
    _hydra_main(check_cfg(model, tmp_path, cache_dir))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("backend check passed on cpu: largest relative gradient difference")
    report = json.loads((tmp_path / "run" / "backend_check.json").read_text())
    assert report["ok"] and report["message"] == line
    assert report["worst_relative"] < 1e-4  # float32 against float64: rounding only
    assert report["worst_parameter"] in line and len(report["relative"]) > 10
    assert json.loads((tmp_path / "run" / "run_status.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("model", MODELS)
def test_a_wrong_lstm_backward_is_caught_and_named(
    model: str,
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong_lstm_backward(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        _hydra_main(check_cfg(model, tmp_path, cache_dir))
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("Error: ")
    assert json.loads((tmp_path / "run" / "run_status.json").read_text())["status"] == "failed"
    assert message.startswith("backend check failed on cpu: the gradient of net.")
    assert "> backend_check.tolerance=0.001" in message and "trainer=cpu" in message
    report = json.loads((tmp_path / "run" / "backend_check.json").read_text())
    assert not report["ok"]
    assert report["worst_relative"] == pytest.approx(0.05, rel=1e-3)  # only the perturbed gradients
    assert re.fullmatch(MODELS[model][1], report["worst_parameter"]), report["worst_parameter"]
    assert report["worst_parameter"] in message


def test_the_tolerance_is_configurable_and_the_cli_exits_non_zero(tmp_path: Path, cache_dir: Path) -> None:
    """Through the real command line: a tolerance below float32's rounding fails a sound backend."""
    args = ["trainer=cpu", *SMALL_SYNTHETIC, f"paths.cache_dir={cache_dir}", "backend_check.tolerance=1e-12"]
    proc = run_module("ecg_lab.check_backend", args, tmp_path, timeout=240)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: backend check failed on cpu: the gradient of net.")
    assert "> backend_check.tolerance=1e-12" in last


def test_console_script_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["ecg-lab-check-backend"].partition(":")
    assert module == "ecg_lab.app.launch" and callable(getattr(ecg_lab.app.launch, name))
    assert name == "check_backend"  # the launcher imports ecg_lab.<name>


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU"
)
def test_an_absent_accelerator_names_the_key(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("check_backend", ["trainer=gpu", *SMALL_SYNTHETIC], tmp_path / "run", cache_dir)
    with pytest.raises(ValueError, match=r"^trainer\.accelerator=gpu cannot run here: .*available"):
        check_backend(cfg)


def test_relative_differences_floor_missing_and_non_finite() -> None:
    reference = {"w": torch.ones(100, dtype=torch.float64), "zero": torch.zeros(3, dtype=torch.float64)}
    device = {"w": reference["w"] * (1 + 1e-6), "zero": torch.full((3,), 1e-7, dtype=torch.float64)}
    rel = relative_differences(device, reference)
    assert rel["w"] == pytest.approx(1e-6, rel=1e-3)
    assert rel["zero"] < 1e-4  # rounding in a zero gradient, measured against 1e-3 of the whole norm
    assert relative_differences({"w": reference["w"]}, reference)["zero"] == 0.0  # no gradient either way
    assert relative_differences({}, {"w": reference["w"]})["w"] == 1.0  # the device lost a gradient
    assert math.isinf(relative_differences({"w": reference["w"] * math.nan}, {"w": reference["w"]})["w"])


# -- the callback before training ----------------------------------------------------------------
def test_the_callback_stops_training_on_a_wrong_backend(
    train_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_lstm_backward(monkeypatch)
    steps = []
    monkeypatch.setattr(
        "ecg_lab.classification.module.ECGClassifier.training_step",
        lambda *a, **k: steps.append(1) or pytest.fail("trained"),
    )
    cfg = train_cfg("debug=fdr", "callbacks.backend_check.on_cpu=true")
    with pytest.raises(GradientMismatchError, match=r"gradient of net\.rnn\.weight_hh_l[01] differs") as err:
        train(cfg)
    assert "callbacks.backend_check.tolerance=0.001" in str(err.value) and not steps
    assert json.loads((tmp_path / "run" / "run_status.json").read_text())["status"] == "failed"


def test_the_callback_passes_a_sound_backend(train_cfg, caplog) -> None:
    with caplog.at_level("INFO", logger="ecg_lab.callbacks.backend_check"):
        train(train_cfg("debug=fdr", "callbacks.backend_check.on_cpu=true"))
    assert any(r.getMessage().startswith("backend check passed on cpu") for r in caplog.records)


def test_the_callback_skips_the_cpu_by_default(train_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        ecg_lab.callbacks.backend_check, "compare_gradients", lambda *a, **k: pytest.fail("checked")
    )
    cfg = train_cfg("debug=fdr")
    assert cfg.callbacks.backend_check.on_cpu is False
    train(cfg)
