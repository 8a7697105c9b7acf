"""Aggregate finished runs into a results table: ``python -m ecg_lab.report DIR [DIR ...]``.

Writes ``results_table.csv``, ``results_table.md``, ``results_f1.png`` and ``validation_curves.png``
(:mod:`ecg_lab.sweeps.results` says how runs are grouped and aggregated).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ecg_lab.app.environment import apply_threads
from ecg_lab.errors import ConfigError
from ecg_lab.sweeps.results import COMPLETED, IGNORED_KEYS, find_runs, write_report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: find runs under DIRs, write the report, print the markdown table."""
    p = argparse.ArgumentParser(prog="python -m ecg_lab.report", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="folders searched for run folders")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the first DIR)")
    p.add_argument(
        "--metric-key",
        action="append",
        default=[],
        help="extra test_metrics.json key to aggregate (repeatable), e.g. loss or specificity_A",
    )
    p.add_argument(
        "--metrics",
        default="",
        help="comma-separated test_metrics.json keys shown instead of the default columns, "
        "e.g. official_f1,F1_N,F1_A,F1_O,f1 (the ablation table)",
    )
    p.add_argument(
        "--ci",
        action="store_true",
        help="show each metric's 95%% bootstrap interval (the mean of its runs' bounds) as [lo, hi]",
    )
    p.add_argument("--sort", default="f1", help="metric to sort rows by, descending, or 'configuration'")
    p.add_argument("--curve", default="val/f1", help="metrics_history.csv column for the curves plot")
    p.add_argument(
        "--ignore", action="append", default=[], help="further override key (glob) left out of grouping"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (like threads=N in the other apps)")
    args = p.parse_args(argv)
    try:
        apply_threads(args.threads)
    except ConfigError as err:
        p.error(str(err))
    runs = find_runs(args.dirs, (*IGNORED_KEYS, *args.ignore))
    only = [k.strip() for k in args.metrics.split(",") if k.strip()]
    paths = write_report(
        runs, args.out or args.dirs[0], args.metric_key, args.sort, args.curve, only, args.ci
    )
    print(paths["markdown"].read_text())
    n_done = sum(r.status == COMPLETED for r in runs)
    print(f"{len(runs)} run folders ({n_done} completed); wrote:")
    for p_ in paths.values():
        print(f"  {p_}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
