"""Export a network for an edge device (``python -m ecg_lab.export ckpt_path=X`` or
``make pi-export CKPT=X`` run it on a checkpoint).

Writes into the export folder ``<name>_weights.pth`` (the bare network's ``state_dict``),
``<name>_config.json`` (what :mod:`ecg_lab.edge` needs to rebuild and feed it: architecture and
hyperparameters, task, classes, sampling rate, window, preprocessing, the checkpoint's calibration
when it holds one; the source checkpoint and its SHA-256; the SHA-256 of itself and of each weights
file), ``<name>.onnx`` (classifier: window → logits; VAE: decoder z → ECG, plus
``<name>_encoder.onnx``: window → mu, logvar), the edge package
with every ecg_lab module it imports (``ecg_lab/``, found by following its import statements from
``ecg_lab/edge/__main__.py``) and a README.

The folder is written next to the target under a temporary name, checked (ONNX Runtime against
torch, then read back as the runtime reads it) and only then renamed into place, so a failed or
interrupted export leaves the previous one as it was. An existing export is replaced only by an
export of the same checkpoint, or with ``overwrite``.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import ecg_lab
from ecg_lab.app.outputs import write_json
from ecg_lab.data.cache import make_build_dir, remove_stale_builds
from ecg_lab.edge import runtime
from ecg_lab.edge.runtime import ARCHITECTURES, FORMAT, ONNX_NAMES

log = logging.getLogger(__name__)

ONNX_ATOL = 1e-4  # ONNX Runtime against torch on the exported graphs
README = """# {name}: an ecg_lab export

- `{weights}`: the network's state dict (`torch.save(net.state_dict())`), {n_params:,} parameters
- `{config}`: architecture `{architecture}` and its hyperparameters, task `{task}`, sampling rate
  {fs:g} Hz, window {window} samples{class_list}
