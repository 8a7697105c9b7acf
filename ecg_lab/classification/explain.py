"""Why a window classifier says what it says about one recording (``python -m ecg_lab.explain``).

The recording is preprocessed as in training (:meth:`~ecg_lab.edge.preprocess.Preprocessing.apply`) and
cut into the model's windows (a whole-recording model gets it as one item). Per window, for one class
(the recording's predicted one unless chosen):

- **Grad-CAM** (Captum's ``LayerGradCam``) on the output of the CRNN's last conv block, rectified; each
  conv step is spread over the samples it pools (variants without conv layers, ``lstm_only``, get none);
- **integrated gradients** (Captum's ``IntegratedGradients``) from a zero baseline (the z-scored
  signal's mean), summed over the ``explain.ig_segment_s`` (0.1 s) around each sample, positive part
  (evidence for the class). Per sample, ``x·gradient`` pairs of large opposite values stand on every
  large-amplitude stretch (a max-pooled difference has them), whatever the network makes of it; a
  segment's sum is that segment's own attribution, in which they cancel. In ``tests/test_explain.py``'s
  known answer, a slow wave of four times the evidence's amplitude that the network ignores takes a
  larger share of the per-sample map than the evidence; summed over 0.1 s, the evidence holds most;
- the **attention weights** of ``readout=attention``, each RNN step spread over the samples it covers.

Each map is stitched back onto the recording (where windows overlap, their values are averaged; samples
no window reaches are NaN) and scaled to 0..1 (its smallest value to its largest). :func:`draw_explanation`
draws the recording in mV (read raw, for display) with each map behind it and the windows' class
probabilities along it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerGradCam
from matplotlib.figure import Figure
from scipy.ndimage import uniform_filter1d
from torch import nn

from ecg_lab.app.figures import save_figure, subplots
from ecg_lab.data.records import Record
from ecg_lab.edge.preprocess import Preprocessing
from ecg_lab.edge.runtime import calibrated
from ecg_lab.errors import ConfigError
from ecg_lab.models.crnn import output_lengths

GRAD_CAM, INTEGRATED_GRADIENTS, ATTENTION = "Grad-CAM", "integrated gradients", "attention"
NO_CONV_NOTE = "no conv layers in this network: Grad-CAM is not available, integrated gradients only"
CLASS_COLORS = ("tab:green", "tab:red", "tab:blue", "tab:gray", "tab:orange", "tab:purple")


@dataclass(frozen=True)
class ExplainSettings:
    """Config node ``explain``: integrated gradients' steps and segment (seconds; 0: per sample),
    windows per pass, the figures' dpi."""

    ig_steps: int = 32
    ig_segment_s: float = 0.1
    batch_size: int = 16
    dpi: int = 120

    def __post_init__(self) -> None:
        for key in ("ig_steps", "batch_size", "dpi"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"explain.{key}={value!r} must be a positive int, e.g. explain.{key}=16")
        segment = self.ig_segment_s
        if isinstance(segment, bool) or not isinstance(segment, (int, float)) or not segment >= 0:
            raise ConfigError(
                f"explain.ig_segment_s={segment!r} must be seconds >= 0 (0: per sample), e.g. 0.1"
            )


@dataclass
class Explanation:
    """One recording explained: the raw signal (mV at ``raw_fs``), the model input's length and rate, the
    windows (``starts``, ``width``) and their class probabilities, the recording's probabilities and
    predicted class (under the checkpoint's calibration), the explained class and the stitched maps
    (name → ``(n_samples,)`` at ``rate``, scaled to 0..1, NaN where no window reaches)."""

    record_id: str
    label: str
    classes: tuple[str, ...]
    raw: np.ndarray
    raw_fs: float
    rate: float
    n_samples: int
    starts: np.ndarray
    width: int
    window_probs: np.ndarray
    record_probs: np.ndarray
    predicted: int
    target: int
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def peak_seconds(self, name: str) -> float:
        """Where map ``name`` peaks, in seconds from the start of the recording."""
        return float(np.nanargmax(self.maps[name]) / self.rate)

    def summary(self) -> dict[str, Any]:
        """Plain values for ``explanations.json``."""
        return {
            "record": self.record_id,
            "label": self.label or None,
            "predicted": self.classes[self.predicted],
            "explained_class": self.classes[self.target],
            "probabilities": dict(zip(self.classes, np.round(self.record_probs, 4).tolist(), strict=True)),
            "windows": int(len(self.starts)),
            "maps": list(self.maps),
            "peak_s": {name: round(self.peak_seconds(name), 3) for name in self.maps},
            "notes": list(self.notes),
        }


