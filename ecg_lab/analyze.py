"""Analyses of the ingested waveform data: ``python -m ecg_lab.analyze COMMAND [overrides]``.

- ``rpeaks``: where R-peaks fall in the windows: a histogram of their positions (``rpeak_histogram.csv``)
  and the median R-peak index within each temporal bin (``rpeak_bin_medians.csv``), plotted in
  ``rpeaks.png``; ``rpeak_summary.json`` has the totals.
- ``waveforms``: real (cleaned) versus analytic ECGs of a few records, ``real_vs_analytic.png``.

Both read the data config (``data=ptbxl`` etc.) through the same cache as training.
"""

from __future__ import annotations

if __name__ == "__main__":  # before torch loads (console scripts go through ecg_lab.app.launch)
    from ecg_lab.app.environment import prefer_short_omp_spin

    prefer_short_omp_spin()

import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ecg_lab.app.checks import check_overrides  # noqa: E402
from ecg_lab.app.config import CONFIG_DIR  # noqa: E402
from ecg_lab.app.environment import apply_threads, one_line_user_errors, set_up_app  # noqa: E402
from ecg_lab.app.outputs import RunOutputs  # noqa: E402
from ecg_lab.app.task import task_wrapper  # noqa: E402
from ecg_lab.data.splits import SPLITS  # noqa: E402
from ecg_lab.errors import ConfigError  # noqa: E402
from ecg_lab.generation.analysis import COMMANDS, analyze_rpeaks, analyze_waveforms  # noqa: E402
from ecg_lab.generation.datamodule import WaveformDataModule  # noqa: E402

log = logging.getLogger(__name__)


@task_wrapper
def analyze(cfg: DictConfig, outputs: RunOutputs) -> dict[str, Any]:
    """Run ``cfg.command`` on the configured data; writes into the run folder."""
    check_overrides(cfg)
    if cfg.command not in COMMANDS:
        raise ConfigError(f"unknown command {cfg.command!r}; use one of {COMMANDS}")
    apply_threads(cfg.get("threads"))
    dm = hydra.utils.instantiate(cfg.data)
    if not isinstance(dm, WaveformDataModule):
        raise ConfigError(
            f"python -m ecg_lab.analyze needs a waveform data config (data=synthetic_normal, ptbxl, "
            f"physionet2017_normal or normal_ecg), got {type(dm).__name__}"
        )
    unknown = sorted(set(cfg.splits) - set(SPLITS))
    if unknown:
        raise ConfigError(f"splits: unknown {unknown}; use some of {list(SPLITS)}")
    dm.prepare_data()
    dm.setup()
    result = (analyze_rpeaks if cfg.command == "rpeaks" else analyze_waveforms)(cfg, dm, outputs.dir)
    log.info("%s: %s; written to %s", cfg.command, result, outputs.dir)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
@one_line_user_errors
def _hydra_main(cfg: DictConfig) -> None:
    analyze(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    """``COMMAND [overrides]``: the command becomes the ``command=`` override."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        sys.exit(f"usage: python -m ecg_lab.analyze {{{'|'.join(COMMANDS)}}} [data=...] [overrides]")
    sys.argv = [sys.argv[0], *args[1:], f"command={args[0]}"]
    set_up_app()
    _hydra_main()


if __name__ == "__main__":
    main()
