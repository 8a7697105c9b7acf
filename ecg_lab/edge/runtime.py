"""The edge runtime: run an exported network on a CPU without the training stack.

An export folder (``python -m ecg_lab.export`` / ``make pi-export``) holds ``<name>_weights.pth``
(the bare network's state dict), ``<name>_config.json`` (format version, ecg_lab version, source
checkpoint and its SHA-256, architecture, its hyperparameters, classes, sampling rate, window,
preprocessing, a classifier's calibration when one was fitted, and the SHA-256 of itself and of each
weights file), ``<name>.onnx`` and a copy of this package with what it imports (``ecg_lab/``), so the
folder runs on its own. An ensemble's export (format 4 on) lists its ``members`` in the config, each
with its architecture, hyperparameters, source checkpoint and files (``<name>_<i>_weights.pth``,
``<name>_<i>.onnx``); a window's probabilities are the mean of the members' softmax probabilities::

    python -m ecg_lab.edge generate --export DIR --n 10 --out synth.csv [--png]
    python -m ecg_lab.edge classify --export DIR --record A00002.mat [--record ...] [--fs HZ]
        [--predictions OUT.csv [--reference REFERENCE.csv]]

The runtime checks the folder before it runs it: the config's keys, the config against its recorded
checksum, and each weights file it loads against its own; a file that does not match is named, with
the advice to export again. A recording at another rate than the export's is resampled to it.

Two backends behind one NumPy interface (:class:`EdgeModel`): ``torch`` (CPU torch + NumPy: rebuild
the network from the JSON, ``load_state_dict`` of the weights with ``weights_only=True``, ``eval()``)
and ``onnx`` (ONNX Runtime + NumPy; no torch at all). Classifying a recording also takes SciPy (the
training band-pass, resampling and MATLAB files); ``--png`` takes matplotlib. Nothing here imports
Lightning, Hydra, OmegaConf, wandb or NeuroKit2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecg_lab.data.records import BadRecordError, Record

if TYPE_CHECKING:
    from torch import nn

    from ecg_lab.data.physionet2017 import Header

#: the network classes an export may name
ARCHITECTURES = ("CRNN", "LSTMVAE")
#: the export format this version writes (4: a classifier ensemble may list its ``members``), and the
#: ones its runtime reads
FORMAT = 4
READABLE_FORMATS = (1, 2, 3, 4)
BACKENDS = ("torch", "onnx")
#: ONNX graph inputs and outputs: classifier window → logits; VAE decoder z → ecg (encoder: window →
#: mu, logvar)
ONNX_NAMES = {
    "classification": (["window"], ["logits"]),
    "generation": (["z"], ["ecg"]),
    "encoder": (["window"], ["mu", "logvar"]),
}
#: the config key of the checksums (``{"config": hex, "files": {file name: hex}}``), from format 3 on
CHECKSUMS = "sha256"
CHECKSUMS_FROM = 3
#: keys every export's config holds, and those its task adds
REQUIRED_KEYS = ("format", "name", "architecture", "hyperparameters", "weights", "task", "fs", "window")
TASK_KEYS: dict[str, tuple[str, ...]] = {"classification": ("classes", "preprocess"), "generation": ()}
#: keys of each network: at the top of a single network's config, in each of an ensemble's ``members``
MEMBER_KEYS = ("architecture", "hyperparameters", "weights")
#: the keys naming weights files (state dict, ONNX graphs), each with its checksum from format 3 on
WEIGHT_KEYS = ("weights", "onnx", "onnx_encoder")
#: the methods of a classifier's calibration (config key ``calibration``: method and one value per class)
CALIBRATIONS = ("prior", "thresholds")
#: keys the runtime adds to a config it has read (not part of its checksum)
RUNTIME_KEYS = ("export_dir",)
REEXPORT = (
    "export the checkpoint again (`make pi-export CKPT=...` or `python -m ecg_lab.export ckpt_path=...`)"
)
RECORDING_HINT = "give a PhysioNet 2017 .mat (with its .hea) or a CSV of mV values, one per line"


def one_line(err: BaseException | str) -> str:
    """An error's message on one line."""
    return " ".join(str(err).split())


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def config_checksum(config: dict[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys, no spaces), less its checksums and the keys
    the runtime adds."""
    fields = {k: v for k, v in config.items() if k not in (CHECKSUMS, *RUNTIME_KEYS)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _require(config: dict[str, Any], path: str | Path, keys: Sequence[str]) -> None:
    missing = [repr(k) for k in keys if k not in config]
    if missing:
        raise ValueError(f"{path}: missing key {', '.join(missing)}; it was edited or damaged: {REEXPORT}")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({one_line(err)}); {REEXPORT}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object; {REEXPORT}")
    return config


def check_config(config: dict[str, Any], path: Path) -> None:
    """Refuse a config this runtime cannot read: a missing key, an unknown format, task or architecture,
    or (format 3 on) contents that do not match the checksum the export recorded."""
    _require(config, path, ["format"])
    if config["format"] not in READABLE_FORMATS:
        raise ValueError(
            f"{path}: export format {config['format']!r} (written by ecg_lab "
            f"{config.get('ecg_lab_version', 'unknown')}) is not one this runtime reads "
            f"({', '.join(map(str, READABLE_FORMATS))}); run the runtime copied into that export folder, "
            "or export the checkpoint again with this version"
        )
    checked = config["format"] >= CHECKSUMS_FROM
    shared = [k for k in REQUIRED_KEYS if k not in MEMBER_KEYS] if "members" in config else REQUIRED_KEYS
    keys = [*shared, *TASK_KEYS.get(config.get("task"), ())]
    _require(config, path, [*keys, CHECKSUMS] if checked else keys)
    if config["task"] not in TASK_KEYS:
        raise ValueError(f"{path}: task {config['task']!r} is not one of {sorted(TASK_KEYS)}; {REEXPORT}")
    _check_members(config, path)
    for network in networks(config):
        where = f"{path} ({_member_label(network)})" if "member" in network else path
        _require(network, where, MEMBER_KEYS)
        if network["architecture"] not in ARCHITECTURES:
            raise ValueError(
                f"{where}: architecture {network['architecture']!r} is not one of {sorted(ARCHITECTURES)}"
            )
    _check_calibration(config, path)
    if checked and (config[CHECKSUMS] or {}).get("config") != config_checksum(config):
        raise ValueError(
            f"{path}: does not match the sha256 the export recorded for it (edited after the export?); "
            f"{REEXPORT}"
        )


def _check_members(config: dict[str, Any], path: Path) -> None:
    """Refuse ``members`` that are not a non-empty list of objects, or members of a task other than
    classification (an ensemble averages probabilities)."""
    if "members" not in config:
        return
    members = config["members"]
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise ValueError(f"{path}: 'members' is not a list of networks; it was edited or damaged: {REEXPORT}")
    if config["task"] != "classification":
        raise ValueError(f"{path}: a {config['task']} export lists members (only classifiers do); {REEXPORT}")


def networks(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The export's networks, each as a config of its own: an ensemble's members (the shared keys, the
    member's own and ``member``, its number from 1), or the export itself."""
    if "members" not in config:
        return [config]
    return [config | member | {"member": i} for i, member in enumerate(config["members"], 1)]


def _member_label(network: dict[str, Any]) -> str:
    return f"member {network['member']}"


def _check_calibration(config: dict[str, Any], path: Path) -> None:
    """Refuse a classifier's calibration of an unknown method or with a value count not its classes'."""
    calibration = config.get("calibration")
    if calibration is None:
        return
    if (
        not isinstance(calibration, dict)
        or calibration.get("method") not in CALIBRATIONS
        or len(calibration.get("values") or []) != len(config.get("classes") or [])
    ):
        raise ValueError(
            f"{path}: 'calibration' is not a {' or '.join(CALIBRATIONS)} calibration with one value per "
            f"class; it was edited or damaged: {REEXPORT}"
        )


def read_config(export_dir: str | Path) -> dict[str, Any]:
    """The export's config, checked (:func:`check_config`), with ``export_dir`` added."""
    export_dir = Path(export_dir)
    configs = sorted(export_dir.glob("*_config.json"))
    if len(configs) != 1:
        raise FileNotFoundError(
            f"{export_dir}: expected one *_config.json, found {len(configs)}; "
            "make one with `make pi-export CKPT=...` or `python -m ecg_lab.export ckpt_path=...`"
        )
    config = _load_json(configs[0])
    check_config(config, configs[0])
    return config | {"export_dir": str(export_dir)}


def _file(config: dict[str, Any], key: str) -> Path:
    """The export's file named by ``key``, checked: there, not empty and (format 3 on) matching the
    sha256 the config records for it."""
    config_path = Path(config["export_dir"]) / f"{config['name']}_config.json"
    _require(config, config_path, [key])
    path = Path(config["export_dir"]) / config[key]
    if not path.is_file():
        named = f"{_member_label(config)}'s {key!r}" if "member" in config else repr(key)
        raise FileNotFoundError(
            f"{path}: the file named by {named} in {config_path.name} is missing; "
            "copy the whole export folder"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes); copy the whole export folder again, or {REEXPORT}")
    if config["format"] >= CHECKSUMS_FROM:
        recorded = ((config[CHECKSUMS] or {}).get("files") or {}).get(config[key])
        if recorded != sha256_file(path):
            raise ValueError(
                f"{path}: does not match the sha256 {config_path.name} records for it (truncated, damaged "
                f"or from another export); {REEXPORT}"
            )
    return path


def check_export(export_dir: str | Path) -> dict[str, Any]:
    """Read and check an export folder, every weights file it names included; returns its config."""
    config = read_config(export_dir)
    for network in networks(config):
        for key in WEIGHT_KEYS:
            if key in network:
                _file(network, key)
    return config


def weight_files(config: dict[str, Any]) -> list[str]:
    """The names of the weights files of every network of the export (state dicts, ONNX graphs)."""
    return [network[key] for network in networks(config) for key in WEIGHT_KEYS if key in network]


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
    """Rebuild the exported network, load its state dict (``weights_only=True``), ``eval()``; an
    ensemble's export holds several: :class:`EdgeModel` runs those."""
    config = read_config(export_dir)
    if "members" in config:
        n = len(config["members"])
        raise ValueError(f"{export_dir} holds an ensemble of {n} networks; run it with EdgeModel")
    return load_network(config), config


def load_network(config: dict[str, Any]) -> nn.Module:
    """One network of a read config (:func:`networks`): rebuilt, its state dict loaded
    (``weights_only=True``), ``eval()``."""
    import torch

    path = _file(config, "weights")
    net = build(config)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a state dict of this network ({one_line(err)}); {REEXPORT}") from None
    return net.eval()


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session; ``threads`` sets its intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises one exception class per status code
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({one_line(err)}); {REEXPORT}") from None


class EdgeModel:
    """An exported network, or an ensemble's members, on the ``torch`` or ``onnx`` backend, with NumPy in
    and out."""

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
        self.config = read_config(export_dir)
        if backend == "torch":
            self.nets = [load_network(network) for network in networks(self.config)]
        else:
            self.sessions = [onnx_session(_file(n, "onnx"), threads) for n in networks(self.config)]

    @property
    def task(self) -> str:
        return str(self.config["task"])

    def _run(self, method: str, x: np.ndarray) -> list[np.ndarray]:
        """Each network's first output for ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.backend == "onnx":
            return [s.run(None, {ONNX_NAMES[self.task][0][0]: x})[0] for s in self.sessions]
        import torch

        with torch.inference_mode():
            return [getattr(net, method)(torch.from_numpy(x)).numpy() for net in self.nets]

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Class logits ``(n, classes)`` of preprocessed windows ``(n, samples)`` or ``(n, 1, samples)``;
        an ensemble's are :func:`mean_probability_logits` of its members'."""
        windows = np.asarray(windows)
        logits = self._run("forward", windows[:, None] if windows.ndim == 2 else windows)
        return logits[0] if len(logits) == 1 else mean_probability_logits(logits)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """ECGs ``(n, samples)`` decoded from latent vectors ``z`` ``(n, latent_dim)``."""
        return self._run("decode", z)[0][:, 0]


def latents(config: dict[str, Any], n: int, seed: int = 0) -> np.ndarray:
    """``n`` latent vectors drawn with NumPy, so that both backends decode the same ones: from the
    export's ``latent_density`` (a Gaussian mixture fitted to the training codes, ``model.sampler.kind=gmm``)
    when it has one, else from N(0, I)."""
    if n < 1:
        raise ValueError(f"--n must be positive, got {n}")
    dim = int(config["hyperparameters"]["latent_dim"])
    rng = np.random.default_rng(seed)
    density = config.get("latent_density")
    if not density:
        return rng.standard_normal((n, dim), dtype=np.float32)
    weights = np.asarray(density["weights"], dtype=np.float64)
    means = np.asarray(density["means"], dtype=np.float32)
    tril = np.asarray(density["scale_tril"], dtype=np.float32)
    k = rng.choice(len(weights), size=n, p=weights / weights.sum())
    eps = rng.standard_normal((n, dim), dtype=np.float32)
    return (means[k] + np.einsum("nij,nj->ni", tril[k], eps)).astype(np.float32)


def generate(model: EdgeModel, n: int, seed: int = 0) -> np.ndarray:
    """``n`` ECGs ``(n, samples)`` decoded from latents drawn with ``seed`` (see :func:`latents`)."""
    return model.decode(latents(model.config, n, seed))


def read_recording(path: str | Path, fs: float | None = None) -> tuple[np.ndarray, float | None]:
    """A single-lead recording in mV and its sampling rate. A PhysioNet 2017 ``.mat`` (``val``) is
    scaled and timed by the ``.hea`` beside it (without one: 1000 counts per mV, rate ``fs``); a CSV of
    mV values (one column, or the last of several; a header line is skipped) is at ``fs``. The rate is
    None when neither the file nor ``fs`` states one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recording ({RECORDING_HINT})")
    if path.stat().st_size == 0:
        raise BadRecordError(path, f"empty file (0 bytes); {RECORDING_HINT}")
    if path.suffix.lower() == ".mat":
        return _read_mat(path, fs)
    return _read_csv(path), fs


def _read_mat(path: Path, fs: float | None) -> tuple[np.ndarray, float | None]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # SciPy raises MatReadError, ValueError or IndexError for a damaged file
        problem = f"not a readable MATLAB file ({one_line(err)}); {RECORDING_HINT}"
        raise BadRecordError(path, problem) from None
    if "val" not in mat:
        held = ", ".join(k for k in mat if not k.startswith("__")) or "no variables"
        raise BadRecordError(path, f"holds no `val` variable (it holds {held}); {RECORDING_HINT}")
    counts = np.asarray(mat["val"]).ravel()
    if counts.size == 0:
        raise BadRecordError(path, f"`val` holds no samples; {RECORDING_HINT}")
    header_path = path.with_suffix(".hea")
    if not header_path.is_file():
        return counts.astype(np.float32) / np.float32(1000.0), fs  # the PhysioNet 2017 gain
    header = _read_header(header_path, counts.size)
    if fs is not None and fs != header.fs:
        problem = f"--fs {fs:g} disagrees with {header_path.name} ({header.fs:g} Hz); drop --fs or fix it"
        raise BadRecordError(path, problem)
    return ((counts.astype(np.float32) - header.baseline) / header.gain).astype(np.float32), header.fs


def _read_header(path: Path, n_samples: int) -> Header:
    """The WFDB header beside a ``.mat``, read as training reads it, checked against the signal."""
    from ecg_lab.data.physionet2017 import read_header

    try:
        header = read_header(path)
    except BadRecordError as err:
        raise BadRecordError(path, f"{err.problem}; fix it, or remove it and pass --fs") from None
    if header.n_samples != n_samples:
        raise BadRecordError(
            path,
            f"says {header.n_samples} samples but {path.with_suffix('.mat').name} holds {n_samples}; "
            "give the recording's own .hea, or remove it and pass --fs",
        )
    return header


def _read_csv(path: Path) -> np.ndarray:
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise BadRecordError(path, f"not a text file; {RECORDING_HINT}") from None
    rows = [line.split(",")[-1].strip() for line in lines if line.strip()]
    try:
        float(rows[0])
    except (IndexError, ValueError):
        rows = rows[1:]  # a header
    if not rows:
        raise BadRecordError(path, f"holds no samples; {RECORDING_HINT}")
    try:
        return np.asarray([float(v) for v in rows], dtype=np.float32)
    except ValueError as err:
        raise BadRecordError(path, f"not a CSV of mV values ({err}); {RECORDING_HINT}") from None


def windows_of(
    config: dict[str, Any], signal: np.ndarray, fs: float | None = None, where: str | Path = "recording"
) -> np.ndarray:
    """The recording's windows ``(n, window)`` at the export's rate, preprocessed as in training
    (band-pass, z-score); a recording at another rate ``fs`` is resampled to it first."""
    from ecg_lab.edge.preprocess import Preprocessing, resample

    rate = float(config["fs"])
    x = np.asarray(signal, dtype=np.float32)
    if fs is not None and float(fs) != rate:
        x = resample(x, float(fs), rate).astype(np.float32)
    prep = Preprocessing(**config["preprocess"])
    if prep.output_size(x.size, rate) < prep.window:
        raise BadRecordError(
            where,
            f"{x.size} samples at {rate:g} Hz, shorter than the export's window of {prep.window}; "
            f"give a recording of at least {prep.window / prep.rate(rate):g} s",
        )
    return prep.windows(prep.apply(Record(Path(where).stem, x, rate, "", str(where))))


def calibrated(probs: np.ndarray, calibration: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Recording probabilities ``(n, classes)`` under a fitted calibration, and each recording's class
    index: ``prior`` multiplies them by ``exp(values)`` and renormalises (class: their argmax);
    ``thresholds`` keeps them (class: argmax of ``probs - values``); None: unchanged, their argmax.
    Fitted by :mod:`ecg_lab.classification.calibration`, which describes both."""
    if not calibration:
        return probs, probs.argmax(1)
    values = np.asarray(calibration["values"], dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if calibration["method"] == "prior":
        weighted = p * np.exp(values)
        p = weighted / weighted.sum(1, keepdims=True)
        return p, p.argmax(1)
    return p, (p - values).argmax(1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mean_probability_logits(logits: Sequence[np.ndarray]) -> np.ndarray:
    """The log of the mean of the members' softmax probabilities, so that a softmax over it gives that
    mean back (as ``ecg_lab.classification.ensemble.MeanProbabilities`` does for ``ecg_lab.eval``)."""
    mean = np.mean([softmax(np.asarray(x, dtype=np.float64)) for x in logits], axis=0)
    with np.errstate(divide="ignore"):  # a probability below float64's range: log 0 = -inf, softmax 0
        return np.log(mean).astype(np.float32)


def classify(
    model: EdgeModel, signal: np.ndarray, fs: float | None = None, where: str | Path = "recording"
) -> dict[str, Any]:
    """The recording's class (mean of its windows' probabilities, under the export's calibration when
    it has one: :func:`calibrated`), its probabilities and window count; ``fs``: its rate, when not the
    export's."""
    return decide(model.config, window_probabilities(model, signal, fs, where))


def window_probabilities(
    model: EdgeModel, signal: np.ndarray, fs: float | None = None, where: str | Path = "recording"
) -> np.ndarray:
    """The class probabilities ``(windows, classes)`` of each window of the recording."""
    return softmax(model.logits(windows_of(model.config, signal, fs, where)))


def decide(config: dict[str, Any], probs: np.ndarray) -> dict[str, Any]:
    """:func:`classify`'s result from a recording's window probabilities ``probs``."""
    calibration = config.get("calibration")
    mean, pred = calibrated(probs.mean(0, keepdims=True), calibration)
    classes = config["classes"]
    result = {
        "class": classes[int(pred[0])],
        "probabilities": dict(zip(classes, mean[0].astype(np.float64).round(4).tolist(), strict=True)),
        "windows": int(len(probs)),
    }
    return result | ({"calibration": calibration["method"]} if calibration else {})


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


def classify_file(model: EdgeModel, path: str | Path, fs: float | None = None) -> dict[str, Any]:
    """:func:`classify` the recording at ``path``; a rate neither it nor ``fs`` states is taken to be
    the export's, with a note on stderr."""
    return classify(model, *recording_at_rate(model, path, fs), path)


def recording_at_rate(
    model: EdgeModel, path: str | Path, fs: float | None = None
) -> tuple[np.ndarray, float]:
    """The recording at ``path`` and its rate (read, ``fs``, or else the export's, with a note on stderr)."""
    signal, stated = read_recording(path, fs)
    if stated is None:
        stated = float(model.config["fs"])
        print(
            f"{path}: no sampling rate stated (--fs HZ for a CSV, a .hea beside a .mat); "
            f"assuming the export's {stated:g} Hz",
            file=sys.stderr,
        )
    return signal, stated


def check_out(path: str | Path, flag: str = "--out", example: str = "synth.csv") -> None:
    """Refuse an output file (``flag``) that is a folder or lies in a missing one."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give a file name, e.g. {flag} {path / example}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{flag} {path}: no folder {path.parent}; create it or give another path")


def sampling_rate(text: str) -> float:
    """``--fs``: a positive rate in Hz."""
    try:
        fs = float(text)
    except ValueError:
        fs = float("nan")
    if not fs > 0:
        raise argparse.ArgumentTypeError(f"must be a sampling rate in Hz (a positive number), got {text!r}")
    return fs


def main(argv: Sequence[str] | None = None) -> None:
    """``generate`` or ``classify`` with an export folder; bad input ends it with one line on stderr."""
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
    c.add_argument(
        "--record",
        required=True,
        action="append",
        help="a PhysioNet 2017 .mat (+ .hea) or a CSV of mV values; repeat it for more (a JSON line each)",
    )
    c.add_argument(
        "--predictions",
        default=None,
        metavar="OUT.csv",
        help="also write the recordings' predictions there and their windows' to window_OUT.csv beside it",
    )
    c.add_argument(
        "--reference", default=None, help="a REFERENCE.csv (record,label) giving the true labels for them"
    )
    c.add_argument(
        "--fs",
        type=sampling_rate,
        default=None,
        help="the CSV's sampling rate in Hz (a .mat's is read from its .hea); default: the export's",
    )
    args = p.parse_args(argv)
    try:
        run(args)
    except (OSError, ValueError, ImportError) as err:  # bad input or a missing backend
        p.exit(2, f"{p.prog} {args.command}: error: {one_line(err)}\n")


def run(args: argparse.Namespace) -> None:
    """One parsed command."""
    want = "generation" if args.command == "generate" else "classification"
    if args.command == "generate":
        check_out(args.out)
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
        classify_records(model, args.record, args.fs, args.predictions, args.reference)


def classify_records(
    model: EdgeModel,
    paths: Sequence[str],
    fs: float | None = None,
    predictions: str | None = None,
    reference: str | None = None,
) -> None:
    """Print each recording's :func:`classify` result as one JSON line; with ``predictions``, also write
    the predictions tables (:mod:`ecg_lab.edge.predictions`), true labels from ``reference`` or unknown."""
    from ecg_lab.edge.predictions import recording_predictions, reference_labels

    if predictions is not None:
        check_out(predictions, "--predictions", "predictions.csv")
    labels = reference_labels(reference, model.config["classes"]) if reference else {}
    probs = []
    for path in paths:
        probs.append(window_probabilities(model, *recording_at_rate(model, path, fs), path))
        print(json.dumps(decide(model.config, probs[-1])), flush=True)
    if predictions is not None:
        records = [Path(p).stem for p in paths]
        targets = [labels.get(r, "") for r in records]
        written = recording_predictions(model.config, records, targets, probs).write(predictions)
        print(f"predictions written to {written[0]} and {written[1]}", file=sys.stderr)
