"""The edge runtime: run an exported network on a CPU without the training stack.

An export folder (``python -m ecg_lab.export`` / ``make pi-export``) holds ``<name>_weights.pth``
(the bare network's state dict), ``<name>_config.json`` (format version, ecg_lab version, source
checkpoint, architecture, its hyperparameters, classes, sampling rate, window, preprocessing),
``<name>.onnx`` and a copy of this package with what it imports (``ecg_lab/``), so the folder runs on
its own::

    python -m ecg_lab.edge generate --export DIR --n 10 --out synth.csv [--png]
    python -m ecg_lab.edge classify --export DIR --record A00002.mat

Two backends behind one NumPy interface (:class:`EdgeModel`): ``torch`` (CPU torch + NumPy: rebuild
the network from the JSON, ``load_state_dict`` of the weights with ``weights_only=True``, ``eval()``)
and ``onnx`` (ONNX Runtime + NumPy; no torch at all). Classifying a recording also takes SciPy (the
training band-pass and MATLAB files); ``--png`` takes matplotlib. Nothing here imports Lightning,
Hydra, OmegaConf, wandb or NeuroKit2.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

#: the network classes an export may name
ARCHITECTURES = ("CRNN", "LSTMVAE")
#: the export format this version writes, and the ones its runtime reads
FORMAT = 2
READABLE_FORMATS = (1, 2)
BACKENDS = ("torch", "onnx")
#: ONNX graph inputs and outputs: classifier window → logits; VAE decoder z → ecg (encoder: window →
#: mu, logvar)
ONNX_NAMES = {
    "classification": (["window"], ["logits"]),
    "generation": (["z"], ["ecg"]),
    "encoder": (["window"], ["mu", "logvar"]),
}
def read_config(export_dir: str | Path) -> dict[str, Any]:
    """The export's config, with ``export_dir`` added; checks the files it names are there."""
    export_dir = Path(export_dir)
    configs = sorted(export_dir.glob("*_config.json"))
    if len(configs) != 1:
        raise FileNotFoundError(
            f"{export_dir}: expected one *_config.json, found {len(configs)}; "
            "make one with `make pi-export CKPT=...` or `python -m ecg_lab.export ckpt_path=...`"
        )
    config = json.loads(configs[0].read_text())
    if config.get("format") not in READABLE_FORMATS:
        raise ValueError(
            f"{configs[0]}: export format {config.get('format')!r} (written by ecg_lab "
            f"{config.get('ecg_lab_version', 'unknown')}) is not one this runtime reads "
            f"({', '.join(map(str, READABLE_FORMATS))}); run the runtime copied into that export folder, "
            "or export the checkpoint again with this version"
        )
    if config.get("architecture") not in ARCHITECTURES:
        raise ValueError(
            f"{configs[0]}: architecture {config.get('architecture')!r} is not one of {sorted(ARCHITECTURES)}"
        )
    return config | {"export_dir": str(export_dir)}


def _file(config: dict[str, Any], key: str) -> Path:
    path = Path(config["export_dir"]) / config[key]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the file named by {key!r} in {config['name']}_config.json is missing; "
            "copy the whole export folder"
        )
    return path


def build(config: dict[str, Any]) -> nn.Module:
    """The network the config describes, with fresh weights."""
    return network_class(config["architecture"])(**config["hyperparameters"])


def network_class(architecture: str) -> type[nn.Module]:
    """The class an export's architecture names (imported here, so the onnx backend never loads torch;
    written as import statements, so the export finds and copies these modules)."""
    if architecture == "CRNN":
        from ecg_lab.models.crnn import CRNN

        return CRNN
    if architecture == "LSTMVAE":
        from ecg_lab.models.lstm_vae import LSTMVAE

        return LSTMVAE
    raise ValueError(f"architecture {architecture!r} is not one of {list(ARCHITECTURES)}")


