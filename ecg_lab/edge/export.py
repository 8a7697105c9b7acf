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

A list of checkpoints (an ensemble, :func:`export_ensemble`) gives one folder with each member's
``<name>_<i>_weights.pth`` and ``<name>_<i>.onnx`` (``i`` from 1), the members listed in the config
(``members``: architecture, hyperparameters, files, source checkpoint); the runtime averages their
softmax probabilities. Members' calibrations are left out, as ``ecg_lab.eval`` ignores them.

The folder is written next to the target under a temporary name, checked (ONNX Runtime against
torch, then read back as the runtime reads it) and only then renamed into place, so a failed or
interrupted export leaves the previous one as it was. An existing export is replaced only by an
export of the same checkpoint (of the same members, in any order), or with ``overwrite``.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import ecg_lab
from ecg_lab.app.outputs import write_json
from ecg_lab.classification.ensemble import ensemble_classifier
from ecg_lab.data.cache import make_build_dir, remove_stale_builds
from ecg_lab.edge import runtime
from ecg_lab.edge.runtime import ARCHITECTURES, FORMAT, MEMBER_KEYS, ONNX_NAMES

log = logging.getLogger(__name__)

ONNX_ATOL = 1e-4  # ONNX Runtime against torch on the exported graphs
README = """# {name}: an ecg_lab export

- {weights_list}
- `{config}`: {networks}, task `{task}`, sampling rate
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
        density = getattr(model, "latent_density", None)
        if density is not None and bool(density.fitted):  # model.sampler.kind=gmm: the runtime draws from it
            config["latent_density"] = density.as_dict()
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


def _recorded_sources(held: dict[str, Any]) -> list[dict[str, Any]]:
    """Where an export records its checkpoints: each member of an ensemble, or the export itself."""
    members = held.get("members")
    if isinstance(members, list):
        return [m for m in members if isinstance(m, dict)]
    return [held]


def _same_source(held: dict[str, Any], sources: Sequence[dict[str, str]]) -> bool:
    """Whether an export's recorded checkpoints are ``sources``, in any order (by SHA-256; by path for
    exports before format 3, which do not record it)."""
    recorded = _recorded_sources(held)
    if not sources or len(recorded) != len(sources):
        return False
    key = "source_checkpoint_sha256"
    if key not in recorded[0]:
        key = "source_checkpoint_path"
    return Counter(r.get(key) for r in recorded) == Counter(s[key] for s in sources)


def _described(held: dict[str, Any]) -> str:
    """An export's checkpoint(s), for a message."""
    paths = [r.get("source_checkpoint_path") or "an unrecorded checkpoint" for r in _recorded_sources(held)]
    return paths[0] if "members" not in held else f"an ensemble of {len(paths)}: {', '.join(paths)}"


def check_target(out: Path, sources: Sequence[dict[str, str]], overwrite: bool = False) -> None:
    """Refuse an ``out`` that is a file, holds files that are not an export, or holds an export of
    other checkpoints than ``sources`` (unless ``overwrite``)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"out_dir={out} is a file; give a folder")
    held = _held_exports(out)
    others = [(p, c) for p, c in held if not _same_source(c, sources)]
    if others and not overwrite:
        path, config = others[0]
        of = _described(config)
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
    source = source_of(source_checkpoint)
    sources = [source] if source else []

    def write(staging: Path) -> dict[str, Any]:
        return write_export(model, stored, staging, name, source)

    return _export(Path(out), sources, overwrite, write)


def export_ensemble(
    models: Sequence[Any],
    stored: Sequence[DictConfig],
    out: Path,
    name: str,
    source_checkpoints: Sequence[str | Path],
    overwrite: bool = False,
) -> dict[str, Any]:
    """:func:`export_model` for an ensemble of classifiers (``models``, each with its stored config,
    loaded from ``source_checkpoints``), which the caller has checked agree on classes and signal
    settings (``ecg_lab.export`` does, with ``ecg_lab.classification.ensemble.check_members_agree``);
    their calibrations are ignored with a warning, as ``ecg_lab.eval`` ignores them. One folder holds
    every member's files."""
    paths = [str(p) for p in source_checkpoints]
    for model, path in zip(models, paths, strict=True):
        if model.TASK != "classification":
            raise ValueError(
                f"ckpt_path member {path} holds a {model.TASK} model; an ensemble averages classifiers' "
                "probabilities: list classification checkpoints only"
            )
    ensemble = ensemble_classifier(models, paths)
    sources = [source_of(p) for p in paths]

    def write(staging: Path) -> dict[str, Any]:
        return write_ensemble(ensemble, models, stored, staging, name, sources)

    return _export(Path(out), sources, overwrite, write)


