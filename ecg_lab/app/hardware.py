"""What a run ran on, in words, for test_metrics.json and the results table."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe(accelerator: str, devices: int = 1) -> str:
    """E.g. ``"cpu: AMD EPYC, 1 thread"`` or ``"cuda: 1× NVIDIA H200"``; ``accelerator`` is the
    Trainer accelerator's class name or a plain name (``cpu``, ``cuda``, ``mps``)."""
    name = accelerator.lower().removesuffix("accelerator")
    if name == "cuda" and torch.cuda.is_available():
        return f"cuda: {devices}× {torch.cuda.get_device_name(0)}"
    if name == "mps":
        return f"mps: {devices}× {platform.machine()}"
    threads = torch.get_num_threads()
    return f"cpu: {cpu_name()}, {threads} thread{'s' if threads != 1 else ''}"
