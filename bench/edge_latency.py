"""Edge inference on one CPU thread: per-window classification and per-ECG generation latency of an
export on torch eager, TorchScript, ONNX Runtime and int8 dynamic quantization (torch and ONNX
Runtime), measured side by side in one run, with the weight-file sizes and what int8 does to
accuracy (classifier) and fidelity (VAE).

    .venv/bin/python bench/edge_latency.py                       # fresh networks: latency and sizes
    .venv/bin/python bench/edge_latency.py --classifier CKPT --vae CKPT   # + accuracy / fidelity

Each network goes through ``ecg_lab.edge.export.export_model`` (the ``make pi-export`` path) into a
temporary folder; the backends run what that folder holds. Latency: batch 1 (one 1500-sample window;
one 10-s ECG decoded from one latent vector), ``--warmup`` calls, then ``--rounds`` rounds of
``--iters`` calls per backend, backends alternating within each round; the median round is reported.
Targets: cnn_lstm ≤ 1 ms per window and the VAE ≤ 5 ms per ECG, each with its fastest backend.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ecg_lab.classification.metrics import confusion_matrix, official_f1, record_probabilities  # noqa: E402
from ecg_lab.edge import runtime as edge  # noqa: E402
from ecg_lab.edge.export import Decoder, export_model  # noqa: E402
from ecg_lab.generation.fidelity import fidelity  # noqa: E402

TARGET_MS = {"classification": 1.0, "generation": 5.0}
QUANTIZED = {nn.LSTM, nn.GRU, nn.Linear}


def module_and_config(ckpt: Path | None, overrides: list[str]) -> tuple[Any, Any]:
    """A trained LightningModule and its stored config, or a freshly initialised one from ``conf/``."""
    if ckpt is not None:
        from ecg_lab.app.checkpoints import model_from_checkpoint

        return model_from_checkpoint(ckpt)
    import hydra
    from hydra import compose, initialize_config_dir

    from ecg_lab.app.config import register_resolvers

    register_resolvers()

    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("train", overrides=[*overrides])
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model, loss=hydra.utils.instantiate(cfg.loss)).eval(), cfg


def ort_int8(onnx_path: Path, out: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantization of an exported graph (its stale shape annotations
    dropped first: the quantizer's shape inference rejects them)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(onnx_path)
    del model.graph.value_info[:]
    plain = out.with_suffix(".plain.onnx")
    onnx.save(model, plain)
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process first
    quantize_dynamic(plain, out, weight_type=QuantType.QInt8)
    return out


def backends(
    net: nn.Module, folder: Path, task: str, example: torch.Tensor, work: Path
) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], dict[str, str], dict[str, int]]:
    """``{backend: f(numpy batch) -> numpy}``, the backends that failed and why, and file sizes."""
    config = edge.read_config(folder)
    module = Decoder(net).eval() if task == "generation" else net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization → torchao, some day
        q_net = torch.ao.quantization.quantize_dynamic(net, QUANTIZED, dtype=torch.qint8)
    q_module = Decoder(q_net).eval() if task == "generation" else q_net.eval()
    q_pth = work / "int8_state_dict.pth"
    torch.save(q_net.state_dict(), q_pth)
    onnx_path = folder / config["onnx"]
    name = edge.ONNX_NAMES[task][0][0]

    def on_torch(m: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return m(torch.from_numpy(x)).numpy()

        return run

    def on_ort(path: Path) -> Callable[[np.ndarray], np.ndarray]:
        session = edge.onnx_session(path, threads=1)
        return lambda x: session.run(None, {name: x})[0]

    runs = {"torch eager": on_torch(module)}
    failed = {}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            runs["TorchScript"] = on_torch(torch.jit.freeze(torch.jit.trace(module, example)))
    except Exception as err:  # noqa: BLE001 - report whatever tracing raises
        failed["TorchScript"] = f"{type(err).__name__}: {err}".splitlines()[0]
    runs["ONNX Runtime"] = on_ort(onnx_path)
    runs["torch int8 dynamic"] = on_torch(q_module)
    sizes = {
        "weights .pth (float32)": (folder / config["weights"]).stat().st_size,
        "int8 state dict .pth": q_pth.stat().st_size,
        ".onnx (float32)": onnx_path.stat().st_size,
    }
    try:
        q_onnx = ort_int8(onnx_path, work / "int8.onnx")
        runs["ONNX Runtime int8 dynamic"] = on_ort(q_onnx)
        sizes[".onnx int8"] = q_onnx.stat().st_size
    except Exception as err:  # noqa: BLE001
        failed["ONNX Runtime int8 dynamic"] = f"{type(err).__name__}: {err}".splitlines()[0]
    return runs, failed, sizes


def time_backends(
    runs: dict[str, Callable[[np.ndarray], np.ndarray]], x: np.ndarray, args: argparse.Namespace
) -> dict[str, float]:
    """Median round, in ms per call, for each backend; rounds alternate between backends."""
    for run in runs.values():
        for _ in range(args.warmup):
            run(x)
    rounds: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            t = time.perf_counter()
            for _ in range(args.iters):
                run(x)
            rounds[key].append((time.perf_counter() - t) / args.iters * 1e3)
    return {k: statistics.median(v) for k, v in rounds.items()}


def batched(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int = 256) -> np.ndarray:
    return np.concatenate([run(x[i : i + size]) for i in range(0, len(x), size)])


def test_batches(stored: Any, cache_dir: Path) -> list[Any]:
    """The checkpoint's test split, as its datamodule gives it."""
    import hydra
    from omegaconf import open_dict

    data_cfg = stored.data.copy()
    with open_dict(data_cfg):
        data_cfg.cache_dir = str(cache_dir)
        data_cfg.pop("run_dir", None)  # checkpoints before 0.2
    datamodule = hydra.utils.instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    return list(datamodule.test_dataloader())


