"""The run writer and its two small interfaces, shown with a third task that is neither workflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from ecg_lab.app import outputs as run_outputs
from ecg_lab.app.outputs import RunData, RunOutputs, TestOutcome
from ecg_lab.app.task import task_wrapper
from ecg_lab.data.records import SkippedRecord
from ecg_lab.data.splits import SplitManifest


class HeartRateData(pl.LightningDataModule):
    """A third task's data: 8 'records' of heart rate regression, one skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.manifest: SplitManifest | None = None
        self.skipped: list[SkippedRecord] = []

    def setup(self, stage: str | None = None) -> None:
        self.manifest = SplitManifest.build(
            "hr", [f"R{i}" for i in range(8)], ["x"] * 8, ["train"] * 6 + ["test"] * 2
        )
        self.skipped = [SkippedRecord("R9", "R9.mat", "flat")]

    def test_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(
            TensorDataset(torch.randn(16, 3, generator=g), torch.randn(16, generator=g)), batch_size=4
        )


class HeartRateModel(pl.LightningModule):
    """A third task's module: it reports its test outcome and nothing else of the run machinery."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)
        self._errors: list[torch.Tensor] = []
        self._mae = float("nan")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        error = (self.net(x)[:, 0] - y).abs()
        self._errors.append(error)
        self.log("test/loss", error.mean())

    def on_test_epoch_end(self) -> None:
        self._mae = float(torch.cat(self._errors).mean())

    def test_outcome(self) -> TestOutcome:
        def draw(path: Path) -> Path:
            path.write_text("a figure")
            return path

        return TestOutcome({"mae": self._mae}, {"errors.txt": draw})


def test_a_third_task_needs_only_the_two_interfaces(tmp_path: Path) -> None:
    data, model = HeartRateData(), HeartRateModel()
    assert isinstance(model, run_outputs.TestReporter)
    outputs = RunOutputs(tmp_path)
    data.setup()
    assert isinstance(data, RunData)
    outputs.data_files(data)
    trainer = pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    metrics = outputs.test_results(trainer, model, data, {"task_name": "hr"})
    written = json.loads((tmp_path / "test_metrics.json").read_text())
    assert written["task_name"] == "hr" and written["mae"] == pytest.approx(metrics["mae"])
    assert "loss" in written  # the epoch means Lightning logged join the task's own metrics
    assert (tmp_path / "errors.txt").read_text() == "a figure"
    rows = list(csv.DictReader((tmp_path / "split.csv").open()))
    assert [r["split"] for r in rows].count("test") == 2 and rows[0]["source"] == "hr"
    assert "R9" in (tmp_path / "skipped_records.csv").read_text()
    assert not (tmp_path / "class_weights.json").exists()  # this task has none


def test_a_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    data = HeartRateData()
    data.setup()
    outputs = RunOutputs(tmp_path / "rank1", enabled=False)
    outputs.started("x", [])
    outputs.data_files(data)
    assert not (tmp_path / "rank1").exists()


def test_the_task_wrapper_records_failure_and_success(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"task_name": "hr", "paths": {"output_dir": str(tmp_path)}})

    @task_wrapper
    def fails(cfg, outputs: RunOutputs) -> dict:
        raise RuntimeError("diverged")

    @task_wrapper
    def works(cfg, outputs: RunOutputs) -> dict:
        outputs.json("extra.json", {"ok": True})
        return {}

    with pytest.raises(RuntimeError):
        fails(cfg)
    status = json.loads((tmp_path / "run_status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: diverged"
    works(cfg)
    assert json.loads((tmp_path / "run_status.json").read_text())["status"] == "completed"
    assert json.loads((tmp_path / "extra.json").read_text()) == {"ok": True}
