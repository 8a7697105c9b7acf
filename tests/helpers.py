"""Writing small datasets in the PhysioNet 2017 layout, running an app in a child process, and a
callback that kills its own process, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import scipy.io
from pytorch_lightning.callbacks import Callback


def write_record(
    folder: Path, record_id: str, counts: np.ndarray, fs: int = 300, n_header: int | None = None
) -> None:
    """Write ``record_id.mat`` (MATLAB v4, ``val``) and ``record_id.hea`` like the official files."""
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / f"{record_id}.mat", {"val": counts[None, :]}, format="4")
    n = counts.size if n_header is None else n_header
    (folder / f"{record_id}.hea").write_text(
        f"{record_id} 1 {fs} {n} 11:05:25 1/05/2000 \n{record_id}.mat 16+24 1000/mV 16 0 0 0 0 ECG \n"
    )


def ecg_like(n: int, fs: int = 300, seed: int = 0) -> np.ndarray:
    """A crude ECG-like int16 trace (spikes at ~70 bpm plus noise), 1000 counts per mV."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    sig = np.exp(-(((t % 0.85) - 0.4) ** 2) / (2 * 0.01**2)) + 0.05 * rng.standard_normal(n)
    return (sig * 1000).astype(np.int16)


def write_dataset(
    folder: Path, labels: dict[str, str], n: int = 4500, fs: int = 300, reference: str | None = None
) -> Path:
    """A small dataset: one ECG-like record per ``labels`` entry, REFERENCE.csv and RECORDS."""
    for i, rid in enumerate(labels):
        write_record(folder, rid, ecg_like(n, fs, seed=i), fs)
    text = reference if reference is not None else "".join(f"{r},{lab}\n" for r, lab in labels.items())
    (folder / "REFERENCE.csv").write_text(text)
    (folder / "RECORDS").write_text("".join(f"{r}\n" for r in labels))
    return folder


class KillAt(Callback):
    """SIGKILLs its own process at a training batch: a crash mid-epoch, nothing flushed or closed."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int
    ) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


REPO = Path(__file__).resolve().parents[1]
#: variables of the test's own process a child app must not inherit (wandb settings, a DDP rank, a
#: full-traceback request)
INHERITED_NOT = ("WANDB", "RANK", "LOCAL_RANK", "HYDRA_FULL_ERROR")


def run_module(
    module: str, args: list[str], cwd: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m module *args`` in ``cwd`` with one OpenMP thread, ``HOME=cwd`` and this repository
    importable (``tests.helpers`` too); ``env`` adds variables."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_NOT)}
    environ |= {"HOME": str(cwd), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