def accuracy_effect(runs: dict[str, Callable], stored: Any, classes: list[str], cache_dir: Path) -> dict:
    """Window accuracy, window and record official F1, and agreement with float, per backend."""
    batches = test_batches(stored, cache_dir)
    x = torch.cat([b[0] for b in batches]).numpy()
    y = torch.cat([b[1] for b in batches])
    rec = torch.cat([b[2] for b in batches])
    reference = None
    out = {}
    for key, run in runs.items():
        probs = torch.softmax(torch.from_numpy(batched(run, x)), dim=1)
        pred = probs.argmax(1)
        rec_probs, rec_y = record_probabilities(probs, y, rec)
        reference = pred if reference is None else reference
        out[key] = {
            "window_accuracy": float((pred == y).float().mean()),
            "window_official_f1": official_f1(
                confusion_matrix(y.numpy(), pred.numpy(), len(classes)), classes
            )["official_f1"],
            "record_official_f1": official_f1(
                confusion_matrix(rec_y.numpy(), rec_probs.argmax(1).numpy(), len(classes)), classes
            )["official_f1"],
            "agreement_with_eager": float((pred == reference).float().mean()),
        }
    out["_n"] = f"{len(x)} test windows, {len(torch.unique(rec))} records"
    return out


def fidelity_effect(runs: dict[str, Callable], net: nn.Module, stored: Any, cache_dir: Path, n: int) -> dict:
    """Fidelity of each decoder (reconstructions from the float encoder's mean, generated from the same
    latent vectors) on the checkpoint's test windows, and its largest deviation from float."""
    batches = test_batches(stored, cache_dir)
    x = torch.cat([b["x"] for b in batches])[:n]
    peaks = [np.flatnonzero(m) for m in torch.cat([b["rpeaks"] for b in batches])[:n].numpy()]
    with torch.inference_mode():
        mu = net.encode(x)[0].numpy()
    z = np.random.default_rng(0).standard_normal((256, mu.shape[1]), dtype=np.float32)
    fs = float(stored.data.fs)
    out, reference = {}, None
    for key, run in runs.items():
        recon, generated = batched(run, mu)[:, 0], batched(run, z)[:, 0]
        reference = generated if reference is None else reference
        scores = fidelity(x[:, 0].numpy(), recon, generated, peaks, fs)
        out[key] = {
            k: scores[k] for k in ("mse", "rpeak_recall", "r_amplitude_ratio", "rhythm_plausible", "mmd")
        }
        out[key]["max_abs_diff_from_eager"] = float(np.abs(generated - reference).max())
    out["_n"] = f"{len(x)} test windows, 256 generated"
    return out


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for r in [header, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def bench_one(
    label: str, task: str, ckpt: Path | None, overrides: list[str], args: argparse.Namespace
) -> dict:
    model, stored = module_and_config(ckpt, overrides)
    label = (stored.get("model_name") if ckpt else None) or label
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = export_model(model, stored, work / "export", label)
        net, _ = edge.load(work / "export")
        if task == "classification":
            example = torch.randn(1, 1, int(config["window"]))
        else:
            example = torch.from_numpy(edge.latents(config, 1, seed=0))
        runs, failed, sizes = backends(net, work / "export", task, example, work)
        ms = time_backends(runs, example.numpy(), args)
        effect = None
        if ckpt is not None:
            if task == "classification":
                effect = accuracy_effect(runs, stored, config["classes"], args.cache_dir)
            else:
                effect = fidelity_effect(runs, net, stored, args.cache_dir, args.fidelity_windows)
    rate = config.get("preprocess", {}).get("resample_to") or config["fs"]  # the windows' rate
    seconds = f"{config['window'] / rate:g}-s"
    unit = f"one {seconds} {'window' if task == 'classification' else 'ECG'} ({config['window']} samples)"
    eager = ms["torch eager"]
    rows = [[k, f"{v:.3f}", f"{eager / v:.2f}x"] for k, v in ms.items()]
    rows += [[k, "n/a", why[:60]] for k, why in failed.items()]
    source = f"checkpoint {ckpt}" if ckpt else "freshly initialised"
    print_table(f"{label} ({source}), {unit}, batch 1, 1 thread", ["backend", "ms", "vs eager"], rows)
    print_table("files", ["file", "KiB"], [[k, f"{v / 1024:.0f}"] for k, v in sizes.items()])
    fastest = min(ms, key=ms.get)
    target = TARGET_MS[task]
    verdict = "PASS" if ms[fastest] <= target else "FAIL"
    print(f"fastest: {fastest} {ms[fastest]:.3f} ms, target ≤ {target:g} ms: {verdict}")
    if effect is not None:
        n = effect.pop("_n")
        keys = list(next(iter(effect.values())))
        rows = [[k, *(f"{v[c]:.4f}" for c in keys)] for k, v in effect.items()]
        print_table(f"what int8 does ({n})", ["backend", *keys], rows)
    elif task == "classification":
        print("(accuracy and fidelity need trained weights: --classifier CKPT / --vae CKPT)")
    return {
        "ms": ms,
        "failed": failed,
        "sizes": sizes,
        "fastest": fastest,
        "pass": verdict == "PASS",
        "effect": effect,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", type=Path, default=None, help="a classifier checkpoint (default: fresh)")
    p.add_argument("--model", default="cnn_lstm", help="the classifier config without --classifier")
    p.add_argument("--vae", type=Path, default=None, help="an LSTM-VAE checkpoint (default: fresh)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--fidelity-windows", type=int, default=512)
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("ECG_LAB_CACHE", REPO / ".cache" / "ecg_lab")),
        help="the project cache the checkpoints' data is read through (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    for path in (args.classifier, args.vae):
        if path is not None and not path.is_file():
            p.error(f"checkpoint not found: {path}")
    for key in ("warmup", "rounds", "iters", "fidelity_windows"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be positive")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs on this machine")
    result = {
        "classifier": bench_one(args.model, "classification", args.classifier, [f"model={args.model}"], args),
        "vae": bench_one("lstm_vae", "generation", args.vae, ["experiment=lstm_vae"], args),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"figures written to {args.json}")
    sys.exit(0 if all(r["pass"] for r in result.values()) else 1)


if __name__ == "__main__":
    main()
