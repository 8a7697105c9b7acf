"""The accelerator check: one batch's loss gradients on the training device against the CPU in float64.

The source project's LSTMs learned nothing on Apple's MPS backend (F1 0.14 against 0.756 on CUDA):
its gradients were wrong and nothing said so. Here the same weights and the same batch go through the
model twice, in float32 on the device and in float64 on the CPU, with dropout off and in training mode
(cuDNN's RNN backward needs it; BatchNorm then normalises by the batch, the same on both), and each
parameter's gradient is compared: relative L2 norm of the difference, ``|g_dev - g_ref| / |g_ref|``.
A parameter whose reference gradient is below ``NORM_FLOOR`` of the whole gradient's norm is measured
against that floor instead, so float32 rounding in a (near) zero gradient raises no alarm. TF32 is off
during the check unless asked for: it is a precision trade, not a wrong gradient.

Used by ``python -m ecg_lab.check_backend`` and by the training callback
:class:`ecg_lab.callbacks.backend_check.BackendCheck`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import hydra
import pytorch_lightning as pl
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from omegaconf import DictConfig
from torch import nn

from ecg_lab.errors import ConfigError, UserError

#: reference gradients smaller than this share of the whole gradient's L2 norm are measured against it
NORM_FLOOR = 1e-3
REFERENCE = torch.device("cpu")


class GradientMismatchError(UserError, RuntimeError):
    """The accelerator's gradients differ from the CPU float64 reference beyond the tolerance."""


class DifferentiableTask(Protocol):
    """A LightningModule that computes one batch's loss deterministically (no sampling)."""

    def batch_loss(self, batch: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class GradientComparison:
    """Each parameter's relative gradient difference on ``device`` against the CPU in float64."""

    device: str
    tolerance: float
    relative: dict[str, float]
    loss_device: float
    loss_reference: float
    tolerance_key: str = "backend_check.tolerance"

    @property
    def worst(self) -> tuple[str, float]:
        """The parameter with the largest relative difference, and that difference."""
        return max(self.relative.items(), key=lambda item: item[1])

    @property
    def ok(self) -> bool:
        """Whether every parameter's gradient is within the tolerance."""
        return self.worst[1] <= self.tolerance

    def line(self) -> str:
        """One line: passed with the largest difference, or failed naming the parameter and what to do."""
        name, value = self.worst
        if self.ok:
            return (
                f"backend check passed on {self.device}: largest relative gradient difference from the CPU "
                f"in float64 {value:.2e} ({name}), within {self.tolerance_key}={self.tolerance:g}"
            )
        return (
            f"backend check failed on {self.device}: the gradient of {name} differs from the CPU float64 "
            f"reference by {value:.2e} (relative L2) > {self.tolerance_key}={self.tolerance:g} (loss "
            f"{self.loss_device:.6g} vs {self.loss_reference:.6g}); do not train on this device with this "
            f"PyTorch: use trainer=cpu or another accelerator, or update PyTorch"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``backend_check.json``."""
        name, value = self.worst
        return {**asdict(self), "ok": self.ok, "worst_parameter": name, "worst_relative": value}


@contextlib.contextmanager
def strict_float32(enabled: bool = True) -> Iterator[None]:
    """Inside, float32 on CUDA is float32: TF32 off for cuDNN (convolutions, RNNs) and matmuls."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if enabled:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def deterministic_copy(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` on ``device`` in ``dtype``, in training mode with every dropout at 0."""
    twin = copy.deepcopy(model).to(device=device, dtype=dtype)
    twin.train()
    for module in twin.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        elif isinstance(module, nn.RNNBase):
            module.dropout = 0.0
    return twin


def batch_on(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``batch`` with every tensor on ``device`` and every floating-point tensor in ``dtype``."""

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)

    return apply_to_collection(batch, torch.Tensor, move)


def loss_and_gradients(model: nn.Module, batch: Any) -> tuple[float, dict[str, torch.Tensor]]:
    """The batch's loss and each parameter's gradient (on the CPU in float64)."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = model.batch_loss(batch)  # type: ignore[operator]
        loss.backward()
    grads = {
        name: p.grad.detach().to(REFERENCE, torch.float64)
        for name, p in model.named_parameters()
        if p.grad is not None
    }
    return float(loss.detach().cpu()), grads


def relative_differences(
    device: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Per parameter, ``|device - reference| / max(|reference|, NORM_FLOOR · |all of reference|)``; a
    gradient one side lacks counts as zeros, a non-finite difference as infinite."""
    total = math.sqrt(sum(float(g.square().sum()) for g in reference.values()))
    floor = max(NORM_FLOOR * total, torch.finfo(torch.float64).tiny)
    out = {}
    for name in sorted(reference.keys() | device.keys()):
        ref, dev = reference.get(name), device.get(name)
        ref = torch.zeros_like(dev) if ref is None else ref
        dev = torch.zeros_like(ref) if dev is None else dev
        value = float((dev - ref).norm()) / max(float(ref.norm()), floor)
        out[name] = value if math.isfinite(value) else math.inf
    return out


def compare_gradients(
    model: nn.Module,
    batch: Any,
    device: torch.device | str,
    tolerance: float = 1e-3,
    tf32: bool = False,
    tolerance_key: str = "backend_check.tolerance",
) -> GradientComparison:
    """Compare ``model``'s gradients on ``batch`` in float32 on ``device`` with the CPU in float64 (the
    model itself is left as it was: both passes run on copies)."""
    device = torch.device(device)
    ref_loss, ref_grads = loss_and_gradients(
        deterministic_copy(model, REFERENCE, torch.float64), batch_on(batch, REFERENCE, torch.float64)
    )
    with strict_float32(not tf32):
        dev_loss, dev_grads = loss_and_gradients(
            deterministic_copy(model, device, torch.float32), batch_on(batch, device, torch.float32)
        )
    if not ref_grads:
        raise ValueError("the model's loss reaches no parameter; there is no gradient to check")
    return GradientComparison(
        device=str(device),
        tolerance=float(tolerance),
        relative=relative_differences(dev_grads, ref_grads),
        loss_device=dev_loss,
        loss_reference=ref_loss,
        tolerance_key=tolerance_key,
    )


def training_device(trainer_cfg: DictConfig) -> torch.device:
    """The device ``trainer_cfg`` trains on (rank 0's), resolved by Lightning itself (``auto``, ``gpu``)."""
    try:
        trainer: pl.Trainer = hydra.utils.instantiate(
            trainer_cfg, logger=False, callbacks=[], enable_progress_bar=False, enable_model_summary=False
        )
    except Exception as err:  # Lightning's own error (under Hydra's) says what is available
        reason = " ".join(str(err.__cause__ or err).split())
        raise ConfigError(
            f"trainer.accelerator={trainer_cfg.get('accelerator')} cannot run here: {reason} Run the check "
            "on the machine that trains, or choose an available accelerator."
        ) from err
    return trainer.strategy.root_device


def first_batch(datamodule: pl.LightningDataModule) -> Any:
    """The first training batch (the data prepared and split as for training)."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))