def load(export_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the exported network, load its state dict (``weights_only=True``), ``eval()``."""
    import torch

    config = read_config(export_dir)
    net = build(config)
    net.load_state_dict(torch.load(_file(config, "weights"), map_location="cpu", weights_only=True))
    return net.eval(), config


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session; ``threads`` sets its intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class EdgeModel:
    """An exported network on the ``torch`` or ``onnx`` backend, with NumPy in and out."""

    def __init__(self, export_dir: str | Path, backend: str = "torch", threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        needs = {"torch": "torch", "onnx": "onnxruntime"}[backend]
        try:
            importlib.import_module(needs)
        except ImportError:
            other = "onnx" if backend == "torch" else "torch"
            raise ImportError(
                f"--backend {backend} needs {needs} (pip install {needs}); or use --backend {other}"
            ) from None
        if backend == "torch":
            import torch

            if threads:
                torch.set_num_threads(threads)
            self.net, self.config = load(export_dir)
        else:
            self.config = read_config(export_dir)
            self.session = onnx_session(_file(self.config, "onnx"), threads)

    @property
    def task(self) -> str:
        return str(self.config["task"])

    def _run(self, method: str, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.backend == "onnx":
            return self.session.run(None, {ONNX_NAMES[self.task][0][0]: x})[0]
        import torch

        with torch.inference_mode():
            return getattr(self.net, method)(torch.from_numpy(x)).numpy()

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Class logits ``(n, classes)`` of preprocessed windows ``(n, samples)`` or ``(n, 1, samples)``."""
        windows = np.asarray(windows)
        return self._run("forward", windows[:, None] if windows.ndim == 2 else windows)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """ECGs ``(n, samples)`` decoded from latent vectors ``z`` ``(n, latent_dim)``."""
        return self._run("decode", z)[:, 0]


def latents(config: dict[str, Any], n: int, seed: int = 0) -> np.ndarray:
    """``n`` latent vectors from N(0, I), drawn with NumPy so that both backends decode the same ones."""
    if n < 1:
        raise ValueError(f"--n must be positive, got {n}")
    dim = int(config["hyperparameters"]["latent_dim"])
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def generate(model: EdgeModel, n: int, seed: int = 0) -> np.ndarray:
    """``n`` ECGs ``(n, samples)`` decoded from z ~ N(0, I) drawn with ``seed``."""
    return model.decode(latents(model.config, n, seed))


def read_signal(path: str | Path) -> np.ndarray:
    """A single-lead recording: a PhysioNet 2017 ``.mat`` (``val``, 1000 counts per mV) or a CSV of mV
    values (one column, or the last column of several; a header line is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recording (give a .mat or a CSV of mV values)")
    if path.suffix.lower() == ".mat":
        import scipy.io

        counts = np.asarray(scipy.io.loadmat(path)["val"]).ravel()
        return counts.astype(np.float32) / np.float32(1000.0)  # as the training reader does
    rows = [line.split(",")[-1] for line in path.read_text().splitlines() if line.strip()]
    try:
        float(rows[0])
    except (IndexError, ValueError):
        rows = rows[1:]  # a header
    try:
        return np.asarray([float(v) for v in rows], dtype=np.float32)
    except ValueError as err:
        raise ValueError(f"{path}: not a CSV of mV values ({err})") from None


def windows_of(config: dict[str, Any], signal: np.ndarray) -> np.ndarray:
    """The recording's windows ``(n, window)``, preprocessed as in training (band-pass, z-score)."""
    from ecg_lab.data.records import Record
    from ecg_lab.edge.preprocess import Preprocessing

    prep = Preprocessing(**config["preprocess"])
    return prep.windows(
        prep.apply(Record("record", np.asarray(signal, dtype=np.float32), float(config["fs"]), ""))
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classify(model: EdgeModel, signal: np.ndarray) -> dict[str, Any]:
    """The recording's class (mean of its windows' probabilities), its probabilities and window count."""
    probs = softmax(model.logits(windows_of(model.config, signal)))
    mean = probs.mean(0)
    classes = model.config["classes"]
    return {
        "class": classes[int(mean.argmax())],
        "probabilities": dict(zip(classes, mean.astype(np.float64).round(4).tolist(), strict=True)),
        "windows": int(len(probs)),
    }


def write_csv(path: str | Path, signals: np.ndarray, fs: float) -> None:
    """``time_s,ecg_0,ecg_1,...``: one row per sample."""
    t = np.arange(signals.shape[1]) / fs
    header = ",".join(["time_s", *(f"ecg_{i}" for i in range(len(signals)))])
    np.savetxt(path, np.column_stack([t, signals.T]), delimiter=",", fmt="%.6g", header=header, comments="")


def write_png(path: str | Path, signals: np.ndarray, fs: float) -> None:
    """One panel per ECG (needs matplotlib)."""
    from matplotlib.figure import Figure  # no pyplot: no backend to choose, nothing global

    t = np.arange(signals.shape[1]) / fs
    fig = Figure(figsize=(10, 1.2 * len(signals)))
    axes = fig.subplots(len(signals), 1, squeeze=False, sharex=True)
    for ax, x in zip(axes[:, 0], signals, strict=True):
        ax.plot(t, x, lw=0.8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> None:
    """``generate`` or ``classify`` with an export folder."""
    p = argparse.ArgumentParser(prog="python -m ecg_lab.edge", description="The ecg_lab edge runtime.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="decode random latent vectors of an exported VAE")
    c = sub.add_parser("classify", help="classify one recording with an exported classifier")
    for s in (g, c):
        s.add_argument("--export", required=True, help="the export folder")
        s.add_argument("--backend", choices=BACKENDS, default="torch", help="default: %(default)s")
        s.add_argument("--threads", type=int, default=None, help="CPU threads (default: the library's)")
    g.add_argument("--n", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="synth.csv")
    g.add_argument("--png", action="store_true", help="also write <out>.png (needs matplotlib)")
    c.add_argument("--record", required=True, help="a PhysioNet 2017 .mat or a CSV of mV values")
    args = p.parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError, ImportError) as err:  # bad input or a missing backend
        p.error(str(err))


def run(args: argparse.Namespace) -> None:
    """One parsed command."""
    want = "generation" if args.command == "generate" else "classification"
    model = EdgeModel(args.export, args.backend, args.threads)
    if model.task != want:
        raise ValueError(f"{args.export} holds a {model.task} model; `{args.command}` needs a {want} export")
    if args.command == "generate":
        signals = generate(model, args.n, args.seed)
        fs = float(model.config["fs"])
        write_csv(args.out, signals, fs)
        if args.png:
            write_png(Path(args.out).with_suffix(".png"), signals, fs)
        print(f"{len(signals)} ECGs written to {args.out}")
    else:
        print(json.dumps(classify(model, read_signal(args.record))))

