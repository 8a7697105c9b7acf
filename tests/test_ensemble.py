"""Ensembles in ``ecg_lab.eval`` (``ckpt_path=[a.ckpt,b.ckpt]``): the members' window probabilities
averaged, a one-member list the same as a plain ``ckpt_path`` and members that differ refused (ensembles
in ``ecg_lab.export``: tests/test_edge_ensemble.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch

from ecg_lab.app.checkpoints import load_checkpoint, model_from_checkpoint
from ecg_lab.classification.ensemble import MeanProbabilities, ensemble_classifier
from ecg_lab.errors import ConfigError
from ecg_lab.eval import data_config, evaluate, own_split
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config

SHORT = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "test=false",
    "callbacks.progress.interactive=false",
]
QUIET = ["callbacks.progress.interactive=false"]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """``last.ckpt`` of two short runs of seeds 1 and 2 (one split: split_seed is the data's)."""
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        run = tmp_path_factory.mktemp(f"member_{name}")
        train(compose_config("train", [*SMALL_SYNTHETIC, *SHORT, f"seed={seed}"], run, cache_dir))
        out[name] = run / "checkpoints" / "last.ckpt"
    return out


def evaluated(out: Path, cache_dir: Path, *overrides: str) -> dict[str, Any]:
    """``python -m ecg_lab.eval *overrides`` in this process; the ``test_metrics.json`` it writes."""
    evaluate(compose_config("eval", [*overrides, *QUIET], out, cache_dir))
    return json.loads((out / "test_metrics.json").read_text())


@pytest.fixture(scope="module")
def alone(
    members: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> dict[str, dict[str, Any]]:
    """Each member evaluated alone with a plain ``ckpt_path``."""
    return {
        name: evaluated(tmp_path_factory.mktemp(f"alone_{name}"), cache_dir, f"ckpt_path={path}")
        for name, path in members.items()
    }


def test_ensemble_averages_its_members(
    members: dict[str, Path], alone: dict[str, dict[str, Any]], tmp_path: Path, cache_dir: Path
) -> None:
    a, b = members["a"], members["b"]
    results = evaluated(tmp_path, cache_dir, f"ckpt_path=[{a},{b}]")
    assert results["ensemble_size"] == 2 and results["ckpt_path"] is None
    assert results["ckpt_paths"] == [str(a.resolve()), str(b.resolve())]
    assert results["n_windows"] == alone["a"]["n_windows"] and results["n_records"] == alone["a"]["n_records"]
    assert (tmp_path / "split.csv").read_text() == (a.parent.parent / "split.csv").read_text()
    for member in alone.values():  # averaged probabilities score differently from either member
        assert (results["auroc"], results["loss"]) != (member["auroc"], member["loss"])
    # the ensemble's window probabilities are the mean of its members', on a batch of test windows
    x = next(iter(own_test_loader(a, tmp_path / "batch", cache_dir)))[0]
    models = [model_from_checkpoint(path)[0] for path in (a, b)]
    ensemble = ensemble_classifier(models, [str(a), str(b)])
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), dim=1) for m in models]).mean(0)
        averaged = torch.softmax(ensemble(x), dim=1)
    assert isinstance(ensemble.net, MeanProbabilities) and ensemble.n_params == 2 * models[0].n_params
    torch.testing.assert_close(averaged, mean, rtol=0, atol=1e-6)
    assert not torch.allclose(mean, torch.softmax(models[0](x), dim=1).detach(), atol=1e-3)


def test_ensemble_given_as_a_quoted_string_evaluates_the_same(
    members: dict[str, Path], tmp_path: Path, cache_dir: Path
) -> None:
    """``ckpt_path='[a,b]'`` (a Hydra string, as ``make`` passes it) reads as the list."""
    a, b = members["a"], members["b"]
    listed = evaluated(tmp_path / "list", cache_dir, f"ckpt_path=[{a},{b}]")
    quoted = evaluated(tmp_path / "quoted", cache_dir, f"ckpt_path='[{a},{b}]'")
    assert listed["ckpt_paths"] == quoted["ckpt_paths"] and listed["f1"] == quoted["f1"]


def test_one_member_list_is_a_plain_ckpt_path(
    members: dict[str, Path], alone: dict[str, dict[str, Any]], tmp_path: Path, cache_dir: Path
) -> None:
    results = evaluated(tmp_path, cache_dir, f"ckpt_path=[{members['a']}]")
    assert results == alone["a"]
    assert results["ensemble_size"] == 1 and results["ckpt_paths"] == [results["ckpt_path"]]


