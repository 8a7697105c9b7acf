"""Bad config values and bad checkpoints end in one clear line, before any data is prepared: types
checked against the targets' signatures, a window too short for the network, unreadable checkpoints,
a checkpoint of another task than the data, ``threads`` in every app, and no Hydra traceback."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from ecg_lab.analyze import analyze
from ecg_lab.app.checkpoints import load_checkpoint
from ecg_lab.app.checks import check_overrides
from ecg_lab.app.config import to_container
from ecg_lab.app.environment import apply_threads, one_line_user_errors
from ecg_lab.classification.datamodule import ECGWindowDataModule
from ecg_lab.data.records import BadRecordError, DatasetNotFoundError
from ecg_lab.errors import ConfigError, MissingFileError, UserError
from ecg_lab.eval import evaluate
from ecg_lab.export import export
from ecg_lab.generate import generate
from ecg_lab.report import main as report_main
from ecg_lab.train import train
from tests.conftest import REPO, SMALL_SYNTHETIC, compose_config
from tests.helpers import run_module
from tests.test_report import make_run


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    """The error's message, checked to be a single line."""
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def no_preparation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if training gets as far as preparing the data."""
    monkeypatch.setattr(ECGWindowDataModule, "prepare_data", lambda self: pytest.fail("data was prepared"))


@pytest.fixture
def threads_restored():
    """Restore torch's and the BLAS pools' threads after a test that sets them."""
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):
        yield
    torch.set_num_threads(before)


def saved_checkpoint(path: Path, cfg: DictConfig) -> Path:
    """A checkpoint as ``python -m ecg_lab.train`` writes one, with the run config of ``cfg``; no weights
    (the checks under test run before any are loaded)."""
    torch.save({"state_dict": {}, "ecg_lab": {"config": to_container(cfg), "split": None}}, path)
    return path


# -- 1. type errors in overrides ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=ten",
         r"^trainer\.max_epochs='ten' is a string, but .*Trainer takes an int or null"),
        ("model.optimizer.lr=fast",
         r"^model\.optimizer\.lr='fast' is a string, but torch\.optim\.Adam takes a number"),
        ("seed=abc", r"^seed='abc' is a string, but it must be an int; set seed to an int$"),
        ("threads=two", r"^threads='two' is a string, but it must be an int or null"),
        ("data.preprocess.lowcut=abc",
         r"^data\.preprocess\.lowcut='abc' is a string, but .* a number or null"),
        ("+model.net.rnn_hiden=64",
         r"^model\.net\.rnn_hiden is not a parameter of ecg_lab\.models\.crnn\.CRNN"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(
    override: str, message: str, train_cfg, no_preparation: None
) -> None:
    cfg = train_cfg(override)
    with pytest.raises(ConfigError) as err:
        check_overrides(cfg)
    assert one_line(err) and err.match(message)
    with pytest.raises(ConfigError, match=message):
        train(cfg)  # before the data is prepared


def every_config() -> list[tuple[str, list[str]]]:
    """Each app's config, and the training config with each option of each group (with data and a
    model of the option's task)."""
    vae = ["experiment=lstm_vae"]
    train = [[f"model={m}"] for m in options("model") if m != "lstm_vae"] + [vae]
    classifying = (
        *("synthetic", "synthetic_records"),
        *("physionet2017", "physionet2017_150hz", "physionet2017_records"),
    )
    train += [[f"data={d}"] for d in classifying]
    train += [[*vae, f"data={d}"] for d in options("data") if d not in classifying]
    train += [["features=rr", f"data={d}"] for d in classifying]
    train += [[f"{group}={name}"] for group in ("experiment", "debug", "trainer", "logger", "callbacks")
              for name in options(group)]  # fmt: skip
    train += [["loss=morph_mse", *vae], ["hparams_search=optuna"], ["threads=1", "seed=7"]]
    ckpt = "ckpt_path=CKPT"
    others = [
        ("eval", [ckpt]),
        ("eval", [ckpt, "data=physionet2017", "data.split=all", "threads=1"]),
        ("eval", [ckpt, "data=synthetic_normal", "model=lstm_vae", "loss=morph_mse"]),
        ("generate", [ckpt, "n=4", "threads=1"]),
        ("export", [ckpt]),
        ("check_backend", []),
        ("check_backend", [*vae]),
        *[
            ("analyze", [f"data={d}", "command=waveforms"])
            for d in ("synthetic_normal", "ptbxl", "normal_ecg")
        ],
    ]
    return [("train", overrides) for overrides in train] + others


