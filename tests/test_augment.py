"""The ``augment`` group: six levers on training batches only, each off by default, seeded from (run
seed, step) without touching torch's global generator, and composing with every classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader, TensorDataset

from ecg_lab.app.checkpoints import load_checkpoint, model_from_loaded
from ecg_lab.app.checks import check_overrides
from ecg_lab.classification.augment import (
    AmplitudeScale,
    BatchAugment,
    GaussianNoise,
    TimeStretch,
    build_augment,
)
from ecg_lab.errors import ConfigError
from ecg_lab.train import build
from tests.conftest import REPO, compose_config
from tests.helpers import ecg_like

LEVERS = ["amplitude", "noise", "wander", "stretch", "bursts", "crop"]
FS = 300
WINDOW = 1500


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def windows(n: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` z-scored ECG-like windows ``(n, 1, WINDOW)``."""
    rows = [ecg_like(WINDOW, FS, seed=i).astype(np.float64) for i in range(n)]
    x = torch.tensor(np.stack(rows))[:, None, :]
    return ((x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)).to(dtype)


def ramp(n: int = 16) -> torch.Tensor:
    """Windows ``1, 2, ..., WINDOW``: no zero, so every zero in an output is padding or a burst."""
    return torch.arange(1, WINDOW + 1, dtype=torch.float32).repeat(n, 1, 1)


