"""The one writer of a run folder.

:class:`RunOutputs` writes everything a run leaves behind: ``run_status.json`` (running → completed |
failed; a running one whose process is gone reads as killed, :func:`read_status`), the split manifest
(``split.csv``), ``skipped_records.csv``, ``class_weights.json``, ``test_metrics.json`` and the task's
test figures and files (a classifier's ``predictions.csv`` and ``window_predictions.csv``), and, when
the run completes, ``report.html`` (:mod:`ecg_lab.app.html_report`) from all of them. A task
provides its part through two small interfaces: its datamodule is a :class:`RunData` and its
LightningModule a :class:`TestReporter`. A new task implements those two and nothing else of the run
machinery. Only rank zero writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ecg_lab.data.cache import pid_alive
from ecg_lab.errors import UserError

if TYPE_CHECKING:
    from ecg_lab.app.html_report import ReportSettings
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
    """What a task reports after testing: metrics for ``test_metrics.json``, its figures, each a file
    name with the function that draws it into a given path, and further ``files`` (tables such as a
    classifier's ``predictions.csv``), each a file name with the function that writes it there;
    ``explain`` (a classifier's) draws the explanation figure of a test recording, given its id and true
    label, for ``report.html``'s worst recordings."""

    __test__ = False  # a name pytest would otherwise try to collect

    metrics: dict[str, Any]
    figures: dict[str, Callable[[Path], Path]] = field(default_factory=dict)
    files: dict[str, Callable[[Path], Any]] = field(default_factory=dict)
    explain: Callable[[str, str], Any] | None = None
    warnings: list[str] = field(default_factory=list)  # for run_status.json (already in the log)


@runtime_checkable
class TestReporter(Protocol):
    """A LightningModule whose test results the run writer can write."""

    def test_outcome(self) -> TestOutcome: ...


@runtime_checkable
class RunData(Protocol):
    """A datamodule whose split and skipped records the run writer can write (after ``setup``)."""

    manifest: SplitManifest | None
    skipped: list[SkippedRecord]


RUNNING, COMPLETED, FAILED, KILLED = "running", "completed", "failed", "killed"


def process_alive(pid: Any, host: Any) -> bool | None:
    """Whether process ``pid`` on ``host`` still runs (None: unknown, another host or no pid)."""
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    return pid_alive(pid)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's ``run_status.json`` with ``status`` ``killed`` where it says running but its
    process is gone (None without a readable file)."""
    path = Path(run_dir) / "run_status.json"
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("status") == RUNNING and process_alive(status.get("pid"), status.get("host")) is False:
        status["status"] = KILLED
        status["error"] = f"killed: process {status['pid']} is gone (started {status.get('started', '?')})"
    return status


class RunFolderInUseError(UserError, RuntimeError):
    """Another live process runs in this run folder."""


class RunOutputs:
    """Writes the files of one run folder; ``enabled=False`` (DDP ranks 1..n) writes nothing."""

    def __init__(self, output_dir: str | Path, enabled: bool = True) -> None:
        self.dir = Path(output_dir)
        self.enabled = enabled
        self._t0 = time.perf_counter()
        self._status: dict[str, Any] = {}
        self.previous: dict[str, Any] | None = None  # run_status.json of an earlier run in this folder
        self._report: Callable[[], Path] | None = None  # report.html, written when the run ends

    def json(self, name: str, payload: dict[str, Any]) -> Path:
        """``name`` in the run folder, written atomically."""
        path = self.dir / name
        if self.enabled:
            write_json(path, payload)
        return path

    # -- run_status.json ---------------------------------------------------------------------
    def started(self, task_name: str | None, overrides: Sequence[str]) -> None:
        """``run_status.json``: running, with this process's id; the status of an earlier run in the
        same folder (e.g. killed, before a resume) is kept under ``previous``. Refuses a folder another
        live process is running in."""
        self._t0 = time.perf_counter()
        self.previous = previous = read_status(self.dir) if self.enabled else None
        if previous and previous.get("status") == RUNNING and previous.get("pid") != os.getpid():
            if process_alive(previous.get("pid"), previous.get("host")):
                raise RunFolderInUseError(
                    f"{self.dir / 'run_status.json'}: process {previous['pid']} is still running in this "
                    "folder; wait for it to end, or choose another hydra.run.dir"
                )
        if previous and previous.get("status") == KILLED:
            log.warning("the earlier run in %s was %s", self.dir, previous["error"])
        self._status = {
            "status": RUNNING,
            "error": None,
            "task_name": task_name,
            "overrides": list(overrides),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
            "ended": None,
            "wall_time_s": None,
            "output_dir": str(self.dir.resolve()),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        if previous:
            self._status["previous"] = {k: previous.get(k) for k in ("status", "error", "started", "ended")}
        self.json("run_status.json", self._status)

    def note(self, **fields: Any) -> None:
        """Add ``fields`` to ``run_status.json`` (e.g. what a resumed run resumed from)."""
        self._status.update(fields)
        self.json("run_status.json", self._status)

    def ended(self, error: BaseException | None = None) -> float:
        """``run_status.json``: completed, or failed with the error; returns the wall time in seconds."""
        elapsed = time.perf_counter() - self._t0
        self._status.update(
            status=FAILED if error is not None else COMPLETED,
            error=None if error is None else f"{type(error).__name__}: {error}",
            ended=dt.datetime.now().isoformat(timespec="seconds"),
            wall_time_s=round(elapsed, 2),
        )
        self.json("run_status.json", self._status)
        if self._report is not None and error is None:
            self._report()
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
        report: ReportSettings | None = None,
    ) -> dict[str, Any]:
        """Test ``model`` (or the weights at ``ckpt_path``); write ``test_metrics.json``, the task's
        figures and files; return the metrics (the task's, then the epoch means Lightning logged).
        With ``report``, a run that completes writes ``report.html`` when it ends (with its status)."""
        logged = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)[0]
        outcome = model.test_outcome()
        if outcome.warnings:
            self.note(warnings=list(outcome.warnings))
        metrics = dict(outcome.metrics)
        for key, value in logged.items():  # epoch means of step-logged values (loss, ...)
            metrics.setdefault(key.removeprefix("test/"), value)
        if self.enabled and trainer.is_global_zero:  # results are already gathered from every rank
            self.json("test_metrics.json", {**extra, **metrics})
            for name, draw in outcome.figures.items():
                draw(self.dir / name)
            for name, write in outcome.files.items():
                write(self.dir / name)
            log.info("test metrics written to %s", self.dir / "test_metrics.json")
            if report is not None:
                from ecg_lab.app.html_report import write_run_report  # it reads run_status.json: no cycle

                self._report = functools.partial(
                    write_run_report, self.dir, getattr(model, "run_config", None), report, outcome.explain
                )
        return metrics
