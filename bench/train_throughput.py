"""Benchmark: training throughput (windows/s) of the Lightning loop vs a minimal plain-PyTorch loop.

Both sides train the same model on the same data in one run:

* model: ``ECGClassifier`` around ``CRNN`` with the settings of ``conf/model/cnn_lstm.yaml`` (net and
  Adam optimizer read from that file), ``WeightedCrossEntropy`` with the training windows'
  inverse-frequency class weights; rebuilt from the same seed before every run;
* data: the one train ``DataLoader`` of one ``ECGWindowDataModule`` (stratified split, batch 64,
  ``num_workers=0``), reshuffled from the same seed before every run;
* Lightning: ``pl.Trainer(accelerator="cpu", devices=1, max_steps=warmup+steps, limit_val_batches=0,
  gradient_clip_val=1.0, logger/checkpointing/progress bar/model summary off)``; a callback times
  from the start of train batch ``warmup`` to the end of the last one;
* plain: ``for x, y, _ in loader``: ``zero_grad``, forward, weighted CE, ``backward``,
  ``clip_grad_norm_(1.0)``, ``step``, and the same torchmetrics train metrics the LightningModule
  updates (weighted F1 + accuracy, computed and reset at each epoch end), timed over the same steps.

Runs alternate (plain, lightning, plain, lightning, ... ``--repeats`` pairs); the median windows/s
of each side is compared. Target: lightning / plain >= 0.95.

Run from the repository root::

    .venv/bin/python bench/train_throughput.py                           # 200 steps after 10 warm-up
    .venv/bin/python bench/train_throughput.py --limit 300 --steps 30    # quick check
    .venv/bin/python bench/train_throughput.py --json bench-train.json

``--root`` defaults to ``$ECG_LAB_DATA/physionet2017``, else ``../shared/data/physionet2017``
relative to the repository root. The preprocessed records come from ``--cache-dir`` (default: the
project's cache, ``$ECG_LAB_CACHE`` or ``.cache/ecg_lab``; with ``--limit``, a temporary folder).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from common import (  # bench/ is on sys.path when run as a script
    REPO,
    base_parser,
    check_base_args,
    write_result,
)

from ecg_lab.data.physionet2017 import link_subset

TARGET = 0.95
BATCH_SIZE = 64
CLIP = 1.0


def default_cache() -> Path:
    return Path(os.environ.get("ECG_LAB_CACHE") or REPO / ".cache" / "ecg_lab")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--steps", type=int, default=200, help="timed training steps per run (default: %(default)s)"
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them (default: %(default)s)")
    p.add_argument(
        "--repeats", type=int, default=2, help="plain/lightning pairs, alternated (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=42, help="seed for model init and shuffling (default: %(default)s)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"preprocessed-record cache (default: {default_cache()}; with --limit a temporary one)",
    )
    args = p.parse_args(argv)
    check_base_args(p, args)
    for name in ("steps", "repeats"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name} must be positive")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def build_module(seed: int, classes: tuple[str, ...], class_weights: Any) -> Any:
    """A fresh ``ECGClassifier(CRNN)`` with the cnn_lstm settings, initialised from ``seed``."""
    import pytorch_lightning as pl
    import torch
    from omegaconf import OmegaConf

    from ecg_lab.classification.loss import WeightedCrossEntropy
    from ecg_lab.classification.module import ECGClassifier
    from ecg_lab.models.crnn import CRNN

    cfg = OmegaConf.load(REPO / "conf" / "model" / "cnn_lstm.yaml")
    net_kw = OmegaConf.to_container(cfg.net, resolve=False)
    opt_kw = OmegaConf.to_container(cfg.optimizer, resolve=False)
    assert isinstance(net_kw, dict) and isinstance(opt_kw, dict)
    net_kw.pop("_target_")
    net_kw["num_classes"] = len(classes)
    assert opt_kw.pop("_target_") == "torch.optim.Adam"
    opt_kw.pop("_partial_", None)
    pl.seed_everything(seed, verbose=False)
    loss = WeightedCrossEntropy("inverse_frequency", len(classes))
    loss.set_class_weights(class_weights)
    return ECGClassifier(
        net=CRNN(**net_kw),
        optimizer=functools.partial(torch.optim.Adam, **opt_kw),
        loss=loss,
        classes=classes,
    )


def run_plain(module: Any, loader: Any, warmup: int, steps: int) -> tuple[int, int, float]:
    """Minimal loop; returns (timed steps, timed windows, seconds)."""
    import torch

    net, loss_fn, metrics = module.net, module.loss, module.train_metrics
    optimizer = module.optimizer_factory(params=module.parameters())
    module.train()
    total, step, windows, t0 = warmup + steps, 0, 0, None
    while step < total:
        for x, y, _ in loader:
            if step == warmup:
                t0 = time.perf_counter()
            optimizer.zero_grad()
            logits = net(x)
            loss = loss_fn(logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
            optimizer.step()
            metrics(logits.detach(), y)
            step += 1
            if t0 is not None:
                windows += len(y)
            if step == total:
                break
        else:  # epoch end, as Lightning's on_epoch logging does
            metrics.compute()
            metrics.reset()
    seconds = time.perf_counter() - t0 if t0 is not None else float("nan")
    metrics.compute()
    metrics.reset()
    return steps, windows, seconds


def run_lightning(
    module: Any, loader: Any, warmup: int, steps: int, root_dir: Path
) -> tuple[int, int, float]:
    """``Trainer.fit`` for warmup+steps steps; a callback times the last ``steps`` of them."""
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.t1: float | None = None
            self.steps = self.windows = 0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if self.t0 is None and trainer.global_step == warmup:
                self.t0 = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            if self.t0 is not None:
                self.t1 = time.perf_counter()
                self.steps += 1
                self.windows += len(batch[1])

    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=CLIP,
        callbacks=[timer],
        default_root_dir=root_dir,
    )
    trainer.fit(module, train_dataloaders=loader)
    if timer.t0 is None or timer.t1 is None:
        raise RuntimeError("the Lightning run ended before its timed steps")
    return timer.steps, timer.windows, timer.t1 - timer.t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from ecg_lab.classification.datamodule import ECGWindowDataModule
    from ecg_lab.edge.preprocess import Preprocessing

    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    for name in ("ecg_lab", "pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="ecg_lab_bench_") as tmp_name:
        tmp = Path(tmp_name)
        root = link_subset(args.root, tmp / "records", args.limit)
        cache = args.cache_dir or (tmp / "cache" if args.limit is not None else default_cache())
        print(f"data {root} (cache {cache}), threads={args.threads}; preparing ...", flush=True)
        dm = ECGWindowDataModule(
            root=root,
            preprocess=Preprocessing(),
            cache_dir=cache,
            batch_size=BATCH_SIZE,
            num_workers=0,
        )
        dm.prepare_data()
        dm.setup()
        classes, weights = dm.classes, dm.class_weights()
        loader = dm.train_dataloader()
        n_train = len(dm.datasets["train"])
        print(
            f"train split: {n_train} windows, {len(loader)} batches of {BATCH_SIZE}; "
            f"{args.repeats} x (plain, lightning), {args.steps} timed steps after {args.warmup} warm-up",
            flush=True,
        )

        runs: list[dict] = []
        for rep in range(args.repeats):
            for side in ("plain", "lightning"):
                module = build_module(args.seed, classes, weights)
                if side == "plain":
                    steps, windows, sec = run_plain(module, loader, args.warmup, args.steps)
                else:
                    steps, windows, sec = run_lightning(module, loader, args.warmup, args.steps, tmp)
                runs.append(
                    {
                        "side": side,
                        "repeat": rep + 1,
                        "steps": steps,
                        "windows": windows,
                        "seconds": sec,
                        "windows_per_s": windows / sec,
                    }
                )
                print(f"  {side:<9} #{rep + 1}: {windows / sec:8.1f} windows/s", flush=True)
                del module

    med = {
        s: statistics.median(r["windows_per_s"] for r in runs if r["side"] == s)
        for s in ("plain", "lightning")
    }
    ratio = med["lightning"] / med["plain"]
    ok = ratio >= TARGET

    print(f"\n{'run':<16} {'steps':>6} {'windows':>8} {'seconds':>8} {'windows/s':>10} {'ms/step':>8}")
    for r in runs:
        print(
            f"{r['side'] + ' #' + str(r['repeat']):<16} {r['steps']:>6} {r['windows']:>8} "
            f"{r['seconds']:>8.2f} {r['windows_per_s']:>10.1f} {1000 * r['seconds'] / r['steps']:>8.1f}"
        )
    for side in ("plain", "lightning"):
        print(f"{'median ' + side:<16} {'':>6} {'':>8} {'':>8} {med[side]:>10.1f}")
    print(f"\nlightning / plain = {ratio:.3f}   target >= {TARGET:.2f}   {'PASS' if ok else 'FAIL'}")

    write_result(
        args,
        "train_throughput",
        {
            "batch_size": BATCH_SIZE,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "train_windows": n_train,
            "runs": runs,
            "median_windows_per_s": med,
            "lightning_over_plain": ratio,
            "target_min": TARGET,
            "pass": ok,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
