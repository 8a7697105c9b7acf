"""The training shuffle: an order that is a function of the run's seed and the epoch alone, so a run
resumed from a checkpoint sees the same batches as one that never stopped."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """A random permutation of ``range(n)`` drawn from ``(seed, epoch)``; Lightning calls
    :meth:`set_epoch` before each training epoch. Unlike ``shuffle=True`` it draws nothing from torch's
    global generator, whose state therefore depends only on the training steps (dropout)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        return iter(torch.randperm(self.n, generator=generator).tolist())