@pytest.mark.parametrize(
    ("name", "overrides"), every_config(), ids=lambda x: x if isinstance(x, str) else " ".join(x)
)
def test_every_config_passes_the_checks(
    name: str, overrides: list[str], tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = tmp_path / "some.ckpt"
    ckpt.write_bytes(b"")  # only its existence is checked before loading
    overrides = [o.replace("CKPT", str(ckpt)) for o in overrides]
    check_overrides(compose_config(name, overrides, tmp_path / "run", cache_dir))


# -- 2. a window too short for the network -----------------------------------------------------------
VAE = ["experiment=lstm_vae"]
WINDOW = "data.preprocess.window"


@pytest.mark.parametrize(
    ("overrides", "message", "passing"),
    [
        ([f"{WINDOW}=10"], r"^data\.preprocess\.window=10 is too short for model=cnn_lstm: it needs windows "
         r"of at least 63 samples; set data\.preprocess\.window to at least 63$", [f"{WINDOW}=63"]),
        (["model=lstm_only", f"{WINDOW}=20"],
         r"^data\.preprocess\.window=20 is too short .* at least 25 samples",
         ["model=lstm_only", f"{WINDOW}=25"]),
        ([*VAE, "data.window=5", "model.net.seq_len=5"], r"^data\.window=5 is too short for model=lstm_vae: "
         r".* at least 10 samples; set data\.window \(and model\.net\.seq_len, which must equal it\) to at "
         r"least 10$", [*VAE, "data.window=10", "model.net.seq_len=10"]),
    ],
)  # fmt: skip
def test_a_window_too_short_for_the_network_names_the_key_and_the_minimum(
    overrides: list[str],
    message: str,
    passing: list[str],
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = compose_config("train", overrides, tmp_path / "run", cache_dir)
    with pytest.raises(ConfigError) as err:
        check_overrides(cfg)
    assert one_line(err) and err.match(message)
    check_overrides(compose_config("train", passing, tmp_path / "run", cache_dir))  # the minimum is exact
    for module in (
        "classification.datamodule.ECGWindowDataModule",
        "generation.datamodule.WaveformDataModule",
    ):
        monkeypatch.setattr(f"ecg_lab.{module}.prepare_data", lambda self: pytest.fail("data was prepared"))
    with pytest.raises(ConfigError, match=message):
        train(cfg)


# -- 3. checkpoints that cannot be read --------------------------------------------------------------
def _random_bytes(path: Path) -> Path:
    path.write_bytes(os.urandom(4096))
    return path


def _truncated(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.randn(4096)}, "ecg_lab": {"config": {"a": 1}}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _text(path: Path) -> Path:
    path.write_text("epoch,loss\n1,0.5\n")
    return path


def _directory(path: Path) -> Path:
    (path / "checkpoints").mkdir(parents=True)
    (path / "checkpoints" / "last.ckpt").write_bytes(b"")
    return path


def _other_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    return path


def _no_config(path: Path) -> Path:
    torch.save({"state_dict": {}}, path)  # a plain Lightning checkpoint
    return path


NOT_TORCH = r"is not a readable checkpoint \(not the zip archive torch\.save writes: truncated, damaged or "


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_random_bytes, NOT_TORCH),
        (_truncated, NOT_TORCH),
        (_text, NOT_TORCH),
        (
            _other_zip,
            r"is not a readable checkpoint \(RuntimeError: .+\); give a \.ckpt written by python -m",
        ),
        (_directory, r"is a directory, not a readable checkpoint; give a \.ckpt file, e\.g\. .*last\.ckpt$"),
        (_no_config, r"holds no ecg_lab config"),
    ],
)
def test_an_unreadable_checkpoint_is_one_line_naming_it(make, message: str, tmp_path: Path) -> None:
    path = make(tmp_path / "model.ckpt")
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path)
    assert one_line(err).startswith(f"ckpt_path={path} ") and err.match(message)


