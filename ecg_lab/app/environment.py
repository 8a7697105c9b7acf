"""Process-wide settings that only entry points make: OpenMP's spin, warning and logging filters.

Importing a package module never calls these; ``python -m ecg_lab.<verb>`` and the console scripts do.
"""

from __future__ import annotations

import logging
import os
import warnings

from ecg_lab.app.config import register_resolvers


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
    Lightning's own deprecation chatter and its tips."""
    warnings.filterwarnings("ignore", message=".*No positive samples in targets.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _not_a_tip not in logger.filters:
        logger.addFilter(_not_a_tip)


def set_up_app() -> None:
    """Everything a Hydra entry point sets before composing its config."""
    quiet_known_noise()
    register_resolvers()