- {onnx_list}
- `ecg_lab/`: the runtime (`python -m ecg_lab.edge`): the edge package and the modules it imports
- `requirements.txt`: what the device needs (ecg_lab's `edge` extra)

`{config}` records the SHA-256 of itself and of each weights file; the runtime refuses a file that
does not match (export the checkpoint again rather than edit or mix these files).

Exported by ecg_lab {ecg_lab_version} (format {format}){source}. Run it from this folder:

    pip install -r requirements.txt         # ONNX Runtime, NumPy, SciPy
    python -m ecg_lab.edge {command} --export . --backend onnx
    pip install torch                       # for --backend torch, the default
    python -m ecg_lab.edge {command} --export .
"""


class Decoder(nn.Module):
    """A VAE's decoder as a module of its own: latent ``z`` → waveform."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z)


class Encoder(nn.Module):
    """A VAE's encoder as a module of its own: window → ``(mu, logvar)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.encode(x)


def onnx_graphs(net: nn.Module, config: dict[str, Any]) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """What goes to ONNX, by the ``ONNX_NAMES`` key: the module and an example input (batch 2)."""
    if config["task"] == "classification":
        channels = int(config["hyperparameters"].get("in_channels", 1))
        return {"classification": (net, torch.randn(2, channels, int(config["window"])))}
    window = torch.randn(2, net.in_channels, net.seq_len)
    return {"generation": (Decoder(net), torch.randn(2, net.latent_dim)), "encoder": (Encoder(net), window)}


def write_onnx(
    module: nn.Module, example: torch.Tensor, names: tuple[list[str], list[str]], path: Path
) -> float:
    """Export ``module`` (dynamic batch) with the dynamo exporter, check ONNX Runtime against torch on
    another batch size and return the largest absolute difference."""
    module = module.eval()
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)  # progress chatter of the exporter and its graph passes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                input_names=names[0],
                output_names=names[1],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
            )
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    program.save(path, external_data=False)
    return check_onnx(module, example, names[0][0], path)


def check_onnx(module: nn.Module, example: torch.Tensor, input_name: str, path: Path) -> float:
    """ONNX Runtime on ``path`` against torch on another batch size (3); returns the largest absolute
    difference, raises RuntimeError beyond ``ONNX_ATOL``."""
    x = torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    got = runtime.onnx_session(path, threads=1).run(None, {input_name: x.numpy()})
    with torch.no_grad():
        want = module(x)
    want = want if isinstance(want, tuple) else (want,)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))
    if not diff <= ONNX_ATOL:
        raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {diff:.3g} (> {ONNX_ATOL})")
    return diff


def edge_config(model: Any, stored: DictConfig, name: str, weights: str) -> dict[str, Any]:
    """The JSON an edge device rebuilds the network from."""
    net_cfg = OmegaConf.to_container(stored.model.net, resolve=True)
    architecture = str(net_cfg.pop("_target_")).rsplit(".", 1)[-1]  # type: ignore[union-attr]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"model.net {architecture} cannot be exported; known: {sorted(ARCHITECTURES)}")
    data = OmegaConf.to_container(stored.data, resolve=True)
    config: dict[str, Any] = {
        "format": FORMAT,
        "ecg_lab_version": ecg_lab.__version__,
        "name": name,
        "architecture": architecture,
        "hyperparameters": net_cfg,
        "weights": weights,
        "task": model.TASK,
        "fs": float(data["fs"]),  # type: ignore[index]
        "n_params": model.n_params,
    }
    if model.TASK == "classification":
        preprocess = {k: v for k, v in data["preprocess"].items() if k != "_target_"}  # type: ignore[index]
        config |= {"classes": list(model.classes), "window": preprocess["window"], "preprocess": preprocess}
        if getattr(model, "calibration", None):  # fitted on validation; the runtime's classify applies it
            config["calibration"] = model.calibration
    else:
        config |= {"window": int(data["window"]), "input": data["input"]}  # type: ignore[index]
    return config


PACKAGE_DIR = Path(ecg_lab.__file__).parent
DEVICE_ENTRY = "edge/__main__.py"


def _module_file(dotted: str) -> Path | None:
    """The file of an ``ecg_lab.*`` module or package, if it is one."""
    rel = Path(*dotted.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel.with_suffix(".py"), PACKAGE_DIR / rel / "__init__.py"):
        if str(rel) != "." and candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """The ``ecg_lab.*`` modules a file imports (anywhere in it, also inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ecg_lab"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "ecg_lab":
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}  # submodules imported by name
    return found


def runtime_files() -> list[str]:
    """Package-relative paths of the files ``python -m ecg_lab.edge`` needs: its entry point, every
    ``ecg_lab`` module it imports, transitively, and the ``__init__.py`` of each package on the way."""
    todo, seen = [PACKAGE_DIR / DEVICE_ENTRY], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for parent in path.relative_to(PACKAGE_DIR).parents:
            todo.append(PACKAGE_DIR / parent / "__init__.py")
        todo += [f for m in _imported_modules(path) if (f := _module_file(m)) is not None]
    return sorted(str(p.relative_to(PACKAGE_DIR)) for p in seen)


def edge_requirements() -> list[str]:
    """What a device needs: the ``edge`` extra of ecg_lab's ``pyproject.toml``, from the installed
    package's metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("ecg_lab") or []
    except PackageNotFoundError:
        declared = []
    edge = [r.split(";")[0].strip() for r in declared if re.search(r"""extra\s*==\s*["']edge["']""", r)]
    if not edge:
        raise RuntimeError(
            "the installed ecg_lab declares no `edge` extra; reinstall it from the repository "
            "(make venv, or pip install -e .)"
        )
    return edge


def copy_runtime(out: Path) -> list[str]:
    """The edge package and what it imports, into ``out/ecg_lab``; returns the files copied."""
    files = runtime_files()
    for rel in files:
        (out / "ecg_lab" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / rel, out / "ecg_lab" / rel)
    return files


def source_of(checkpoint: str | Path | None) -> dict[str, str]:
    """The config keys naming the checkpoint an export comes from: file name, absolute path, SHA-256."""
    if checkpoint is None:
        return {}
    path = Path(checkpoint)
    return {
        "source_checkpoint": path.name,
        "source_checkpoint_path": str(path.resolve()),
        "source_checkpoint_sha256": runtime.sha256_file(path),
    }


def _held_exports(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The export configs in ``out``; FileExistsError when it holds other files and no export."""
    held = []
    for path in sorted(out.glob("*_config.json")):
        try:
            config = json.loads(path.read_text())
        except ValueError:
            config = None
        if isinstance(config, dict) and "format" in config:
            held.append((path, config))
    if not held and any(out.iterdir()):
        raise FileExistsError(
            f"out_dir={out} holds files that are not an ecg_lab export; give a new or empty folder"
        )
    return held


def _same_source(held: dict[str, Any], source: dict[str, str]) -> bool:
    """Whether an export's recorded checkpoint is ``source`` (by SHA-256; by path for exports before
    format 3, which do not record it)."""
    if not source:
        return False
    if "source_checkpoint_sha256" in held:
        return held["source_checkpoint_sha256"] == source["source_checkpoint_sha256"]
    return held.get("source_checkpoint_path") == source["source_checkpoint_path"]


def check_target(out: Path, source: dict[str, str], overwrite: bool = False) -> None:
    """Refuse an ``out`` that is a file, holds files that are not an export, or holds an export of
    another checkpoint (unless ``overwrite``)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"out_dir={out} is a file; give a folder")
    held = _held_exports(out)
    others = [(p, c) for p, c in held if not _same_source(c, source)]
    if others and not overwrite:
        path, config = others[0]
        of = config.get("source_checkpoint_path") or "an unrecorded checkpoint"
        raise FileExistsError(
            f"{out} already holds another export ({path.name}, of {of}); pass overwrite=true to replace it, "
            "or give another folder with out_dir=DIR"
        )


def move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished export ``staging`` to ``out``; a previous ``out`` is set aside first and
    removed once the new one is in place (put back if the rename fails)."""
    if not out.exists():
        staging.rename(out)
        return
    old = staging.with_name(staging.name + ".old")
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)


def export_model(
    model: Any,
    stored: DictConfig,
    out: Path,
    name: str,
    source_checkpoint: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the export folder of a LightningModule and the config it was built from, atomically (see
    the module's docstring); returns the export's config (which names ``source_checkpoint``, when
    given). ``out`` may hold an export of the same checkpoint; of another only with ``overwrite``."""
    out = Path(out)
    source = source_of(source_checkpoint)
    check_target(out, source, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out.parent, f".{out.name}.tmp-")  # left by exports that were killed
    staging = make_build_dir(out.parent, out.name)
    try:
        config = write_export(model, stored, staging, name, source)
        runtime.check_export(staging)
        move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return config


def write_export(
    model: Any, stored: DictConfig, out: Path, name: str, source: dict[str, str]
) -> dict[str, Any]:
    """Write the files of the export into the folder ``out``; returns the export's config."""
    config = edge_config(model, stored, name, f"{name}_weights.pth") | source
    net = model.net.cpu().eval()
    for key, (module, example) in onnx_graphs(net, config).items():
        suffix = "_encoder" if key == "encoder" else ""
        config[f"onnx{suffix}"] = f"{name}{suffix}.onnx"
        diff = write_onnx(module, example, ONNX_NAMES[key], out / f"{name}{suffix}.onnx")
        log.info("%s: ONNX Runtime agrees with torch to %.2g", f"{name}{suffix}.onnx", diff)
    torch.save(net.state_dict(), out / config["weights"])
    copy_runtime(out)
    requirements = edge_requirements()
    (out / "requirements.txt").write_text(
        "# ONNX Runtime backend; add torch for --backend torch, matplotlib for --png\n"
        + "".join(f"{r}\n" for r in requirements)
    )
    config = with_checksums(config, out)
    write_json(out / f"{name}_config.json", config)
    write_readme(out, config)
    return config


def with_checksums(config: dict[str, Any], out: Path) -> dict[str, Any]:
    """``config`` as its JSON reads back, plus the SHA-256 of its weights files (in ``out``) and of
    itself (:func:`ecg_lab.edge.runtime.config_checksum`)."""
    config = json.loads(json.dumps(config, default=float))
    files = {config[k]: runtime.sha256_file(out / config[k]) for k in runtime.WEIGHT_KEYS if k in config}
    return config | {runtime.CHECKSUMS: {"config": runtime.config_checksum(config), "files": files}}


def write_readme(out: Path, config: dict[str, Any]) -> None:
    """The export's README: its files and how to run it."""
    name = config["name"]
    if config["task"] == "generation":
        command = "generate --n 10 --out synth.csv"
        onnx_list = f"`{name}.onnx`: the decoder (z → ECG); `{name}_encoder.onnx`: window → mu, logvar"
    else:
        command = "classify --record A00002.mat"
        onnx_list = f"`{name}.onnx`: the network (window → logits)"
    class_list = f", classes {config['classes']}" if "classes" in config else ""
    source = f" from `{config['source_checkpoint']}`" if "source_checkpoint" in config else ""
    (out / "README.md").write_text(
        README.format(
            source=source,
            config=f"{name}_config.json",
            command=command,
            class_list=class_list,
            onnx_list=onnx_list,
            **config,
        )
    )