@pytest.mark.parametrize("app", ["train", "eval", "generate", "export"])
def test_every_app_reports_an_unreadable_checkpoint(
    app: str, train_cfg, tmp_path: Path, cache_dir: Path, no_preparation: None
) -> None:
    ckpt = _text(tmp_path / "notes.ckpt")
    if app == "train":  # resuming
        cfg = train_cfg(f"ckpt_path={ckpt}")
    else:
        cfg = compose_config(app, [f"ckpt_path={ckpt}"], tmp_path / "run", cache_dir)
    task = {"train": train, "eval": evaluate, "generate": generate, "export": export}[app]
    with pytest.raises(ConfigError, match=rf"^ckpt_path={ckpt} is not a readable checkpoint"):
        task(cfg)


def test_training_from_a_missing_checkpoint_stops_before_preparing(
    train_cfg, tmp_path, no_preparation
) -> None:
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nope\.ckpt: no such checkpoint file"):
        train(train_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}"))


# -- 4. a checkpoint of another task than the data ---------------------------------------------------
@pytest.mark.parametrize(
    ("trained_on", "data", "message"),
    [
        (["experiment=lstm_vae"], "physionet2017",
         r"^data=physionet2017 is for classification but ckpt_path=\S+ holds a generation model; "
         r"use data=synthetic_normal, .*, or a classification checkpoint$"),
        ([], "synthetic_normal",
         r"^data=synthetic_normal is for generation but ckpt_path=\S+ holds a classification model; "
         r"use data=synthetic or physionet2017, or a generation checkpoint$"),
    ],
)  # fmt: skip
def test_eval_refuses_data_of_another_task_than_the_checkpoint(
    trained_on: list[str], data: str, message: str, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = saved_checkpoint(
        tmp_path / "m.ckpt", compose_config("train", trained_on, tmp_path / "t", cache_dir)
    )
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", f"data={data}"], tmp_path / "run", cache_dir)
    with pytest.raises(ConfigError) as err:
        evaluate(cfg)
    assert one_line(err) and err.match(message)


def test_eval_checks_the_window_against_the_checkpoints_network(tmp_path: Path, cache_dir: Path) -> None:
    ckpt = saved_checkpoint(tmp_path / "m.ckpt", compose_config("train", [], tmp_path / "t", cache_dir))
    overrides = [f"ckpt_path={ckpt}", "data=synthetic", "data.preprocess.window=10"]
    cfg = compose_config("eval", overrides, tmp_path / "run", cache_dir)
    with pytest.raises(ConfigError, match=rf"^data\.preprocess\.window=10 is too short for the network in "
                       rf"ckpt_path={ckpt}: .* at least 63 samples"):  # fmt: skip
        evaluate(cfg)


# -- 5. threads ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("app", ["train", "eval", "generate", "analyze", "export", "check_backend"])
def test_threads_composes_in_every_hydra_app(app: str, tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config(app, ["threads=1", "ckpt_path=x.ckpt"] if app not in ("analyze", "check_backend")
                         else ["threads=1"],
                         tmp_path, cache_dir)  # fmt: skip
    assert cfg.threads == 1


def test_check_backend_checks_the_config_and_applies_threads(
    tmp_path: Path, cache_dir: Path, threads_restored: None
) -> None:
    from ecg_lab.check_backend import check_backend

    cfg = compose_config("check_backend", ["model.optimizer.lr=fast"], tmp_path / "bad", cache_dir)
    with pytest.raises(ConfigError, match="model.optimizer.lr='fast'"):
        check_backend(cfg)
    torch.set_num_threads(2)
    overrides = ["threads=1", "trainer=cpu", *SMALL_SYNTHETIC]
    cfg = compose_config("check_backend", overrides, tmp_path / "run", cache_dir)
    assert check_backend(cfg)["ok"]
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(
    ("app", "overrides"),
    [("eval", ["ckpt_path=CKPT"]), ("generate", ["ckpt_path=CKPT"]), ("analyze", ["data=physionet2017"])],
)
def test_eval_generate_and_analyze_apply_threads(
    app: str, overrides: list[str], tmp_path: Path, cache_dir: Path, threads_restored: None
) -> None:
    torch.set_num_threads(2)
    ckpt = _text(tmp_path / "x.ckpt")  # each app applies threads, then stops on its bad input
    overrides = [o.replace("CKPT", str(ckpt)) for o in [*overrides, "threads=1"]]
    cfg = compose_config(app, overrides, tmp_path / "run", cache_dir)
    with pytest.raises(ConfigError):
        {"eval": evaluate, "generate": generate, "analyze": analyze}[app](cfg)
    assert torch.get_num_threads() == 1


def test_apply_threads_sets_torch_and_blas_and_refuses_nonsense(threads_restored: None) -> None:
    from threadpoolctl import threadpool_info

    apply_threads(1)
    assert torch.get_num_threads() == 1
    assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
    for bad in (0, -2, "two", 1.5, True):
        with pytest.raises(ConfigError, match=r"^threads=.* must be a positive int, or null"):
            apply_threads(bad)
    apply_threads(None)  # torch's default: nothing changes
    assert torch.get_num_threads() == 1


def test_report_takes_threads(tmp_path: Path, capsys: pytest.CaptureFixture[str], threads_restored) -> None:
    make_run(tmp_path / "runs" / "a")
    assert report_main([str(tmp_path / "runs"), "--threads", "1"]) == 0
    assert "1 run folders" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "runs"), "--threads", "0"])
    assert "threads=0 must be a positive int" in capsys.readouterr().err


