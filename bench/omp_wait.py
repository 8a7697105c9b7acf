"""How OpenMP's waiting policy affects CPU training, alone and with a second job on the same cores.

Runs a few training steps of the cnn_lstm network on random windows (batch 64) in subprocesses
under each setting, first one job alone, then two jobs at once (a parallel sweep on 2 cores),
and prints windows/s. Each job imports torch before ecg_lab, so "nothing set" is really unset.

    .venv/bin/python bench/omp_wait.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

SETTINGS = {
    "nothing set (libgomp's default)": {},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000 (ecg_lab's)": {"GOMP_SPINCOUNT": "10000"},
}

JOB = """
import time, torch
from ecg_lab.models.crnn import CRNN
torch.manual_seed(0); torch.set_num_threads({threads})
net = CRNN(); opt = torch.optim.Adam(net.parameters(), 1e-4)
x = torch.randn(64, 1, 1500); y = torch.randint(0, 4, (64,))
def step():
    loss = torch.nn.functional.cross_entropy(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3): step()
t = time.perf_counter()
for _ in range({steps}): step()
print(64 * {steps} / (time.perf_counter() - t))
"""


def run_jobs(env_extra: dict[str, str], n_jobs: int, steps: int, threads: int) -> list[float]:
    """Start ``n_jobs`` identical jobs at once; their windows/s."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | env_extra
    code = JOB.format(steps=steps, threads=threads)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(n_jobs)
    ]
    return [float(p.communicate()[0].strip()) for p in procs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    print(f"{'setting':<34} {'1 job alone':>12} {'2 jobs at once (each)':>24}")
    for name, env_extra in SETTINGS.items():
        alone = run_jobs(env_extra, 1, args.steps, args.threads)[0]
        pair = run_jobs(env_extra, 2, args.steps, args.threads)
        print(f"{name:<34} {alone:>12.0f} {' + '.join(f'{v:.0f}' for v in pair):>24}   windows/s")


if __name__ == "__main__":
    main()
