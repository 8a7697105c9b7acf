"""On-the-fly augmentation of training batches (config group ``augment``, off by default).

:class:`BatchAugment` applies named transforms in turn to a batch of z-scored windows
``(batch, channels, samples)``, vectorised over the batch on its device. Each transform is applied to
each example with its probability ``p``, its parameters drawn per example. Every draw comes from a
generator of its own, seeded from (run seed, global step, batch index, rank, transform name), never
from torch's global generator: a run resumed from a checkpoint augments exactly as one that never
stopped, dropout draws the same numbers with augmentation on or off, and turning one transform off
leaves the others' draws as they were.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from ecg_lab.app.config import instantiate_node
from ecg_lab.errors import ConfigError

Range = tuple[float, float]


def stream_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (e.g. run seed, step, batch, rank, transform name); equal parts give
    equal seeds in every process (unlike Python's salted ``hash``)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**63


def uniform(bounds: Range, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` float32 draws, uniform in ``bounds``, on the generator's device."""
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def sample_at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``x`` ``(batch, channels, samples)`` linearly interpolated at fractional sample ``positions``
    ``(batch, samples)``, zero where a position falls outside the window."""
    last = x.shape[-1] - 1
    inside = (positions >= 0) & (positions <= last)
    clamped = positions.clamp(0, last)
    left = clamped.floor().long()
    right = (left + 1).clamp(max=last)
    weight = (clamped - left)[:, None, :]
    shape = (-1, x.shape[1], -1)
    values = (1 - weight) * x.gather(-1, left[:, None, :].expand(shape)) + weight * x.gather(
        -1, right[:, None, :].expand(shape)
    )
    return values * inside[:, None, :]


class Transform:
    """One augmentation: :meth:`apply` transforms every example of a batch with parameters drawn per
    example (in float32); calling it keeps the result, in the input's dtype, for the examples chosen with
    probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        if self.p <= 0:
            return x
        chosen = torch.rand(len(x), generator=generator, device=generator.device) < self.p
        out = self.apply(x.float(), generator, fs).to(x.dtype)
        return torch.where(chosen[:, None, None], out, x)

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        raise NotImplementedError

    def ranges(self, fs: float) -> dict[str, tuple[Range, float, float]]:
        """Each range parameter with the lowest and highest value it may take at ``fs`` Hz."""
        return {}

    def check(self, key: str, fs: float) -> None:
        """ConfigError naming ``key.<parameter>`` for a probability outside [0, 1] or a bad range."""
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"{key}.p={self.p} is not a probability; set it between 0 and 1")
        for name, ((low, high), least, most) in self.ranges(fs).items():
            if not least <= low <= high <= most:
                raise ConfigError(
                    f"{key}.{name}=[{low}, {high}] is not a range within [{least}, {most}]; give "
                    f"[low, high] with {least} <= low <= high <= {most}"
                )


def as_range(values: Sequence[float]) -> Range:
    low, high = (float(v) for v in values)
    return low, high


class AmplitudeScale(Transform):
    """Multiply the example by a factor drawn from ``scale``."""

    def __init__(self, p: float = 0.5, scale: tuple[float, float] = (0.8, 1.2)) -> None:
        super().__init__(p)
        self.scale = as_range(scale)

    def ranges(self, fs: float) -> dict[str, tuple[Range, float, float]]:
        return {"scale": (self.scale, 1e-6, math.inf)}

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        return x * uniform(self.scale, len(x), generator)[:, None, None]


class GaussianNoise(Transform):
    """Add white Gaussian noise whose standard deviation, relative to the example's, is drawn from
    ``std``."""

    def __init__(self, p: float = 0.5, std: tuple[float, float] = (0.02, 0.1)) -> None:
        super().__init__(p)
        self.std = as_range(std)

    def ranges(self, fs: float) -> dict[str, tuple[Range, float, float]]:
        return {"std": (self.std, 0.0, math.inf)}

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        sigma = uniform(self.std, len(x), generator)[:, None, None] * x.std(-1, keepdim=True)
        return x + sigma * torch.randn(x.shape, generator=generator, device=generator.device)


class BaselineWander(Transform):
    """Add a sinusoid of frequency drawn from ``freq`` (Hz), random phase, and amplitude relative to the
    example's standard deviation drawn from ``amplitude``: breathing and movement drift."""

    def __init__(
        self,
        p: float = 0.5,
        amplitude: tuple[float, float] = (0.1, 0.5),
        freq: tuple[float, float] = (0.05, 0.5),
    ) -> None:
        super().__init__(p)
        self.amplitude = as_range(amplitude)
        self.freq = as_range(freq)

    def ranges(self, fs: float) -> dict[str, tuple[Range, float, float]]:
        return {"amplitude": (self.amplitude, 0.0, math.inf), "freq": (self.freq, 0.0, fs / 2)}

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        n = len(x)
        amplitude = uniform(self.amplitude, n, generator)[:, None] * x.std(-1).mean(1, keepdim=True)
        freq = uniform(self.freq, n, generator)[:, None]
        phase = uniform((0.0, 2 * math.pi), n, generator)[:, None]
        t = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) / fs
        return x + (amplitude * torch.sin(2 * math.pi * freq * t + phase))[:, None, :]


