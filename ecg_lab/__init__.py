"""ecg_lab: Hydra-configured PyTorch Lightning experiments for single-lead ECG deep learning."""

import os

# OpenMP threads that spin while waiting slow CPU training ~10x as soon as another process
# competes for the cores (measured on 2 cores: 55 vs 468 windows/s); waiting passively costs
# nothing measurable when the machine is idle. Must be set before torch loads; yours wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
