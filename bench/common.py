"""What the benchmark scripts share: where the data is and the common command-line options."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_root() -> Path:
    """``$ECG_LAB_DATA/physionet2017``, else the shared copy beside the repository."""
    env = os.environ.get("ECG_LAB_DATA")
    return Path(env) / "physionet2017" if env else REPO.parent / "shared" / "data" / "physionet2017"


def base_parser(description: str) -> argparse.ArgumentParser:
    """``--root``, ``--limit``, ``--threads`` and ``--json``, shared by every benchmark."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--root",
        type=Path,
        default=default_root(),
        help="PhysioNet 2017 folder (REFERENCE.csv in it or in its training2017/); default: %(default)s",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N records (quick checks)")
    p.add_argument("--threads", type=int, default=2, help="torch/BLAS threads (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p


def check_base_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Errors for a missing data folder or non-positive counts."""
    if not args.root.is_dir():
        p.error(f"data folder not found: {args.root} (give --root or set ECG_LAB_DATA)")
    for name in ("limit", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name} must be positive")


def write_result(args: argparse.Namespace, benchmark: str, figures: dict) -> None:
    """With ``--json PATH``: the run's settings and figures as JSON."""
    if args.json is None:
        return
    result = {
        "benchmark": benchmark,
        "root": str(args.root),
        "limit": args.limit,
        "threads": args.threads,
        **figures,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"figures written to {args.json}")