def class_index(classes: Sequence[str], name: Any) -> int | None:
    """Config key ``target`` as a class index (None: each recording's predicted class); ConfigError for a
    class the checkpoint does not know."""
    if name is None:
        return None
    if str(name) not in classes:
        raise ConfigError(f"target={name!r} is not one of the checkpoint's classes {list(classes)}; pick one")
    return list(classes).index(str(name))


def stitch(values: np.ndarray, starts: np.ndarray, n_samples: int) -> np.ndarray:
    """Per-window values ``(windows, width)`` placed at ``starts`` on ``n_samples``: the mean where windows
    overlap, NaN where none reaches."""
    total, count = np.zeros(n_samples), np.zeros(n_samples)
    width = values.shape[1]
    for v, s in zip(values, starts, strict=True):
        total[s : s + width] += v
        count[s : s + width] += 1
    out = np.full(n_samples, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def scaled(values: np.ndarray) -> np.ndarray:
    """``values`` scaled from their smallest (0) to their largest (1), NaN kept; a constant map (e.g.
    attention spread evenly) is all 0."""
    if not np.isfinite(values).any():
        return values
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return (values - low) / (high - low) if high > low else np.where(np.isnan(values), np.nan, 0.0)


def spread(values: np.ndarray, covered: int, width: int) -> np.ndarray:
    """Per-step values ``(windows, steps)`` as per-sample ``(windows, width)``: the ``steps`` cover the
    first ``covered`` samples evenly; samples past them take the last step's value."""
    steps = values.shape[1]
    index = np.minimum((np.arange(width) * steps // max(covered, 1)), steps - 1)
    return values[:, index]


def covered_samples(net: nn.Module, width: int) -> int:
    """How many leading samples of a ``width``-sample input the CRNN's feature steps stand for: the conv
    stack's output steps times the product of its pools, or the whole frames of ``patch`` samples."""
    if len(net.cnn) == 0:
        return width - width % net.patch
    steps, stride = torch.tensor([width]), 1
    for layer in net.cnn.modules():
        steps = output_lengths(layer, steps)
        if isinstance(layer, nn.MaxPool1d):
            stride *= int(layer.stride if isinstance(layer.stride, int) else layer.stride[0])
    return int(steps) * stride


class Explainer:
    """Explains recordings to a CRNN window classifier ``net`` (eval mode).

    ``features``: the data's per-recording inputs (``features=rr``), computed for each recording;
    ``whole``: the network takes whole recordings (``data.recordings``), so a recording is one item;
    ``calibration``: the checkpoint's, which decides the predicted class as in evaluation.
    """

    def __init__(
        self,
        net: nn.Module,
        classes: Sequence[str],
        preprocess: Preprocessing,
        settings: ExplainSettings | None = None,
        features: Any = None,
        whole: bool = False,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        self.net = net.eval()
        self.classes = tuple(classes)
        self.preprocess = preprocess
        self.settings = settings or ExplainSettings()
        self.features = features
        self.whole = whole
        self.calibration = calibration

    @classmethod
    def of(
        cls,
        net: nn.Module,
        classes: Sequence[str],
        datamodule: Any,
        settings: ExplainSettings | None = None,
        calibration: dict[str, Any] | None = None,
    ) -> Explainer:
        """An explainer of ``net`` on a classification datamodule's preprocessing, per-recording inputs
        and items (windows, or whole recordings)."""
        return cls(
            net, classes, datamodule.preprocess, settings, features=datamodule.features,
            whole=datamodule.recordings is not None, calibration=calibration,
        )  # fmt: skip

    # -- the model's view of a recording -----------------------------------------------------------
    def items(self, signal: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The network's items ``(n, 1, width)`` of a preprocessed signal and their start samples."""
        if self.whole:
            return torch.from_numpy(np.ascontiguousarray(signal))[None, None], np.zeros(1, dtype=np.int64)
        return torch.from_numpy(self.preprocess.windows(signal))[:, None], self.preprocess.starts(signal.size)

    def inputs(self, signal: np.ndarray, fs: float, n: int) -> dict[str, torch.Tensor]:
        """The network's named inputs besides the signal, one row per item (``rr`` under features=rr,
        computed as the training table is: on the preprocessed signal, given the dataset's rate ``fs``)."""
        if self.features is None:
            return {}
        row = torch.from_numpy(self.features.record(signal, fs)[0])
        return {self.features.INPUT: row[None].expand(n, -1).contiguous()}

    def forward_fn(self, names: Sequence[str]) -> Callable[..., torch.Tensor]:
        """``net`` as Captum calls it: the signal, then the named inputs positionally."""

        def forward(x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
            return self.net(x, **dict(zip(names, extra, strict=True)))

        return forward

    def batches(
        self, x: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        """``x`` and its named inputs (in ``inputs``' order) in slices of ``settings.batch_size`` items."""
        size = self.settings.batch_size
        return [
            (x[i : i + size], tuple(v[i : i + size] for v in inputs.values())) for i in range(0, len(x), size)
        ]

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        """Each item's class probabilities ``(n, classes)``."""
        forward = self.forward_fn(list(inputs))
        chunks = [torch.softmax(forward(xb, *extra).float(), 1) for xb, extra in self.batches(x, inputs)]
        return torch.cat(chunks).numpy().astype(np.float64)

    # -- the maps, per item -------------------------------------------------------------------------
    def grad_cam(self, x: torch.Tensor, inputs: dict[str, torch.Tensor], target: int) -> np.ndarray:
        """Rectified Grad-CAM on the last conv block's output, per sample ``(n, width)``."""
        cam = LayerGradCam(self.forward_fn(list(inputs)), self.net.cnn[-1])
        parts = [
            cam.attribute(xb, target=target, additional_forward_args=extra or None, relu_attributions=True)
            for xb, extra in self.batches(x, inputs)
        ]
        steps = torch.cat(parts)[:, 0].detach().numpy()
        return spread(steps, covered_samples(self.net, x.shape[-1]), x.shape[-1])

    def integrated_gradients(
        self, x: torch.Tensor, inputs: dict[str, torch.Tensor], target: int, rate: float
    ) -> np.ndarray:
        """Integrated gradients from a zero baseline summed over ``settings.ig_segment_s`` around each
        sample at ``rate``, positive part, per sample ``(n, width)``."""
        ig = IntegratedGradients(self.forward_fn(list(inputs)))
        parts = [
            ig.attribute(
                xb, torch.zeros_like(xb), target=target, additional_forward_args=extra or None,
                n_steps=self.settings.ig_steps,
            )
            for xb, extra in self.batches(x, inputs)
        ]  # fmt: skip
        per_sample = torch.cat(parts)[:, 0].detach().double().numpy()
        length = max(1, round(float(self.settings.ig_segment_s) * rate))
        return np.maximum(uniform_filter1d(per_sample, length, axis=1, mode="constant") * length, 0.0)

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> np.ndarray:
        """The attention readout's weights, per sample ``(n, width)``."""
        size = self.settings.batch_size
        weights = torch.cat([self.net.attention_weights(x[i : i + size]) for i in range(0, len(x), size)])
        return spread(weights.numpy(), covered_samples(self.net, x.shape[-1]), x.shape[-1])

    def maps(
        self, x: torch.Tensor, inputs: dict[str, torch.Tensor], target: int, rate: float
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Every map this network has, per item, and notes on those it lacks."""
        maps: dict[str, np.ndarray] = {}
        notes = []
        if len(getattr(self.net, "cnn", ())):
            maps[GRAD_CAM] = self.grad_cam(x, inputs, target)
        else:
            notes.append(NO_CONV_NOTE)
        maps[INTEGRATED_GRADIENTS] = self.integrated_gradients(x, inputs, target, rate)
        if getattr(self.net, "attn", None) is not None:
            maps[ATTENTION] = self.attention(x)
        return maps, notes

    # -- one recording ------------------------------------------------------------------------------
    def explain(self, record: Record, target: int | None = None) -> Explanation:
        """Explain ``record`` (raw, in mV) for class index ``target`` (None: its predicted class)."""
        signal = self.preprocess.apply(record)
        rate = self.preprocess.rate(record.fs)
        x, starts = self.items(signal)
        inputs = self.inputs(signal, record.fs, len(x))
        window_probs = self.probabilities(x, inputs)
        record_probs, pred = calibrated(window_probs.mean(0, keepdims=True), self.calibration)
        target = int(pred[0]) if target is None else int(target)
        per_item, notes = self.maps(x, inputs, target, rate)
        maps = {name: scaled(stitch(v, starts, signal.size)) for name, v in per_item.items()}
        return Explanation(
            record.record_id, record.label, self.classes, record.signal, record.fs, rate, signal.size,
            starts, x.shape[-1], window_probs, record_probs[0], int(pred[0]), target, maps, notes,
        )  # fmt: skip


# -- the figure ---------------------------------------------------------------------------------------
def draw_map(ax: Any, e: Explanation, name: str) -> None:
    """The raw recording in mV with map ``name`` as a heat band behind it."""
    t_raw = np.arange(e.raw.size) / e.raw_fs
    low, high = float(np.min(e.raw)), float(np.max(e.raw))
    pad = 0.05 * (high - low or 1.0)
    ax.imshow(
        np.ma.masked_invalid(e.maps[name])[None, :], aspect="auto", cmap="Reds", vmin=0, vmax=1, alpha=0.75,
        extent=(0, e.n_samples / e.rate, low - pad, high + pad), origin="lower", interpolation="nearest",
    )  # fmt: skip
    ax.plot(t_raw, e.raw, color="black", lw=0.6)
    ax.set_ylim(low - pad, high + pad)
    ax.set_ylabel("mV")
    ax.set_title(f"{name} for class {e.classes[e.target]}", fontsize=9, loc="left")


def draw_probabilities(ax: Any, e: Explanation) -> None:
    """Each window's class probabilities as horizontal segments over its span."""
    start_s = e.starts / e.rate
    end_s = (e.starts + e.width) / e.rate
    for k, cls in enumerate(e.classes):
        color = CLASS_COLORS[k % len(CLASS_COLORS)]
        ax.hlines(e.window_probs[:, k], start_s, end_s, colors=color, lw=2, label=cls)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("probability")
    ax.set_xlabel("time (s)")
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=len(e.classes), fontsize=8, frameon=False)
    ax.set_title("window class probabilities (each line spans its window)", fontsize=9, loc="left")


def draw_explanation(e: Explanation) -> Figure:
    """The figure of one explanation: one row per map, then the window probabilities; notes on top."""
    rows = len(e.maps) + 1
    seconds = max(e.raw.size / e.raw_fs, e.n_samples / e.rate)
    width = min(24.0, max(10.0, 4 + seconds / 4))  # a minute: 19 inches
    fig, axes = subplots(rows, 1, figsize=(width, 1.9 * rows + 0.6), dpi=100, sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, name in zip(axes, e.maps, strict=False):
        draw_map(ax, e, name)
    draw_probabilities(axes[-1], e)
    axes[-1].set_xlim(0, seconds)
    p = e.record_probs[e.predicted]
    label = f"true {e.label}, " if e.label else ""
    fig.suptitle(f"{e.record_id}: {label}predicted {e.classes[e.predicted]} ({p:.2f})", fontsize=11)
    for i, note in enumerate(e.notes):
        axes[0].text(
            0.005, 0.97 - 0.12 * i, note, transform=axes[0].transAxes, va="top", fontsize=8,
            bbox={"facecolor": "lightyellow", "alpha": 0.9, "edgecolor": "none"},
        )  # fmt: skip
    return fig


def plot_explanation(e: Explanation, path: Path, dpi: int = 120) -> Path:
    """Draw ``e`` and write it as a PNG at ``path``."""
    return save_figure(draw_explanation(e), path, dpi=dpi)
