"""What DDP ranks share at the end of an evaluation: every rank's rows once, and epoch means over every
window. The val/test samplers do not pad (:mod:`ecg_lab.data.loaders`), so ranks may hold different
numbers of windows; both helpers stay exact when they do."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors


def world_size() -> int:
    """The number of DDP ranks (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's ``rows`` concatenated in rank order, on every rank; ``rows`` itself outside DDP.

    Pads, gathers and trims (torchmetrics' ``gather_all_tensors``), where Lightning's ``all_gather`` needs
    equal shapes on every rank.
    """
    if world_size() < 2:
        return rows
    return torch.cat(gather_all_tensors(rows))


class WindowMean(Metric):
    """The mean over windows of per-batch means, each batch weighted by its window count; synced as float
    sums (torchmetrics' ``MeanMetric`` drops its weights when told to keep NaN; this keeps both)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("windows", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, n: int) -> None:
        """Add a batch of ``n`` windows whose mean is ``value``."""
        self.total += value.detach().to(self.total.dtype) * n
        self.windows += n

    def compute(self) -> torch.Tensor:
        return self.total / self.windows


class EpochMeans(nn.Module):
    """Epoch means over windows of per-batch values (``val/loss``, ...), one :class:`WindowMean` per key.

    Lightning's own ``sync_dist`` mean averages its integer window count over the ranks and rounds it
    down, which is wrong whenever ranks hold different numbers of windows.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__()
        self.means = nn.ModuleDict({key: WindowMean() for key in keys})

    def log(
        self,
        module: pl.LightningModule,
        stage: str,
        values: Mapping[str, torch.Tensor],
        n: int,
        prog_bar: Collection[str] = (),
    ) -> None:
        """Add one batch of ``n`` windows and log each mean as ``<stage>/<key>`` at the epoch's end."""
        for key, mean in self.means.items():
            mean.update(values[key].detach(), n)
            module.log(f"{stage}/{key}", mean, on_step=False, on_epoch=True, prog_bar=key in prog_bar)