def _export(
    out: Path, sources: Sequence[dict[str, str]], overwrite: bool, write: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """Check ``out`` (:func:`check_target`), ``write`` the export into a temporary folder beside it,
    check that as the runtime reads it and move it into place; returns the export's config."""
    check_target(out, sources, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out.parent, f".{out.name}.tmp-")  # left by exports that were killed
    staging = make_build_dir(out.parent, out.name)
    try:
        config = write(staging)
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
    config |= write_network(model.net, config, out, name)
    return finish_export(config, out)


def write_ensemble(
    ensemble: Any,
    models: Sequence[Any],
    stored: Sequence[DictConfig],
    out: Path,
    name: str,
    sources: Sequence[dict[str, str]],
) -> dict[str, Any]:
    """Write an ensemble's export into the folder ``out``: the shared keys from ``ensemble`` (classes,
    signal settings, total parameters, no calibration), each member's network keys, files and source;
    returns the export's config."""
    shared = edge_config(ensemble, stored[0], name, "")
    config = {k: v for k, v in shared.items() if k not in MEMBER_KEYS}
    members = []
    for i, (model, member_stored, source) in enumerate(zip(models, stored, sources, strict=True), 1):
        prefix = f"{name}_{i}"
        own = edge_config(model, member_stored, name, f"{prefix}_weights.pth")
        member = {k: own[k] for k in (*MEMBER_KEYS, "n_params")} | source
        members.append(member | write_network(model.net, config | member, out, prefix))
    return finish_export(config | {"members": members}, out)


def write_network(net: nn.Module, config: dict[str, Any], out: Path, prefix: str) -> dict[str, str]:
    """Write a network's ONNX graphs (``<prefix>.onnx``, a VAE's ``<prefix>_encoder.onnx``), checked
    against torch, and its state dict (as ``config["weights"]``) into ``out``; returns the config keys
    naming the graphs."""
    net = net.cpu().eval()
    files = {}
    for key, (module, example) in onnx_graphs(net, config).items():
        suffix = "_encoder" if key == "encoder" else ""
        files[f"onnx{suffix}"] = f"{prefix}{suffix}.onnx"
        diff = write_onnx(module, example, ONNX_NAMES[key], out / f"{prefix}{suffix}.onnx")
        log.info("%s: ONNX Runtime agrees with torch to %.2g", f"{prefix}{suffix}.onnx", diff)
    torch.save(net.state_dict(), out / config["weights"])
    return files


def finish_export(config: dict[str, Any], out: Path) -> dict[str, Any]:
    """Add the runtime, its requirements, the checksummed config and the README to ``out``, which holds
    the weights files ``config`` names; returns the config as written."""
    copy_runtime(out)
    requirements = edge_requirements()
    (out / "requirements.txt").write_text(
        "# ONNX Runtime backend; add torch for --backend torch, matplotlib for --png\n"
        + "".join(f"{r}\n" for r in requirements)
    )
    config = with_checksums(config, out)
    write_json(out / f"{config['name']}_config.json", config)
    write_readme(out, config)
    return config


def with_checksums(config: dict[str, Any], out: Path) -> dict[str, Any]:
    """``config`` as its JSON reads back, plus the SHA-256 of its weights files (in ``out``) and of
    itself (:func:`ecg_lab.edge.runtime.config_checksum`)."""
    config = json.loads(json.dumps(config, default=float))
    files = {f: runtime.sha256_file(out / f) for f in runtime.weight_files(config)}
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
    files = {
        "weights_list": f"`{config.get('weights')}`: the network's state dict "
        f"(`torch.save(net.state_dict())`), {config['n_params']:,} parameters",
        "networks": f"architecture `{config.get('architecture')}` and its hyperparameters",
        "onnx_list": onnx_list,
        "source": f" from `{config['source_checkpoint']}`" if "source_checkpoint" in config else "",
    }
    (out / "README.md").write_text(
        README.format(
            config=f"{name}_config.json",
            command=command,
            class_list=f", classes {config['classes']}" if "classes" in config else "",
            **(files | _ensemble_files(config)),
            **config,
        )
    )


def _ensemble_files(config: dict[str, Any]) -> dict[str, str]:
    """The README's lines on the weights, networks, graphs and source of an ensemble's export (none for
    one network's)."""
    members = config.get("members")
    if not members:
        return {}
    weights = ", ".join(f"`{m['weights']}`" for m in members)
    graphs = ", ".join(f"`{m['onnx']}`" for m in members)
    return {
        "weights_list": f"{weights}: the state dicts of the ensemble's {len(members)} members, "
        f"{config['n_params']:,} parameters in all",
        "networks": "each member's architecture, hyperparameters and source checkpoint (`members`)",
        "onnx_list": f"{graphs}: the members' networks (window → logits); a window's probabilities are "
        "the mean of their softmax probabilities",
        "source": f" from {len(members)} checkpoints (`members` in `{config['name']}_config.json`)",
    }