class TimeStretch(Transform):
    """Resample the example by a factor drawn from ``factor`` (>1 slower, <1 faster: other heart rates),
    with linear interpolation; a longer result is cropped at a random offset, a shorter one placed at
    a random offset between zeros."""

    def __init__(self, p: float = 0.5, factor: tuple[float, float] = (0.8, 1.2)) -> None:
        super().__init__(p)
        self.factor = as_range(factor)

    def ranges(self, fs: float) -> dict[str, tuple[Range, float, float]]:
        return {"factor": (self.factor, 0.1, 10.0)}

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        n, last = len(x), x.shape[-1] - 1
        factor = uniform(self.factor, n, generator)[:, None]
        start = uniform((0.0, 1.0), n, generator)[:, None] * (factor - 1) * last  # negative: zeros first
        t = torch.arange(last + 1, device=x.device, dtype=x.dtype)
        return sample_at(x, (t + start) / factor)


class DropoutBursts(Transform):
    """Zero a number of segments drawn from ``count`` (ints), each of a duration drawn from
    ``duration_ms``: signal lost for a moment (zero is the window's mean for z-scored input)."""

    def __init__(
        self, p: float = 0.5, count: tuple[int, int] = (1, 3), duration_ms: tuple[float, float] = (50, 300)
    ) -> None:
        super().__init__(p)
        self.count = (int(count[0]), int(count[1]))
        self.duration_ms = as_range(duration_ms)

    def ranges(self, fs: float) -> dict[str, tuple[Range, float, float]]:
        return {"count": (self.count, 0, math.inf), "duration_ms": (self.duration_ms, 0.0, math.inf)}

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        n, length, most = len(x), x.shape[-1], self.count[1]
        device = generator.device
        count = torch.randint(self.count[0], most + 1, (n, 1), generator=generator, device=device)
        duration = (uniform(self.duration_ms, n * most, generator) * fs / 1000).round().clamp(0, length)
        duration = duration.view(n, most, 1)
        start = (uniform((0.0, 1.0), n * most, generator).view(n, most, 1) * (length - duration)).floor()
        t = torch.arange(length, device=device)
        active = (torch.arange(most, device=device) < count)[:, :, None]
        lost = (active & (t >= start) & (t < start + duration)).any(1)
        return x * ~lost[:, None, :]


class RandomCrop(Transform):
    """Keep a random segment of a fraction of the window drawn from ``fraction``, moved to the window's
    start and zero-padded to its length (not resized: the heart rate stays; TimeStretch changes it)."""

    def __init__(self, p: float = 0.5, fraction: tuple[float, float] = (0.6, 0.9)) -> None:
        super().__init__(p)
        self.fraction = as_range(fraction)

    def ranges(self, fs: float) -> dict[str, tuple[Range, float, float]]:
        return {"fraction": (self.fraction, 0.0, 1.0)}

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float) -> torch.Tensor:
        n, length = len(x), x.shape[-1]
        kept = (uniform(self.fraction, n, generator) * length).round().clamp(1, length)[:, None]
        start = (uniform((0.0, 1.0), n, generator)[:, None] * (length - kept + 1)).floor()
        start = start.clamp(max=length - kept)
        t = torch.arange(length, device=x.device)
        source = (start.long() + t).clamp(max=length - 1)
        return x.gather(-1, source[:, None, :].expand(-1, x.shape[1], -1)) * (t < kept)[:, None, :]


class BatchAugment:
    """The named ``transforms`` applied in order to training batches sampled at ``fs`` Hz; a plain
    object (no parameters, nothing in the state_dict)."""

    TASK = "classification"

    def __init__(self, transforms: Mapping[str, Transform], fs: float) -> None:
        self.transforms = dict(transforms)
        self.fs = float(fs)
        if not self.fs > 0:
            raise ConfigError(f"augment.fs={fs} is not a sampling rate; set it to the data's (${{data.fs}})")
        for name, transform in self.transforms.items():
            transform.check(f"augment.transforms.{name}", self.fs)

    def __call__(self, x: torch.Tensor, seed: int, step: int, batch: int = 0, rank: int = 0) -> torch.Tensor:
        """``x`` ``(batch, channels, samples)`` augmented with draws from ``(seed, step, batch, rank)``."""
        with torch.no_grad():
            for name, transform in self.transforms.items():
                generator = torch.Generator(device=x.device)
                generator.manual_seed(stream_seed(seed, step, batch, rank, name))
                x = transform(x, generator, self.fs)
        return x

    def __repr__(self) -> str:
        return f"BatchAugment({', '.join(self.transforms)}; fs={self.fs:g})"


def build_augment(cfg: DictConfig | None) -> BatchAugment | None:
    """The ``augment`` config node built (None for ``augment: null``); a bad value is one ConfigError
    naming its key, not Hydra's wrapped traceback."""
    if not cfg:
        return None
    return instantiate_node(cfg)
