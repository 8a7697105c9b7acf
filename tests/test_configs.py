"""Every config composes, and every node of it instantiates through ``_target_``."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping

from ecg_lab.app.checks import check_task_config, task_of
from ecg_lab.app.config import instantiate_list
from tests.conftest import REPO, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def test_groups_hold_what_the_issue_lists() -> None:
    assert set(options("data")) >= {"synthetic", "physionet2017"}
    assert set(options("trainer")) >= {"default", "cpu", "gpu", "mps"}
    assert set(options("logger")) >= {"csv", "wandb", "tensorboard", "many"}
    assert set(options("debug")) >= {"fdr", "limit", "overfit"}
    assert {"cnn_lstm"} <= set(options("model")) and {"weighted_ce"} <= set(options("loss"))


def test_train_defaults_are_the_specs(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", [], tmp_path, cache_dir)
    assert cfg.model.optimizer.lr == 1e-4 and cfg.model.optimizer.weight_decay == 1e-4
    assert cfg.model.optimizer._partial_ is True
    assert cfg.data.batch_size == 64 and cfg.trainer.gradient_clip_val == 1.0 and cfg.trainer.max_epochs == 50
    assert cfg.callbacks.early_stopping.patience == 10
    assert cfg.callbacks.early_stopping.monitor == cfg.model.monitor == cfg.callbacks.model_checkpoint.monitor
    assert cfg.data.preprocess.window == 1500 and cfg.data.preprocess.stride == 750
    assert list(cfg.data.split_fractions) == [0.7, 0.15, 0.15]
    assert set(cfg) >= {"seed", "task_name", "tags", "ckpt_path"}


def task_options(group: str, task: str) -> list[str]:
    """The options of ``group`` that belong to ``task`` (composed within the training config)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return [n for n in options(group) if task_of(compose("train", [f"{group}={n}"])[group]) == task]


CLASSIFICATION = {g: task_options(g, "classification") for g in ("data", "model", "loss")}
GENERATION = {g: task_options(g, "generation") for g in ("data", "model", "loss")}


def test_every_option_belongs_to_a_task() -> None:
    for group in ("data", "model", "loss"):
        assert sorted(CLASSIFICATION[group] + GENERATION[group]) == options(group), group
    assert GENERATION == {
        "data": ["normal_ecg", "physionet2017_normal", "ptbxl", "synthetic_normal"],
        "model": ["lstm_vae"],
        "loss": ["morph_mse"],
    }


@pytest.mark.parametrize("data", CLASSIFICATION["data"])
@pytest.mark.parametrize("model", CLASSIFICATION["model"])
def test_data_model_loss_instantiate(data: str, model: str, tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", [f"data={data}", f"model={model}"], tmp_path, cache_dir)
    check_task_config(cfg)
    dm = hydra.utils.instantiate(cfg.data)  # constructing does not touch the data yet
    assert dm.classes == ("N", "A", "O", "~")
    module = hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss))
    assert module.n_params > 0


@pytest.mark.parametrize("data", GENERATION["data"])
def test_generation_data_model_loss_instantiate(data: str, tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", [f"data={data}", "model=lstm_vae", "loss=morph_mse"], tmp_path, cache_dir)
    check_task_config(cfg)
    dm = hydra.utils.instantiate(cfg.data)  # constructing does not touch the data yet
    assert dm.window == cfg.model.net.seq_len == 1000 and dm.fs == 100
    module = hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss))
    assert module.n_params > 0 and module.TASK == dm.TASK == "generation"


@pytest.mark.parametrize("logger", options("logger"))
def test_loggers_and_callbacks_instantiate(logger: str, tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", [f"logger={logger}"], tmp_path, cache_dir)
    assert instantiate_list(cfg.logger)
    callbacks = instantiate_list(cfg.callbacks)
    names = {type(c).__name__ for c in callbacks}
    assert {"ModelCheckpoint", "MetricsHistory"} <= names
    assert any(isinstance(c, EarlyStopping) for c in callbacks)


@pytest.mark.parametrize("trainer", options("trainer"))
@pytest.mark.parametrize("debug", [None, *options("debug")])
def test_trainer_and_debug_compose(trainer: str, debug: str | None, tmp_path: Path, cache_dir: Path) -> None:
    overrides = [f"trainer={trainer}"] + ([f"debug={debug}"] if debug else [])
    cfg = compose_config("train", overrides, tmp_path, cache_dir)
    assert isinstance(cfg.trainer, DictConfig) and cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer in ("default", "cpu") or debug:  # gpu/mps need the hardware to instantiate
        cfg.trainer.accelerator = "cpu"
        trainer_obj = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
        assert trainer_obj.gradient_clip_val == 1.0


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment: str, tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path, cache_dir)
    hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss))


def test_eval_config_composes(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config(
        "eval", ["ckpt_path=x.ckpt", "data=physionet2017", "data.split=all"], tmp_path, cache_dir
    )
    assert cfg.data.split == "all" and cfg.get("model") is None and cfg.task_name == "eval"


def test_hydra_run_and_sweep_dirs_carry_microseconds() -> None:
    text = (REPO / "conf" / "hydra" / "default.yaml").read_text()
    assert "%H-%M-%S-%f" in text and "${hydra.job.num}_${short_dirname:${hydra.job.override_dirname}}" in text


def test_long_override_lists_make_short_unique_folder_names() -> None:
    from ecg_lab.app.config import short_dirname

    assert short_dirname("model=gru,seed=1") == "model=gru,seed=1"
    long_a = ",".join(f"data.synthetic.option_{i}=value" for i in range(20)) + ",seed=1"
    long_b = long_a[:-1] + "2"
    assert len(short_dirname(long_a)) == 200 and len(short_dirname(long_a).encode()) < 250
    assert short_dirname(long_a) != short_dirname(long_b)  # the hash tells them apart