def test_members_calibrations_are_ignored_with_a_warning(
    members: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    models = [model_from_checkpoint(path)[0] for path in members.values()]
    models[1].calibration = {"method": "prior", "classes": list(models[1].classes), "values": [0, 0, 0, 9]}
    with caplog.at_level(logging.WARNING, logger="ecg_lab.classification.ensemble"):
        ensemble = ensemble_classifier(models, ["a.ckpt", "b.ckpt"])
    assert ensemble.calibration is None
    assert "ignoring the calibration stored in b.ckpt" in caplog.text


# -- refusals ------------------------------------------------------------------------------------------
def other_classes(ckpt: dict[str, Any]) -> None:
    ckpt["ecg_lab"]["classes"] = ["N", "A", "O"]
    ckpt["ecg_lab"]["config"]["model"]["classes"] = ["N", "A", "O"]


def other_window(ckpt: dict[str, Any]) -> None:
    ckpt["ecg_lab"]["config"]["data"]["preprocess"]["window"] += 300


def other_test_records(ckpt: dict[str, Any]) -> None:
    """Swap a test record with a training one, as another fold of a k-fold sweep would."""
    splits = ckpt["ecg_lab"]["split"]["split"]
    test, trained = splits.index("test"), splits.index("train")
    splits[test], splits[trained] = "train", "test"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (other_classes, r"differ in classes \(\['N', 'A', 'O', '~'\] vs \['N', 'A', 'O'\]\)"),
        (other_window, r"differ in data\.preprocess \(.*'window': 1500.* vs .*'window': 1800"),
        (other_test_records, r"were tested on different records .*pass data\.manifest=.* or data\.split=all"),
    ],
    ids=["classes", "window", "test_records"],
)
def test_members_that_differ_are_refused_in_one_line(
    members: dict[str, Path], tmp_path: Path, cache_dir: Path, change: Any, message: str
) -> None:
    other = tmp_path / "other.ckpt"
    ckpt = torch.load(members["b"], map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, other)
    cfg = compose_config("eval", [f"ckpt_path=[{members['a']},{other}]", *QUIET], tmp_path / "run", cache_dir)
    with pytest.raises(ConfigError, match=message) as err:
        evaluate(cfg)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"ckpt_path members {members['a']} and {other} ")


def test_members_testing_other_records_are_accepted_with_split_all(
    members: dict[str, Path], tmp_path: Path, cache_dir: Path
) -> None:
    from ecg_lab.eval import check_ensemble, load_members

    other = tmp_path / "other.ckpt"
    ckpt = torch.load(members["b"], map_location="cpu", weights_only=True)
    other_test_records(ckpt)
    torch.save(ckpt, other)
    for extra in ("data.split=all", f"data.manifest={members['a'].parent.parent / 'split.csv'}"):
        cfg = compose_config(
            "eval", [f"ckpt_path=[{members['a']},{other}]", "data=synthetic", extra], tmp_path, cache_dir
        )
        members_loaded = load_members(cfg)
        check_ensemble(members_loaded, data_config(cfg, members_loaded[0].stored))  # no error


# -- helpers -------------------------------------------------------------------------------------------
def own_test_loader(ckpt_path: Path, out: Path, cache_dir: Path) -> Any:
    """The test dataloader of ``ckpt_path``'s own split, as ``ecg_lab.eval`` builds it."""
    cfg = compose_config("eval", [f"ckpt_path={ckpt_path}", *QUIET], out, cache_dir)
    ckpt, stored = load_checkpoint(ckpt_path)
    data_cfg = data_config(cfg, stored)
    datamodule = hydra.utils.instantiate(data_cfg)
    own_split(datamodule, ckpt, str(ckpt_path), data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.test_dataloader()


def test_other_apps_refuse_a_list(members: dict[str, Path], train_cfg) -> None:
    with pytest.raises(ConfigError, match=r"^ckpt_path=\[.*\] is a list; only python -m ecg_lab\.eval"):
        train(train_cfg(f"ckpt_path=[{members['a']}]"))


def test_a_member_written_before_an_optional_setting_existed_is_accepted(
    members: dict[str, Path], tmp_path: Path
) -> None:
    """A checkpoint from before data.preprocess.resample_to existed lacks the key; a newer one holds it as
    null: the same preprocessing, so the two ensemble (this refused the seed-42 run of issue 13's table)."""
    from ecg_lab.eval import check_ensemble, load_members

    older = tmp_path / "older.ckpt"
    ckpt = torch.load(members["b"], map_location="cpu", weights_only=True)
    ckpt["ecg_lab"]["config"]["data"]["preprocess"].pop("resample_to", None)
    torch.save(ckpt, older)
    newer = torch.load(members["a"], map_location="cpu", weights_only=True)
    assert "resample_to" in newer["ecg_lab"]["config"]["data"]["preprocess"]
    cfg = compose_config("eval", [f"ckpt_path=[{members['a']},{older}]", *QUIET], tmp_path / "run", tmp_path)
    loaded = load_members(cfg)
    check_ensemble(loaded, data_config(cfg, loaded[0].stored))  # no error
