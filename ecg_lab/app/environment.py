"""Process-wide settings that only entry points make: OpenMP's spin, CPU threads, warning and logging
filters, and how a run that fails on bad input ends.

Importing a package module never calls these; ``python -m ecg_lab.<verb>`` and the console scripts do.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from ecg_lab.app.config import multirun_config, register_resolvers
from ecg_lab.errors import ConfigError, UserError

T = TypeVar("T")


def prefer_short_omp_spin() -> None:
    """Set ``GOMP_SPINCOUNT=10000`` unless the user set OpenMP's waiting policy; call before torch loads.

    libgomp's threads spin ~300k times before sleeping; when another job shares the cores they burn
    each other's time and CPU training crawls. A short spin keeps full speed on an idle machine and
    degrades gracefully when shared (``bench/omp_wait.py`` measures both). Your own ``OMP_WAIT_POLICY``
    or ``GOMP_SPINCOUNT`` wins.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")


FILE_ONLY = "file_only"  # ``log.info(msg, extra={FILE_ONLY: True})``: for the log file, not the console

# Lightning's notices that say nothing to a user, by the start of the message
_NOTICES = (
    "💡 Tip",  # an advertisement (litlogger, litmodels), not information
    "Trainer already configured with model summary callbacks",  # ours is configured on purpose
    "TPU available: False",
    "LOCAL_RANK: ",  # the device list, repeated for every rank and every trainer
)
# lines and columns of Lightning's model summary that are always the same or always 0 here
_SUMMARY_LINES = ("Modules in train mode", "Modules in eval mode", "Total Flops")
_SUMMARY_COLUMNS = ("Mode", "FLOPs")


class NotFileOnly(logging.Filter):
    """For a console handler (``conf/hydra/default.yaml``): drops records logged with ``extra={FILE_ONLY:
    True}``, so a line the console already shows (the per-epoch line or bar) reaches the log file once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False)


def _not_a_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_NOTICES)


def trim_model_summary(text: str) -> str:
    """Lightning's model summary table without its Mode and FLOPs columns and its module-mode and FLOPs
    totals (a table of another layout comes back unchanged but for those lines)."""
    lines = [line for line in text.split("\n") if not line.strip().endswith(_SUMMARY_LINES)]
    header = next((i for i, line in enumerate(lines) if "| Name" in line), None)
    if header is None:
        return "\n".join(lines)
    cells = lines[header].split(" | ")
    drop = {i for i, cell in enumerate(cells) if cell.strip() in _SUMMARY_COLUMNS}
    width = len(" | ".join(c for i, c in enumerate(cells) if i not in drop).rstrip())
    trimmed = []
    for line in lines:
        row = line.split(" | ")
        if len(row) == len(cells):
            line = " | ".join(c for i, c in enumerate(row) if i not in drop).rstrip()
        elif line and set(line) == {"-"}:
            line = "-" * width
        trimmed.append(line)
    return "\n".join(trimmed)


def _trimmed_summary(record: logging.LogRecord) -> bool:
    record.msg = trim_model_summary(str(record.msg))
    return True


def _add_filter(logger_name: str, fn: Callable[[logging.LogRecord], bool]) -> None:
    logger = logging.getLogger(logger_name)
    if fn not in logger.filters:
        logger.addFilter(fn)


def quiet_known_noise() -> None:
    """Filter messages that say nothing to a user: a class absent from one validation batch set,
    Lightning's deprecation chatter, tips and repeated notices, the model summary's meaningless columns,
    its advice on workers and logging intervals, and its note on a resumed run's new folder."""
    warnings.filterwarnings("ignore", message=".*No positive samples in targets.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # resuming into a new folder: BestCheckpoint carries the best checkpoint over and says so
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    # once per data loader: the data configs set num_workers on purpose (data.num_workers)
    warnings.filterwarnings("ignore", message="The '.*' does not have many workers")
    # ecg_lab logs epoch-level metrics; a short epoch makes no step-level curve worth warning about
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging")
    _add_filter("pytorch_lightning.utilities.rank_zero", _not_a_notice)
    _add_filter("pytorch_lightning.accelerators.cuda", _not_a_notice)
    _add_filter("pytorch_lightning.callbacks.model_summary", _trimmed_summary)


def set_up_app() -> None:
    """Everything a Hydra entry point sets before composing its config."""
    quiet_known_noise()
    register_resolvers()


def apply_threads(threads: Any) -> None:
    """Cap the process's CPU threads at ``threads`` (config key ``threads``; None: the libraries' own
    defaults): torch's intra-op threads when torch is loaded (every Hydra app), and the BLAS pools that
    NumPy and SciPy use."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(
            f"threads={threads!r} must be a positive int, or null for the default; e.g. threads=1"
        )
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn
    except ImportError:  # pragma: no cover
        return
    threadpool_limits(limits=threads, user_api="blas")


def one_line_user_errors(task_function: Callable[[Any], T]) -> Callable[[Any], T]:
    """Decorate a Hydra app's task function (under ``@hydra.main``): a :class:`~ecg_lab.errors.UserError`
    ends a single run with its message as the last line (stderr) and exit status 1, instead of Hydra's
    traceback. ``HYDRA_FULL_ERROR=1`` keeps the traceback, a multirun records the failed job as Hydra
    does, and any other error is a bug and keeps its traceback."""

    @functools.wraps(task_function)
    def wrapped(cfg: Any) -> T:
        try:
            return task_function(cfg)
        except UserError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or multirun_config() is not None:
                raise
            print(f"Error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    return wrapped
