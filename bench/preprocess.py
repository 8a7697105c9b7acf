"""Benchmark: ecg_lab's data preparation vs a plain NumPy/SciPy loop doing the same work.

Measured side by side in one run, on the same records, after an untimed warm-up read of every
file (so all timed passes see a warm OS page cache):

1. plain loop: read REFERENCE.csv, ``scipy.io.loadmat(...)["val"] / 1000``, ``sosfiltfilt`` with a
   4th-order Butterworth band-pass 0.5-40 Hz at 300 Hz, per-record z-score, 1500-sample windows at
   stride 750 (counted);
2. ecg_lab cold: ``prepare_records`` into a fresh, empty cache folder (reading, header and signal
   checks, preprocessing, cache write);
3. plain loop again (the plain figure is the faster of its two runs; the mean is printed too);
4. ecg_lab warm: what a second run does before training, on the same cache folder:
   ``ECGWindowDataModule(root, cache_dir).prepare_data()`` (``prepare_records`` from the cache) and
   ``.setup()`` (record split and window index of all three splits).

The content hash of the record files (:func:`ecg_lab.data.cache.files_digest`, part of the cache
key, so part of both ecg_lab passes) is also timed on its own, so its cost is visible.

Both sides must agree on the number of records and windows and, on a few records, on the
preprocessed samples (``np.allclose(atol=1e-4)``); a mismatch stops the script with exit status 2.

Targets: cold <= 1.5 x plain (the faster plain run); warm <= 2 s.

Run from the repository root::

    .venv/bin/python bench/preprocess.py                 # all 7,248 records
    .venv/bin/python bench/preprocess.py --limit 300     # quick check: first 300 records
    .venv/bin/python bench/preprocess.py --json bench-preprocess.json

``--root`` defaults to ``$ECG_LAB_DATA/physionet2017``, else ``../shared/data/physionet2017``
relative to the repository root. ``--limit N`` runs on the first N rows of REFERENCE.csv (through a
temporary folder of links, so the library reads exactly those records).
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.io
from common import base_parser, check_base_args, write_result  # bench/ is on sys.path when run as a script
from scipy.signal import butter, sosfiltfilt

from ecg_lab.data.cache import files_digest
from ecg_lab.data.physionet2017 import iter_reference, link_subset

FS, LOWCUT, HIGHCUT, ORDER, WINDOW, STRIDE = 300.0, 0.5, 40.0, 4, 1500, 750
COLD_TARGET, WARM_TARGET_S = 1.5, 2.0
N_CHECK = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    check_base_args(p, args)
    return args


def bench_root(root: Path, limit: int | None, tmp: Path) -> tuple[Path, Path, list[tuple[str, str]]]:
    """The folder both sides read (``root`` or links to its first ``limit`` records), its records and rows."""
    view = link_subset(root, tmp / "records", limit)
    record_dir, rows = iter_reference(view)
    return view, record_dir, rows


def warm_page_cache(record_dir: Path, rows: list[tuple[str, str]]) -> None:
    """Read every file once, untimed."""
    (record_dir / "REFERENCE.csv").read_bytes()
    for record_id, _ in rows:
        for ext in (".mat", ".hea"):
            (record_dir / f"{record_id}{ext}").read_bytes()


def plain_loop(record_dir: Path, keep: set[str]) -> tuple[float, int, int, dict[str, np.ndarray]]:
    """The same work in plain NumPy/SciPy; returns seconds, records, windows and the kept signals."""
    t0 = time.perf_counter()
    with (record_dir / "REFERENCE.csv").open(newline="") as f:
        rows = [(r[0], r[1]) for r in csv.reader(f) if r]
    sos = butter(ORDER, [LOWCUT, HIGHCUT], btype="bandpass", fs=FS, output="sos")
    n_windows, kept = 0, {}
    for record_id, _label in rows:
        x = scipy.io.loadmat(record_dir / f"{record_id}.mat")["val"].ravel() / 1000.0
        y = sosfiltfilt(sos, x)
        y = (y - y.mean()) / y.std()
        if y.size >= WINDOW:
            n_windows += np.lib.stride_tricks.sliding_window_view(y, WINDOW)[::STRIDE].shape[0]
        if record_id in keep:
            kept[record_id] = y
    return time.perf_counter() - t0, len(rows), n_windows, kept


def time_content_hash(record_dir: Path, rows: list[tuple[str, str]]) -> float:
    """Seconds the cache key's content hash of the record files takes (page cache warm)."""
    paths = [record_dir / f"{record_id}{ext}" for record_id, _ in rows for ext in (".mat", ".hea")]
    t0 = time.perf_counter()
    files_digest(paths)
    return time.perf_counter() - t0


