"""ecg_lab: Hydra-configured PyTorch Lightning experiments for single-lead ECG deep learning."""

import os

# libgomp's threads spin ~300k times before sleeping; when another job shares the cores they
# burn each other's time and CPU training crawls. A short spin keeps full speed on an idle
# machine and degrades gracefully when shared (bench/omp_wait.py measures both). Must be set
# before torch loads; your own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