@pytest.fixture
def augment_cfg(tmp_path: Path, cache_dir: Path):
    """Factory: the composed training config with ``augment=<name>`` and overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", list(overrides), tmp_path / "run", cache_dir)

    return make


def lever(augment_cfg, name: str, *overrides: str) -> BatchAugment:
    """``conf/augment/<name>.yaml`` built, its transform applied to every window (p=1)."""
    cfg = augment_cfg(f"augment={name}", f"augment.transforms.{name}.p=1", *overrides)
    augment = build_augment(cfg.augment)
    assert isinstance(augment, BatchAugment) and list(augment.transforms) == [name]
    return augment


def zero_runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of zeros in a 1-D tensor."""
    padded = np.concatenate([[0], (row.numpy() == 0).astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


# -- the group ---------------------------------------------------------------------------------------
def test_group_holds_every_lever_and_is_off_by_default(augment_cfg) -> None:
    assert options("augment") == sorted(["none", "default", *LEVERS])
    cfg = augment_cfg()
    assert cfg.augment is None
    _, model = build(cfg)
    assert model.augment is None
    default = build_augment(augment_cfg("augment=default").augment)
    assert list(default.transforms) == ["stretch", "crop", "amplitude", "wander", "noise", "bursts"]


# -- each transform ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LEVERS)
def test_each_lever_changes_every_window_keeps_shape_and_is_identity_at_p0(
    augment_cfg, name: str, dtype: torch.dtype
) -> None:
    x = windows(dtype=dtype)
    out = lever(augment_cfg, name)(x, seed=1, step=0)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert (out != x).any(-1).all(), "a window came through unchanged at p=1"
    off = build_augment(augment_cfg(f"augment={name}", f"augment.transforms.{name}.p=0").augment)
    assert torch.equal(off(x, seed=1, step=0), x)


def test_p_is_the_share_of_windows_changed(augment_cfg) -> None:
    augment = build_augment(augment_cfg("augment=amplitude", "augment.transforms.amplitude.p=0.3").augment)
    x = windows(400)
    share = (augment(x, seed=3, step=0) != x).any(-1).float().mean()
    assert 0.22 < share < 0.38


def test_amplitude_factor_stays_in_its_range(augment_cfg) -> None:
    x = windows(32)
    out = lever(augment_cfg, "amplitude", "augment.transforms.amplitude.scale=[0.7,0.9]")(x, seed=1, step=0)
    factor = out / x
    assert torch.allclose(factor, factor[..., :1], rtol=1e-5)  # one factor per window
    assert factor.min() >= 0.7 - 1e-6 and factor.max() <= 0.9 + 1e-6
    assert factor.max() - factor.min() > 0.1  # drawn per window


def test_noise_std_is_relative_to_the_window(augment_cfg) -> None:
    x = windows(32) * 3.0
    out = lever(augment_cfg, "noise", "augment.transforms.noise.std=[0.05,0.1]")(x, seed=1, step=0)
    relative = (out - x).std(-1) / x.std(-1)
    assert relative.min() > 0.05 * 0.9 and relative.max() < 0.1 * 1.1


def test_wander_is_a_slow_sinusoid_of_bounded_amplitude(augment_cfg) -> None:
    x = windows(32)
    out = lever(augment_cfg, "wander", "augment.transforms.wander.amplitude=[0.2,0.4]")(x, seed=1, step=0)
    drift = (out - x)[:, 0]
    assert drift.abs().max() <= 0.4 + 1e-5
    assert drift.abs().amax(-1).max() > 0.1
    # at most 0.5 Hz over 5 s: at most 5 zero crossings
    crossings = (torch.sign(drift[:, 1:]) != torch.sign(drift[:, :-1])).sum(-1)
    assert crossings.max() <= 5


def test_stretch_resamples_by_a_factor_in_its_range(augment_cfg) -> None:
    out = lever(augment_cfg, "stretch", "augment.transforms.stretch.factor=[0.8,1.25]")(
        ramp(), seed=1, step=0
    )
    factors = []
    for row in out[:, 0]:
        kept = row[row != 0]  # the ramp resampled: slope 1/factor; zeros where a shorter result is padded
        slope = kept.diff()
        assert torch.allclose(slope, slope[:1], atol=1e-3)
        factors.append(1 / float(slope.mean()))
        assert len(kept) == WINDOW or len(kept) == pytest.approx(factors[-1] * WINDOW, abs=2)
    assert min(factors) >= 0.8 - 1e-3 and max(factors) <= 1.25 + 1e-3
    assert min(factors) < 0.95 and max(factors) > 1.05


def test_bursts_zero_only_segments_of_the_configured_length(augment_cfg) -> None:
    augment = lever(
        augment_cfg,
        "bursts",
        "augment.transforms.bursts.count=[1,1]",
        "augment.transforms.bursts.duration_ms=[100,200]",
    )
    out = augment(ramp(64), seed=1, step=0)
    lengths = []
    for row in out[:, 0]:
        (run,) = zero_runs(row)  # exactly one burst
        lengths.append(run[1])
        assert torch.equal(row[row != 0], ramp(1)[0, 0][row != 0])  # the rest untouched
    assert min(lengths) >= 100 * FS / 1000 and max(lengths) <= 200 * FS / 1000
    assert len(set(lengths)) > 1


def test_crop_keeps_a_segment_at_the_start_zero_padded(augment_cfg) -> None:
    out = lever(augment_cfg, "crop", "augment.transforms.crop.fraction=[0.5,0.8]")(ramp(), seed=1, step=0)
    starts = set()
    for row in out[:, 0]:
        n = int((row != 0).sum())
        assert 0.5 * WINDOW - 1 <= n <= 0.8 * WINDOW + 1
        assert torch.all(row[n:] == 0)
        first = int(row[0])  # a contiguous piece of the ramp 1..WINDOW, moved to the start
        assert torch.equal(row[:n], torch.arange(first, first + n, dtype=row.dtype))
        starts.add(first)
    assert len(starts) > 1


# -- seeds -------------------------------------------------------------------------------------------
def test_same_seed_and_step_same_output_and_global_rng_untouched(augment_cfg) -> None:
    augment = build_augment(augment_cfg("augment=default").augment)
    x = windows(16)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = augment(x, seed=42, step=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(augment(x, seed=42, step=5), first)
    for other in ({"seed": 42, "step": 6}, {"seed": 43, "step": 5}, {"seed": 42, "step": 5, "batch": 1}):
        assert not torch.equal(augment(x, **other), first), other
    assert torch.equal(torch.get_rng_state(), before)


def test_each_lever_draws_from_its_own_stream() -> None:
    """A lever's draws do not depend on which others run: turning one off leaves the rest as they were."""
    x = windows(16)
    noise, stretch = GaussianNoise(p=0.5), TimeStretch(p=0.5)
    both = BatchAugment({"noise": noise, "stretch": stretch}, fs=FS)(x, seed=1, step=2)
    noise_only = BatchAugment({"noise": noise}, fs=FS)(x, seed=1, step=2)
    assert torch.equal(both, BatchAugment({"stretch": stretch}, fs=FS)(noise_only, seed=1, step=2))
    off = BatchAugment({"amplitude": AmplitudeScale(p=0), "noise": noise}, fs=FS)
    assert torch.equal(off(x, seed=1, step=2), noise_only)


def test_levers_choose_their_windows_independently() -> None:
    x = windows(64)
    changed = [
        (BatchAugment({name: transform}, fs=FS)(x, seed=1, step=0) != x).any(-1).flatten()
        for name, transform in {"amplitude": AmplitudeScale(p=0.5), "noise": GaussianNoise(p=0.5)}.items()
    ]
    assert 0 < changed[0].sum() < 64 and 0 < changed[1].sum() < 64
    assert not torch.equal(changed[0], changed[1])


# -- the module --------------------------------------------------------------------------------------
class Recording(BatchAugment):
    """BatchAugment that records each call's (seed, step, batch, rank)."""

    def __init__(self, inner: BatchAugment) -> None:
        super().__init__(inner.transforms, inner.fs)
        self.calls: list[tuple[int, int, int, int]] = []

    def __call__(self, x: torch.Tensor, seed: int, step: int, batch: int = 0, rank: int = 0) -> torch.Tensor:
        self.calls.append((seed, step, batch, rank))
        return super().__call__(x, seed, step, batch, rank)


def loader(n: int = 16) -> DataLoader:
    x = windows(n)
    y = torch.arange(n) % 4
    return DataLoader(TensorDataset(x, y, torch.arange(n)), batch_size=8)


def quiet_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_module_augments_training_batches_only(augment_cfg, tmp_path: Path) -> None:
    cfg = augment_cfg("model=cnn_only", "augment=default")
    pl.seed_everything(7)
    _, model = build(cfg)
    model.augment = spy = Recording(model.augment)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(model, train_dataloaders=loader(), val_dataloaders=loader())
    # two batches per epoch, each drawn from (seed, global step, batch index, rank); none in validation
    assert spy.calls == [(7, 0, 0, 0), (7, 1, 1, 0), (7, 2, 0, 0), (7, 3, 1, 0)]
    model.eval()
    x = windows(8)
    with torch.no_grad():
        plain = model(x)
    trainer.validate(model, loader(), verbose=False)
    trainer.test(model, loader(), verbose=False)
    assert len(spy.calls) == 4
    with torch.no_grad():
        assert torch.equal(model(x), plain)


def test_augment_stays_out_of_checkpoints_and_eval(augment_cfg, tmp_path: Path) -> None:
    cfg = augment_cfg("model=cnn_only", "augment=default")
    _, plain = build(augment_cfg("model=cnn_only"))
    _, model = build(cfg)
    assert "augment" not in model.hparams
    assert model.state_dict().keys() == plain.state_dict().keys()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader())
    path = tmp_path / "augmented.ckpt"
    trainer.save_checkpoint(path)
    ckpt, stored = load_checkpoint(path)  # weights_only: nothing but plain data inside
    assert stored.augment._target_.endswith("BatchAugment")  # the run config records it
    assert model_from_loaded(ckpt, stored).augment is None  # evaluation never augments
    with open_dict(stored):
        del stored["augment"]  # a checkpoint from before the augment group
    assert model_from_loaded(ckpt, stored).augment is None


# -- every classifier --------------------------------------------------------------------------------
CLASSIFIERS = [m for m in options("model") if m != "lstm_vae"]


@pytest.mark.parametrize("data", ["synthetic", "physionet2017"])
@pytest.mark.parametrize("model", CLASSIFIERS)
def test_every_classifier_composes_with_default_augment(augment_cfg, model: str, data: str) -> None:
    cfg = augment_cfg(f"model={model}", f"data={data}", "augment=default")
    check_overrides(cfg)
    _, module = build(cfg)
    assert isinstance(module.augment, BatchAugment) and module.augment.fs == cfg.data.fs
    x = windows(2)
    with torch.no_grad():
        assert module(module.augmented(x, 0)).shape == (2, 4)


def test_bad_augment_settings_are_one_line_naming_the_key(augment_cfg) -> None:
    cases = {
        ("augment=default", "augment.transforms.noise.p=1.5"): "augment.transforms.noise.p=1.5",
        ("augment=crop", "augment.transforms.crop.fraction=[0.9,0.5]"): "augment.transforms.crop.fraction",
        ("augment=wander", "augment.transforms.wander.freq=[1,200]"): r"augment.transforms.wander.freq.*150",
        ("augment=default", "experiment=lstm_vae"): "augment=default is for classification.*use augment=none",
    }
    for overrides, message in cases.items():
        cfg = augment_cfg(*overrides)
        with pytest.raises(ConfigError, match=message) as err:
            build(cfg)
        assert "\n" not in str(err.value)
