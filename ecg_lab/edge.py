"""The edge runtime: rebuild an exported network from its JSON, load its weights, run it on CPU.

Needs torch and NumPy only (SciPy too for classifying a recording: the band-pass of the training
preprocessing and MATLAB files); no Lightning, Hydra, OmegaConf, wandb or NeuroKit2. An export folder
(``python -m ecg_lab.export``) holds ``<name>_weights.pth`` (the bare network's state dict) and
``<name>_config.json`` (architecture, its hyperparameters, classes, sampling rate, window,
preprocessing)::

    python -m ecg_lab.edge generate --export DIR --n 10 --out synth.csv [--png]
    python -m ecg_lab.edge classify --export DIR --record A00001.mat
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: the network classes an export may name, by architecture
ARCHITECTURES = {"CRNN": "ecg_lab.models.crnn", "LSTMVAE": "ecg_lab.models.lstm_vae"}
FORMAT = 1


def read_config(export_dir: str | Path) -> tuple[dict[str, Any], Path]:
    """The export's config and its weights file."""
    export_dir = Path(export_dir)
    configs = sorted(export_dir.glob("*_config.json"))
    if len(configs) != 1:
        raise FileNotFoundError(
            f"{export_dir}: expected one *_config.json, found {len(configs)}; "
            "make one with `make pi-export CKPT=...` or `python -m ecg_lab.export ckpt_path=...`"
        )
    config = json.loads(configs[0].read_text())
    if config.get("format") != FORMAT or config.get("architecture") not in ARCHITECTURES:
        raise ValueError(f"{configs[0]}: not an ecg_lab export (format {FORMAT}) of {sorted(ARCHITECTURES)}")
    weights = export_dir / config["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the weights named in {configs[0].name} are missing")
    return config, weights


def build(config: dict[str, Any]) -> nn.Module:
    """The network the config describes, with fresh weights."""
    module = importlib.import_module(ARCHITECTURES[config["architecture"]])
    return getattr(module, config["architecture"])(**config["hyperparameters"])


def load(export_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the exported network, load its state dict (``weights_only=True``), ``eval()``."""
    config, weights = read_config(export_dir)
    net = build(config)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval(), config


@torch.no_grad()
def generate(net: nn.Module, n: int, seed: int = 0) -> np.ndarray:
    """``n`` ECGs (n, samples) decoded from z ~ N(0, I) drawn on the CPU with ``seed``."""
    return net.sample(n, torch.Generator().manual_seed(seed))[:, 0].float().cpu().numpy()


def read_signal(path: str | Path) -> np.ndarray:
    """A single-lead recording: a PhysioNet 2017 ``.mat`` (``val``, 1000 counts per mV) or a CSV of mV
    values (one column, or the last column of several; a header line is skipped)."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        import scipy.io

        return np.asarray(scipy.io.loadmat(path)["val"], dtype=np.float64).ravel() / 1000.0
    rows = [line.split(",")[-1] for line in path.read_text().splitlines() if line.strip()]
    try:
        float(rows[0])
    except ValueError:
        rows = rows[1:]  # a header
    return np.asarray([float(v) for v in rows], dtype=np.float64)


@torch.no_grad()
def classify(net: nn.Module, config: dict[str, Any], signal: np.ndarray) -> dict[str, Any]:
    """Window probabilities and the recording's class (mean of its windows), preprocessed as in training."""
    from ecg_lab.data.preprocess import Preprocessing
    from ecg_lab.data.records import Record

    prep = Preprocessing(**config["preprocess"])
    x = prep.apply(Record("record", signal.astype(np.float32), float(config["fs"]), ""))
    windows = np.stack([x[s : s + prep.window] for s in prep.starts(x.size)])
    probs = torch.softmax(net(torch.from_numpy(windows).unsqueeze(1)), dim=1).numpy()
    mean = probs.mean(0)
    classes = config["classes"]
    return {
        "class": classes[int(mean.argmax())],
        "probabilities": dict(zip(classes, mean.round(4).tolist(), strict=True)),
        "windows": int(len(windows)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``generate`` or ``classify`` with an export folder."""
    p = argparse.ArgumentParser(prog="python -m ecg_lab.edge", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="decode random latent vectors of an exported VAE")
    g.add_argument("--export", required=True)
    g.add_argument("--n", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="synth.csv")
    g.add_argument("--png", action="store_true", help="also write a plot (needs matplotlib)")
    c = sub.add_parser("classify", help="classify one recording with an exported classifier")
    c.add_argument("--export", required=True)
    c.add_argument("--record", required=True)
    args = p.parse_args(argv)
    net, config = load(args.export)
    if args.command == "generate":
        if config["task"] != "generation":
            p.error(f"{args.export} holds a classifier; `generate` needs an exported VAE")
        signals = generate(net, args.n, args.seed)
        t = np.arange(signals.shape[1]) / float(config["fs"])
        np.savetxt(
            args.out,
            np.column_stack([t, signals.T]),
            delimiter=",",
            fmt="%.6g",
            header=",".join(["time_s", *(f"ecg_{i}" for i in range(len(signals)))]),
            comments="",
        )
        if args.png:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(len(signals), 1, figsize=(10, 1.2 * len(signals)), squeeze=False)
            for ax, x in zip(axes[:, 0], signals, strict=True):
                ax.plot(t, x, lw=0.8)
            fig.savefig(Path(args.out).with_suffix(".png"), dpi=100)
        print(f"{len(signals)} ECGs written to {args.out}")
    else:
        if config["task"] != "classification":
            p.error(f"{args.export} holds a generative model; `classify` needs an exported classifier")
        print(json.dumps(classify(net, config, read_signal(args.record))))


if __name__ == "__main__":
    main()
