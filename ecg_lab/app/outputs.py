"""The one writer of a run folder.

:class:`RunOutputs` writes everything a run leaves behind: ``run_status.json`` (running → completed |
failed), the split manifest (``split.csv``), ``skipped_records.csv``, ``class_weights.json``,
``test_metrics.json`` and the task's test figures. A task provides its part through two small
interfaces: its datamodule is a :class:`RunData` and its LightningModule a :class:`TestReporter`. A
new task implements those two and nothing else of the run machinery. Only rank zero writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ecg_lab.data.records import SkippedRecord
    from ecg_lab.data.splits import SplitManifest

log = logging.getLogger(__name__)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)
    return path


@dataclass
class TestOutcome:
    """What a task reports after testing: metrics for ``test_metrics.json`` and its figures, each a
    file name with the function that draws it into a given path."""

    __test__ = False  # a name pytest would otherwise try to collect

    metrics: dict[str, Any]
    figures: dict[str, Callable[[Path], Path]] = field(default_factory=dict)


@runtime_checkable
class TestReporter(Protocol):
    """A LightningModule whose test results the run writer can write."""

    def test_outcome(self) -> TestOutcome: ...


@runtime_checkable
class RunData(Protocol):
    """A datamodule whose split and skipped records the run writer can write (after ``setup``)."""

    manifest: SplitManifest | None
    skipped: list[SkippedRecord]


class RunOutputs:
    """Writes the files of one run folder; ``enabled=False`` (DDP ranks 1..n) writes nothing."""

    def __init__(self, output_dir: str | Path, enabled: bool = True) -> None:
        self.dir = Path(output_dir)
        self.enabled = enabled
        self._t0 = time.perf_counter()
        self._status: dict[str, Any] = {}

    def json(self, name: str, payload: dict[str, Any]) -> Path:
        """``name`` in the run folder, written atomically."""
        path = self.dir / name
        if self.enabled:
            write_json(path, payload)
        return path

    # -- run_status.json ---------------------------------------------------------------------
    def started(self, task_name: str | None, overrides: Sequence[str]) -> None:
        """``run_status.json``: running."""
        self._t0 = time.perf_counter()
        self._status = {
            "status": "running",
            "error": None,
            "task_name": task_name,
            "overrides": list(overrides),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
            "ended": None,
            "wall_time_s": None,
            "output_dir": str(self.dir.resolve()),
        }
        self.json("run_status.json", self._status)

    def ended(self, error: BaseException | None = None) -> float:
        """``run_status.json``: completed, or failed with the error; returns the wall time in seconds."""
        elapsed = time.perf_counter() - self._t0
        self._status.update(
            status="failed" if error is not None else "completed",
            error=None if error is None else f"{type(error).__name__}: {error}",
            ended=dt.datetime.now().isoformat(timespec="seconds"),
            wall_time_s=round(elapsed, 2),
        )
        self.json("run_status.json", self._status)
        return elapsed

    # -- the data's files --------------------------------------------------------------------
    def data_files(self, data: RunData) -> list[Path]:
        """The split manifest, the skipped records and (for a classifier's data) the class weights."""
        if not self.enabled:
            return []
        written = []
        if data.manifest is not None:
            written.append(data.manifest.write_csv(self.dir / "split.csv"))
        if data.skipped:
            written.append(self.skipped_records(data.skipped))
        weights = getattr(data, "class_weight_table", None)
        if callable(weights) and (table := weights()):
            written.append(self.json("class_weights.json", table))
        return written

    def skipped_records(self, skipped: Sequence[SkippedRecord]) -> Path:
        """``skipped_records.csv``: record, path, problem."""
        path = self.dir / "skipped_records.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["record", "path", "problem"])
            w.writerows((s.record_id, s.path, s.problem) for s in skipped)
        log.warning("%d records skipped; listed in %s", len(skipped), path)
        return path

    # -- test results ------------------------------------------------------------------------
    def test_results(
        self,
        trainer: Any,
        model: TestReporter,
        datamodule: Any,
        extra: dict[str, Any],
        ckpt_path: str | None = None,
    ) -> dict[str, Any]:
        """Test ``model`` (or the weights at ``ckpt_path``); write ``test_metrics.json`` and the task's
        figures; return the metrics (the task's, then the epoch means Lightning logged)."""
        logged = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)[0]
        outcome = model.test_outcome()
        metrics = dict(outcome.metrics)
        for key, value in logged.items():  # epoch means of step-logged values (loss, ...)
            metrics.setdefault(key.removeprefix("test/"), value)
        if self.enabled and trainer.is_global_zero:  # results are already gathered from every rank
            self.json("test_metrics.json", {**extra, **metrics})
            for name, draw in outcome.figures.items():
                draw(self.dir / name)
            log.info("test metrics written to %s", self.dir / "test_metrics.json")
        return metrics
