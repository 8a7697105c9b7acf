"""Benchmark: the training step time of cnn_lstm on 5-s windows at 300 Hz vs a lower rate (150 Hz).

Both sides in one run, on real windows:

* data: the first ``--limit`` records, preprocessed by ``Preprocessing`` as training does (band-pass
  at 300 Hz, then, for the lower rate, ``resample_to``), into a temporary cache; the first 64 windows
  (5 s: 1500 samples at 300 Hz, 750 at 150 Hz) make the batch each side trains on;
* model: ``ECGClassifier(CRNN)`` with the settings of ``conf/model/cnn_lstm.yaml`` (as in
  ``train_throughput.py``), rebuilt from the same seed before every run;
* step: ``zero_grad``, forward, weighted CE, ``backward``, Adam ``step`` (batch 64), on
  ``--threads`` threads (default 1).

Runs alternate (300 Hz, lower rate, ... ``--repeats`` pairs), each timing ``--steps`` steps after
``--warmup``; the median ms/step of each side and their ratio are printed.

Run from the repository root::

    .venv/bin/python bench/sampling_rate.py                 # 30 steps after 5 warm-up, 3 pairs
    .venv/bin/python bench/sampling_rate.py --rate 100 --json bench-rate.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import base_parser, check_base_args, write_result  # bench/ is on sys.path as a script
from train_throughput import BATCH_SIZE, build_module

from ecg_lab.data.physionet2017 import CLASSES, link_subset

FS = 300.0
SECONDS = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__.split("\n\n")[0])
    p.set_defaults(threads=1, limit=100)
    p.add_argument("--rate", type=float, default=150.0, help="the lower rate in Hz (default: %(default)s)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs, alternated (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="model initialisation (default: %(default)s)")
    args = p.parse_args(argv)
    check_base_args(p, args)
    for name in ("steps", "repeats", "rate"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def batch(root: Path, cache: Path, rate: float) -> tuple[Any, Any]:
    """The first ``BATCH_SIZE`` 5-s windows at ``rate`` (float32 ``(B, 1, W)``) and their labels."""
    import numpy as np
    import torch

    from ecg_lab.classification.prepared import prepare_records
    from ecg_lab.edge.preprocess import Preprocessing

    window = round(SECONDS * rate)
    prep = Preprocessing(window=window, stride=window // 2, resample_to=None if rate == FS else rate)
    prepared = prepare_records(root, prep, cache, FS)
    xs, ys = [], []
    for i in range(len(prepared)):
        windows = prep.windows(np.asarray(prepared.signal(i)))
        xs.append(windows)
        ys += [int(prepared.labels[i])] * len(windows)
        if len(ys) >= BATCH_SIZE:
            break
    if len(ys) < BATCH_SIZE:
        raise SystemExit(f"--limit {len(prepared)} records hold fewer than {BATCH_SIZE} windows; raise it")
    x = torch.from_numpy(np.concatenate(xs)[:BATCH_SIZE]).unsqueeze(1)
    return x, torch.tensor(ys[:BATCH_SIZE])


def step_seconds(seed: int, x: Any, y: Any, warmup: int, steps: int) -> float:
    """Seconds per training step of a fresh cnn_lstm on the batch ``(x, y)``."""
    import torch

    module = build_module(seed, CLASSES, torch.ones(len(CLASSES)))
    module.train()
    optimizer = module.optimizer_factory(params=module.parameters())
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        optimizer.zero_grad()
        module.loss(module.net(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    rates = (FS, args.rate)
    with tempfile.TemporaryDirectory(prefix="ecg_lab_bench_") as tmp_name:
        tmp = Path(tmp_name)
        root = link_subset(args.root, tmp / "records", args.limit)
        print(f"data {root} ({args.limit} records), threads={args.threads}; preparing ...", flush=True)
        batches = {rate: batch(root, tmp / "cache", rate) for rate in rates}
    print(
        f"batch {BATCH_SIZE}, windows of {SECONDS:g} s; {args.repeats} x ({FS:g} Hz, {args.rate:g} Hz), "
        f"{args.steps} timed steps after {args.warmup} warm-up",
        flush=True,
    )
    runs: dict[float, list[float]] = {rate: [] for rate in rates}
    for rep in range(args.repeats):
        for rate in rates:
            ms = 1000 * step_seconds(args.seed, *batches[rate], args.warmup, args.steps)
            runs[rate].append(ms)
            print(f"  {rate:g} Hz #{rep + 1}: {ms:8.1f} ms/step", flush=True)

    med = {rate: statistics.median(runs[rate]) for rate in rates}
    print(f"\n{'rate':>8} {'window':>7} {'ms/step':>8} {'windows/s':>10}")
    for rate in rates:
        window = batches[rate][0].shape[-1]
        print(f"{rate:>6g}Hz {window:>7} {med[rate]:>8.1f} {1000 * BATCH_SIZE / med[rate]:>10.1f}")
    ratio = med[args.rate] / med[FS]
    print(f"\n{args.rate:g} Hz / {FS:g} Hz step time = {ratio:.3f} (speed-up {1 / ratio:.2f}x)")
    write_result(
        args,
        "sampling_rate",
        {
            "batch_size": BATCH_SIZE,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "ms_per_step": {f"{rate:g}": runs[rate] for rate in rates},
            "median_ms_per_step": {f"{rate:g}": med[rate] for rate in rates},
            "ratio": ratio,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