def fail(msg: str) -> None:
    print(f"MISMATCH: {msg}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from ecg_lab.classification.datamodule import ECGWindowDataModule
    from ecg_lab.classification.prepared import prepare_records
    from ecg_lab.edge.preprocess import Preprocessing

    logging.getLogger("ecg_lab").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    prep = Preprocessing(
        lowcut=LOWCUT, highcut=HIGHCUT, order=ORDER, zscore=True, window=WINDOW, stride=STRIDE
    )

    with tempfile.TemporaryDirectory(prefix="ecg_lab_bench_") as tmp_name:
        tmp = Path(tmp_name)
        root, record_dir, rows = bench_root(args.root, args.limit, tmp)
        ids = [r for r, _ in rows]
        keep = {ids[i] for i in np.linspace(0, len(ids) - 1, min(N_CHECK, len(ids))).astype(int)}
        print(
            f"records from {record_dir} ({len(rows)} records), threads={args.threads}; "
            "warming the page cache ...",
            flush=True,
        )
        warm_page_cache(record_dir, rows)

        cache = tmp / "cache"
        plain_1, n_rec_plain, n_win_plain, kept = plain_loop(record_dir, keep)

        t0 = time.perf_counter()
        cold_prepared = prepare_records(root, prep, cache, FS)
        cold_s = time.perf_counter() - t0
        del cold_prepared

        plain_2, _, _, _ = plain_loop(record_dir, set())

        t0 = time.perf_counter()
        dm = ECGWindowDataModule(root=root, preprocess=prep, fs=FS, cache_dir=cache)
        dm.prepare_data()
        warm_prepare_s = time.perf_counter() - t0
        dm.setup()
        warm_s = time.perf_counter() - t0
        prepared = dm.prepared
        assert prepared is not None
        n_win_lib = sum(len(ds) for ds in dm.datasets.values())
        if prepared.cache_path is None:
            fail("the warm pass did not read from the cache")

        # -- the two sides agree -----------------------------------------------------------------
        if len(prepared) != n_rec_plain:
            fail(f"records: ecg_lab {len(prepared)} vs plain {n_rec_plain}")
        if n_win_lib != n_win_plain:
            fail(f"windows: ecg_lab {n_win_lib} vs plain {n_win_plain}")
        index = {str(r): i for i, r in enumerate(prepared.ids)}
        for record_id, y in sorted(kept.items()):
            got = np.asarray(prepared.signal(index[record_id]))
            if got.shape != y.shape or not np.allclose(got, y, atol=1e-4):
                diff = float(np.max(np.abs(got - y))) if got.shape == y.shape else float("nan")
                fail(
                    f"record {record_id}: samples differ "
                    f"(shape {got.shape} vs {y.shape}, max |diff| {diff:.2e})"
                )
        del prepared, dm
        hash_s = time_content_hash(record_dir, rows)

    plain_best, plain_mean = min(plain_1, plain_2), statistics.mean([plain_1, plain_2])
    cold_ratio, cold_ratio_mean = cold_s / plain_best, cold_s / plain_mean
    cold_ok, warm_ok = cold_ratio <= COLD_TARGET, warm_s <= WARM_TARGET_S

    print(
        f"\nrecords {n_rec_plain}, windows {n_win_plain} "
        f"(both sides agree; {len(kept)} records' samples match)"
    )
    rows_out = [
        ("plain NumPy/SciPy loop, run 1", plain_1, ""),
        ("plain NumPy/SciPy loop, run 2", plain_2, ""),
        ("plain: faster / mean", plain_best, f"mean {plain_mean:.2f} s"),
        (
            "ecg_lab cold (read+check+prep+cache)",
            cold_s,
            f"{cold_ratio:.2f}x plain ({cold_ratio_mean:.2f}x mean)",
        ),
        (
            "ecg_lab warm (cache + window index)",
            warm_s,
            f"prepare {warm_prepare_s:.3f} s + setup {warm_s - warm_prepare_s:.3f} s",
        ),
        (
            "  of which: content hash of the files",
            hash_s,
            f"{hash_s / cold_s:.0%} of cold, {hash_s / warm_s:.0%} of warm",
        ),
    ]
    w = max(len(r[0]) for r in rows_out)
    print(f"{'step':<{w}}  {'seconds':>8}  {'records/s':>9}  note")
    for name, sec, note in rows_out:
        print(f"{name:<{w}}  {sec:>8.3f}  {n_rec_plain / sec:>9.0f}  {note}")
    verdict = {True: "PASS", False: "FAIL"}
    print(f"\n{'cold / plain':<{w}}  {cold_ratio:>8.2f}  target <= {COLD_TARGET:.2f}x   {verdict[cold_ok]}")
    print(f"{'warm seconds':<{w}}  {warm_s:>8.3f}  target <= {WARM_TARGET_S:.2f} s  {verdict[warm_ok]}")

    write_result(
        args,
        "preprocess",
        {
            "records": n_rec_plain,
            "windows": n_win_plain,
            "plain_s": [plain_1, plain_2],
            "plain_best_s": plain_best,
            "plain_mean_s": plain_mean,
            "cold_s": cold_s,
            "warm_s": warm_s,
            "warm_prepare_s": warm_prepare_s,
            "content_hash_s": hash_s,
            "cold_over_plain": cold_ratio,
            "cold_over_plain_mean": cold_ratio_mean,
            "targets": {"cold_over_plain_max": COLD_TARGET, "warm_s_max": WARM_TARGET_S},
            "pass": {"cold": cold_ok, "warm": warm_ok},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