# -- 6. one line, no Hydra traceback -----------------------------------------------------------------
def test_a_user_error_ends_the_run_with_its_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @one_line_user_errors
    def fails(cfg: object) -> None:
        raise ConfigError("seed='abc' is a string, but it must be an int; set seed to an int")

    with pytest.raises(SystemExit) as exit_:
        fails(None)
    assert exit_.value.code == 1
    assert (
        capsys.readouterr().err
        == "Error: seed='abc' is a string, but it must be an int; set seed to an int\n"
    )
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the traceback on request
    with pytest.raises(ConfigError):
        fails(None)


def test_other_errors_keep_their_traceback() -> None:
    @one_line_user_errors
    def bug(cfg: object) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        bug(None)


def test_bad_input_errors_are_user_errors_of_their_old_kinds() -> None:
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(MissingFileError, UserError) and issubclass(MissingFileError, FileNotFoundError)
    assert issubclass(DatasetNotFoundError, UserError) and issubclass(DatasetNotFoundError, FileNotFoundError)
    assert issubclass(BadRecordError, UserError) and issubclass(BadRecordError, ValueError)


def run_app(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return run_module(args[0], args[1:], tmp_path, timeout=120, **env)


def test_apps_end_with_one_line_and_status_1(tmp_path: Path, cache_dir: Path) -> None:
    ckpt = _text(tmp_path / "notes.ckpt")
    proc = run_app(["ecg_lab.eval", f"ckpt_path={ckpt}", f"paths.cache_dir={cache_dir}"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"Error: ckpt_path={ckpt} is not a readable checkpoint")
    )
    assert "HYDRA_FULL_ERROR" not in proc.stderr and "Traceback" not in proc.stderr

    proc = run_app(["ecg_lab.analyze", "rpeaks", "hist_bins=abc", f"paths.cache_dir={cache_dir}"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: hist_bins='abc' is a string, but it must be an int; set hist_bins to an int"
    )
    assert "HYDRA_FULL_ERROR" not in proc.stderr and "Traceback" not in proc.stderr


def test_hydra_full_error_keeps_the_traceback(tmp_path: Path, cache_dir: Path) -> None:
    ckpt = _text(tmp_path / "notes.ckpt")
    args = ["ecg_lab.generate", f"ckpt_path={ckpt}", f"paths.cache_dir={cache_dir}"]
    proc = run_app(args, tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConfigError: ckpt_path=" in proc.stderr
