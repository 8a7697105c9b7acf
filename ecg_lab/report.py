"""Aggregate finished runs into a results table: ``python -m ecg_lab.report DIR [DIR ...]``.

Writes ``results_table.csv``, ``results_table.md``, ``results_f1.png``, ``validation_curves.png`` and
``report.html`` (the table, both plots and each run linked to its own ``report.html``, written for a run
that has none); :mod:`ecg_lab.sweeps.results` says how runs are grouped and aggregated.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ecg_lab.app.environment import apply_threads
from ecg_lab.errors import ConfigError
from ecg_lab.sweeps.results import COMPLETED, IGNORED_KEYS, find_runs, write_report


def log_to_wandb(project: str, paths: dict[str, Path], first_dir: Path) -> None:
    """``--wandb PROJECT``: the results table as a ``wandb.Table`` and the report's plots, in a run of
    job type ``report`` under ``<out>/wandb`` (offline unless ``WANDB_MODE=online``), in the group of the
    sweep's runs when ``first_dir`` is a sweep folder. A wandb failure is a warning."""
    import pandas as pd
    import wandb

    from ecg_lab.app.config import group_of
    from ecg_lab.callbacks.wandb_media import guarded

    out, sweep = paths["csv"].parent, first_dir.resolve()
    group = group_of(sweep) if (sweep / "multirun.yaml").is_file() else None  # Hydra's file in a sweep
    with guarded("the results table"):
        run = wandb.init(
            project=project, dir=out, mode=os.environ.get("WANDB_MODE", "offline"), job_type="report",
            group=group, name=f"report-{sweep.name}",
        )  # fmt: skip
        try:
            media = {"results_table": wandb.Table(dataframe=pd.read_csv(paths["csv"]))}
            media |= {f"figures/{p.stem}": wandb.Image(str(p)) for p in paths.values() if p.suffix == ".png"}
            run.log(media)
        finally:
            run.finish()


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
    p.add_argument(
        "--wandb",
        metavar="PROJECT",
        default=None,
        help="also log the results table (a wandb.Table) and plots to a run of PROJECT; offline unless "
        "WANDB_MODE=online (upload later with `wandb sync <out>/wandb/offline-run-*`)",
    )
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
    if args.wandb:
        log_to_wandb(args.wandb, paths, args.dirs[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
