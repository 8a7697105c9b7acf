"""trainer=ddp under Hydra: two CPU processes (gloo), one run folder, metrics reduced across ranks, each
val/test window counted once (the test sets hold an odd number of windows, so a padding sampler would
repeat one)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch

from ecg_lab.app.distributed import WindowMean, gather_rows
from ecg_lab.eval import evaluate
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.helpers import run_module
from tests.test_fidelity import KEYS as FIDELITY_KEYS
from tests.test_waveforms import SMALL_NORMAL

BATCH, TEST_BATCHES, RANKS = 16, 2, 2
# 25 test windows (records of 10-13 s give 3 or 4)
ODD_SYNTHETIC = [*SMALL_SYNTHETIC, "data.synthetic.max_duration_s=13"]
# 15 test windows: 5 test records of 3 windows each
ODD_NORMAL = [
    "experiment=lstm_vae",
    *SMALL_NORMAL,
    "data.stride=500",
    "data.sources.physionet2017.split_fractions=[0.7,0.1,0.2]",
    "model.fidelity.n_generated=8",
]


def ddp_args(cache_dir: Path, data: list[str] = ODD_SYNTHETIC) -> list[str]:
    """Small data, two CPU ranks, a few batches."""
    return [
        *data,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"trainer.devices={RANKS}",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        f"trainer.limit_test_batches={TEST_BATCHES}",
        "callbacks.progress.interactive=false",
        f"paths.cache_dir={cache_dir}",
    ]


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = run_module("ecg_lab.train", args, cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def n_test_windows(data: list[str], out: Path, cache_dir: Path) -> tuple[int, object]:
    """The number of test windows of ``data``, asserted odd, and the set-up datamodule."""
    dm = hydra.utils.instantiate(compose_config("train", data, out, cache_dir).data)
    dm.prepare_data()
    dm.setup()
    n_test = len(dm.datasets["test"])
    assert n_test % RANKS == 1  # DistributedSampler would pad this set with a repeated window
    return n_test, dm


def single_process_eval(ckpt: str, out: Path, cache_dir: Path) -> dict:
    """The checkpoint tested in one process on its own test split."""
    overrides = [f"ckpt_path={ckpt}", "trainer=cpu", "callbacks.progress.interactive=false"]
    evaluate(compose_config("eval", overrides, out, cache_dir))
    return json.loads((out / "test_metrics.json").read_text())


def test_val_and_test_loaders_share_the_windows_out_without_padding(tmp_path: Path, cache_dir: Path) -> None:
    n_test, dm = n_test_windows(ODD_SYNTHETIC, tmp_path, cache_dir)
    for part, loader in (("val", dm.val_dataloader), ("test", dm.test_dataloader)):
        seen = []
        for rank in range(RANKS):
            dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": RANKS, "rank": rank})
            seen += list(loader().sampler)
        assert sorted(seen) == list(range(len(dm.datasets[part]))), part  # every window once
    dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": n_test + 1, "rank": 0})
    with pytest.raises(
        ValueError, match=rf"^data synthetic: {n_test} test windows for {n_test + 1} DDP ranks"
    ):
        dm.test_dataloader()
    dm.trainer = None  # one process: the plain sequential loader
    assert list(dm.test_dataloader().sampler) == list(range(n_test))


def test_window_means_weigh_batches_by_their_windows_and_keep_nan() -> None:
    mean = WindowMean()
    mean.update(torch.tensor(1.0), 8)
    mean.update(torch.tensor(2.0), 7)
    assert float(mean.compute()) == pytest.approx(22 / 15)
    mean.update(torch.tensor(float("nan")), 1)
    assert torch.isnan(mean.compute())
    rows = torch.arange(6.0).reshape(3, 2)
    assert gather_rows(rows) is rows  # one process: nothing to gather


def test_ddp_two_cpu_processes_share_one_run_folder(tmp_path: Path, cache_dir: Path) -> None:
    proc = run_train([*ddp_args(cache_dir), "trainer.max_epochs=2"], tmp_path)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr

    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir() and p.parts[-2] != "latest"]
    assert len(runs) == 1, f"expected one run folder, got {runs}"
    run = runs[0]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(ckpts) == 2 and ckpts[0].startswith("best-epoch") and ckpts[1] == "last.ckpt"
    assert len(list(run.rglob("metrics.csv"))) == 1  # rank 0's logger only
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train_ddp_process_1.log").is_file()
    assert json.loads((run / "run_status.json").read_text())["status"] == "completed"

    # the test set is split between the ranks without padding; the report counts each window once
    n_test, dm = n_test_windows(ODD_SYNTHETIC, tmp_path / "count", cache_dir)
    assert n_test <= RANKS * TEST_BATCHES * BATCH  # the limit does not cut the test set
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["n_windows"] == n_test
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n_windows"]
    assert metrics["n_records"] == int(np.sum(dm.record_split == "test"))
    # and every number is the one a single process gets on the same checkpoint
    single = single_process_eval(metrics["ckpt_path"], tmp_path / "eval", cache_dir)
    assert single["confusion_matrix"] == metrics["confusion_matrix"]
    assert single["record_confusion_matrix"] == metrics["record_confusion_matrix"]
    # (the weighted cross-entropy is normalised per batch, and the batches differ: its mean may too)
    for key in ("acc", "f1", "auroc", "official_f1", "sensitivity_A", "specificity_N"):
        assert metrics[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key
    # and "test metrics written" once: only rank 0 writes reports
    assert (proc.stdout + proc.stderr).count("test metrics written") == 1


def test_ddp_vae_fidelity_is_gathered_from_every_rank(tmp_path: Path, cache_dir: Path) -> None:
    """The LSTM-VAE's test metrics score every test window once, from both ranks, not rank 0's share."""
    args = [*ddp_args(cache_dir, ODD_NORMAL), "trainer.max_epochs=1", "trainer.limit_test_batches=null"]
    run_train([*args, "trainer.check_val_every_n_epoch=1"], tmp_path)  # a best checkpoint after epoch 1
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir() and p.parts[-2] != "latest"]
    metrics = json.loads((run / "test_metrics.json").read_text())
    n_test, _ = n_test_windows(ODD_NORMAL, tmp_path / "count", cache_dir)
    assert metrics["n_windows"] == n_test
    single = single_process_eval(metrics["ckpt_path"], tmp_path / "eval", cache_dir)
    assert single["n_windows"] == n_test
    for key in ("kl", *sorted(FIDELITY_KEYS)):  # not wmse: normalised per batch, and the batches differ
        assert metrics[key] == pytest.approx(single[key], rel=1e-4, abs=1e-7, nan_ok=True), key


@pytest.mark.slow
def test_ddp_in_a_sequential_multirun_keeps_each_job_in_its_folder(tmp_path: Path, cache_dir: Path) -> None:
    """Lightning re-runs the command line for rank 1: in a multirun it must be the job, not the sweep."""
    proc = run_train(["-m", "model=cnn_only,gru", *ddp_args(cache_dir), "trainer.max_epochs=1"], tmp_path)
    assert (proc.stdout + proc.stderr).count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    assert not (tmp_path / "outputs").exists()  # no stray single-run folder from a rank
    found = (tmp_path / "multirun").glob("*/*/*")
    jobs = sorted(p for p in found if p.is_dir() and "latest" not in p.parts[-3:])
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    for job in jobs:
        assert json.loads((job / "run_status.json").read_text())["status"] == "completed"
        assert (job / "train_ddp_process_1.log").is_file() and (job / "test_metrics.json").is_file()
