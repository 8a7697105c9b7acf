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


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")  # an advertisement, not information


def quiet_known_noise() -> None:
    """Filter messages that say nothing to a user: a class absent from one validation batch set,
    Lightning's own deprecation chatter and its tips, and its note on a resumed run's new folder."""
    warnings.filterwarnings("ignore", message=".*No positive samples in targets.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # resuming into a new folder: BestCheckpoint carries the best checkpoint over and says so
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _not_a_tip not in logger.filters:
        logger.addFilter(_not_a_tip)


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
