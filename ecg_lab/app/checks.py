"""Checks on a composed config that fail at start, before any data is read, each with one line naming
the config key: a value of a type the class its node instantiates does not take (or a known top-level
key does not), a ``ckpt_path`` that is no file, data, model and loss of different tasks, a generative
model's window that does not match the data's, and a window too short for the network. Evaluation
warns when the data shapes signals differently from training."""

from __future__ import annotations

import collections.abc as abc
import inspect
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import Any, Literal, Union

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from ecg_lab.app.checkpoints import checkpoint_file, checkpoint_paths
from ecg_lab.errors import ConfigError, first_line

log = logging.getLogger(__name__)

#: what to choose instead, per task and config group
SUGGESTIONS = {
    "classification": {
        "model": "cnn_lstm (or any of conf/model/ but lstm_vae)",
        "loss": "weighted_ce",
        "data": "synthetic or physionet2017",
        "augment": "default (or any of conf/augment/)",
    },
    "generation": {
        "model": "lstm_vae",
        "loss": "morph_mse",
        "data": "synthetic_normal, ptbxl, physionet2017_normal or normal_ecg",
        "augment": "none",
    },
}


def task_of(node: Any) -> str | None:
    """The task (``TASK`` attribute) of the class a config node instantiates, if it declares one."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return getattr(get_class(target), "TASK", None) if target else None


def choice(group: str, node: DictConfig) -> str:
    """The name the user chose for ``group`` (``data=ptbxl``), or the node's class when unknown."""
    try:
        name = HydraConfig.get().runtime.choices.get(group)
    except ValueError:  # no Hydra app running (tests composing configs by hand)
        name = None
    return str(name or str(node.get("_target_", "?")).rsplit(".", 1)[-1])


def check_overrides(cfg: DictConfig, ensemble: bool = False) -> None:
    """Every check a composed config gets before any data is read (ConfigError naming the key): value
    types, ``ckpt_path`` (a list of checkpoints only where ``ensemble``), and, where the config has
    both, data and model that fit together."""
    if cfg.get("model") is not None and cfg.get("data") is not None:
        # before the types: a group of the other task (loss=weighted_ce for the VAE) is named as such,
        # not by a key the experiment set for its own group; features=rr rather than a key it sets
        check_task_config(cfg)
        check_features(cfg)
    check_types(cfg)
    if cfg.get("ckpt_path"):
        paths = checkpoint_paths(cfg.ckpt_path)
        if not ensemble and (isinstance(cfg.ckpt_path, ListConfig) or len(paths) > 1):
            raise ConfigError(
                f"ckpt_path={paths} is a list; only python -m ecg_lab.eval takes a list (an ensemble's "
                "members): give one .ckpt file"
            )
        for path in paths:
            checkpoint_file(path)
    if cfg.get("model") is not None and cfg.get("data") is not None:
        check_model_fits_data(cfg)


def check_model_fits_data(cfg: DictConfig, ckpt_path: str | None = None) -> None:
    """Data, model and loss of one task, and a window the network runs on; ``ckpt_path``: the model
    comes from that checkpoint (evaluation)."""
    check_task_config(cfg, ckpt_path)
    check_features(cfg, ckpt_path)
    check_window(cfg, ckpt_path)


# -- per-recording features --------------------------------------------------------------------------
def features_width(data_cfg: DictConfig) -> int:
    """How many per-recording features ``data.features`` gives (its class's ``WIDTH``; 0 for none, or
    for a target that cannot be imported, which the type checks report)."""
    node = data_cfg.get("features") if isinstance(data_cfg, DictConfig) else None
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return 0
    try:
        return int(getattr(get_class(str(node._target_)), "WIDTH", 0))
    except Exception:
        return 0


def check_features(cfg: DictConfig, ckpt_path: str | None = None) -> None:
    """ConfigError when the data's per-recording features (``data.features``, set by ``features=rr``)
    are for another task than the model's, or their width is not the network's ``extra_features``."""
    net = cfg.model.get("net")
    width, extra = features_width(cfg.data), (net.get("extra_features") if net is not None else 0) or 0
    try:
        task = task_of(cfg.model)
    except Exception:  # a model target that cannot be imported: the type checks name it
        return
    if not isinstance(extra, int):
        return  # the type checks name the value
    owner = f"the network in ckpt_path={ckpt_path}" if ckpt_path else f"model={choice('model', cfg.model)}"
    if (width or extra) and task is not None and task != "classification":
        raise ConfigError(f"features=rr is for classifiers, but {owner} is a {task} model; use features=none")
    if width != extra:
        fix = (
            "evaluate on data with the features it was trained with (data.features)"
            if ckpt_path
            else "use features=rr (it sets both) or features=none"
        )
        raise ConfigError(
            f"data.features gives {width} features per recording, but {owner} takes "
            f"model.net.extra_features={extra}; {fix}"
        )


# -- tasks -------------------------------------------------------------------------------------------
def check_task_config(cfg: DictConfig, ckpt_path: str | None = None) -> None:
    """Raise ConfigError naming the config groups when data, model and loss do not fit together;
    ``ckpt_path``: the model is the one stored in that checkpoint."""
    model_task = task_of(cfg.model)
    if model_task is None:
        return
    model = choice("model", cfg.model)
    for group in ("loss", "data", "augment"):
        node = cfg.get(group)
        task = task_of(node)
        if task is not None and task != model_task:
            use = f"use {group}={SUGGESTIONS[model_task][group]}"
            if ckpt_path:
                raise ConfigError(
                    f"{group}={choice(group, node)} is for {task} but ckpt_path={ckpt_path} holds a "
                    f"{model_task} model; {use}, or a {task} checkpoint"
                )
            raise ConfigError(
                f"{group}={choice(group, node)} is for {task} but model={model} is a {model_task} model; "
                f"{use}, or model={SUGGESTIONS[task]['model']}"
            )
    if model_task == "generation":
        window, seq_len = cfg.data.get("window"), cfg.model.net.get("seq_len")
        if window is not None and seq_len is not None and int(window) != int(seq_len):
            raise ConfigError(
                f"data.window={window} does not fit model.net.seq_len={seq_len} "
                f"(data={choice('data', cfg.data)}, model={model}): the VAE reconstructs whole windows; "
                f"set data.window={seq_len} "
                f"or model.net.seq_len={window}"
            )


# -- windows -----------------------------------------------------------------------------------------
#: per task: the data key of the window, and the model.net key that must equal it (None: none must)
WINDOW_KEYS = {"classification": ("preprocess.window", None), "generation": ("window", "seq_len")}
#: the longest window probed when searching the shortest one a network runs on
PROBE_LIMIT = 1 << 17
#: networks built per window (their layers depend on it): windows 1..LINEAR_LIMIT are tried in turn
LINEAR_LIMIT = 1024


def check_window(cfg: DictConfig, ckpt_path: str | None = None) -> None:
    """Raise ConfigError naming the window key and the shortest window the network runs on, when the
    data's window is shorter; the network is probed with zeros on the CPU, before any data is read."""
    keys = WINDOW_KEYS.get(task_of(cfg.model) or "")
    if keys is None or cfg.model.get("net") is None:
        return
    data_key, follows = keys
    window = OmegaConf.select(cfg.data, data_key)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        return  # the data module names a window that is no positive int
    runs = network_probe(cfg.model.net, follows)
    if runs(window):
        return
    least = shortest_window(runs, window, monotone=follows is None)
    if least is None or least <= window:
        return  # not a matter of length: building the network says what is wrong
    owner = f"the network in ckpt_path={ckpt_path}" if ckpt_path else f"model={choice('model', cfg.model)}"
    also = f" (and model.net.{follows}, which must equal it)" if follows else ""
    raise ConfigError(
        f"data.{data_key}={window} is too short for {owner}: it needs windows of at least {least} "
        f"samples; set data.{data_key}{also} to at least {least}"
    )


def network_probe(net_cfg: DictConfig, follows: str | None) -> Callable[[int], bool]:
    """``runs(window)``: whether the network ``net_cfg`` builds (with ``follows`` set to the window) and
    takes a zero input of that length without error."""
    spec = OmegaConf.to_container(net_cfg, resolve=True)
    assert isinstance(spec, dict)
    channels = int(spec.get("in_channels") or 1)
    extra = int(spec.get("extra_features") or 0)  # per-recording features, zeros: only the window matters
    inputs = {"rr": torch.zeros(1, extra)} if extra else {}
    fixed = None if follows else _build(spec)

    def runs(window: int) -> bool:
        net = _build({**spec, follows: window}) if follows else fixed
        if net is None:
            return False
        try:
            with torch.no_grad():
                net(torch.zeros(1, channels, window), **inputs)
        except Exception:  # any failure means: not with this window
            return False
        return True

    return runs


def _build(spec: dict[str, Any]) -> torch.nn.Module | None:
    """The network of ``spec`` in eval mode, or None if it cannot be built."""
    try:
        return hydra.utils.instantiate(spec).eval()
    except Exception:  # the real build reports it with the constructor's message
        return None


def shortest_window(runs: Callable[[int], bool], window: int, monotone: bool) -> int | None:
    """The shortest window ``runs`` accepts (``window`` it refuses); None if none within the limits.

    ``monotone``: every window longer than an accepted one is accepted (a fixed conv/pool stack), so
    doubling and bisection find it; otherwise windows 1, 2, ... are tried in turn."""
    if not monotone:
        return next((w for w in range(1, LINEAR_LIMIT + 1) if runs(w)), None)
    refused, accepted = window, window * 2
    while not runs(accepted):
        refused, accepted = accepted, accepted * 2
        if accepted > PROBE_LIMIT:
            return None
    while accepted - refused > 1:
        middle = (refused + accepted) // 2
        refused, accepted = (refused, middle) if runs(middle) else (middle, accepted)
    return accepted


# -- types -------------------------------------------------------------------------------------------
#: top-level keys of the apps' configs and the types they take
TOP_LEVEL_TYPES: dict[str, Any] = {
    "seed": int,
    "threads": int | None,
    "train": bool,
    "test": bool,
    "n": int,
    "hist_bins": int,
    "median_bins": int,
    "n_records": int,
    "splits": list[str],
}
#: Hydra's own keys of a node, not parameters of its target
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
SEQUENCES = (list, tuple, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection)
MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
UNIONS = (Union, types.UnionType)
UNKNOWN = object()  # an annotation that cannot be evaluated: any value passes


def check_types(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key for the first value of a type its node's ``_target_`` does not
    take (by the signature's annotation, else the default's type), or a known top-level key does not."""
    for key, wanted in TOP_LEVEL_TYPES.items():
        value = _plain(cfg, key)
        if value is not UNKNOWN and not fits(wanted, value):
            raise type_error(key, value, wanted, None)
    for path, node in target_nodes(cfg):
        check_node(path, node)


def target_nodes(node: DictConfig | ListConfig, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every node under ``node`` that names a ``_target_``, with its dotted key."""
    if isinstance(node, DictConfig) and "_target_" in node:
        yield path, node
    keys: list[Any] = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
    for key in keys:
        if key == "hydra" and not path:
            continue
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            continue
        child = node[key]
        if isinstance(child, (DictConfig, ListConfig)):
            yield from target_nodes(child, f"{path}.{key}" if path else str(key))


def check_node(path: str, node: DictConfig) -> None:
    """Check each key of a ``_target_`` node against the target's signature."""
    target = str(node._target_)
    try:
        obj = get_object(target)
    except Exception as err:
        raise ConfigError(
            f"{path}._target_={target} cannot be imported ({first_line(err)}); check its spelling"
        ) from err
    params = parameters(obj)
    if params is None:
        return
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in node:
        key = str(key)
        if key in HYDRA_KEYS:
            continue
        full = f"{path}.{key}"
        if key not in params:
            if open_ended:
                continue
            raise ConfigError(f"{full} is not a parameter of {target}; remove it or check its spelling")
        wanted = expected_type(params[key], obj)
        value = _plain(node, key)
        if wanted is not UNKNOWN and value is not UNKNOWN and not fits(wanted, value):
            raise type_error(full, value, wanted, target)


def parameters(obj: Any) -> dict[str, inspect.Parameter] | None:
    """The parameters of a class or function, annotations evaluated where they can be; None if none."""
    try:
        return dict(inspect.signature(obj, eval_str=True).parameters)
    except Exception:  # an annotation naming what only type checkers import
        try:
            return dict(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            return None


def expected_type(param: inspect.Parameter, obj: Any) -> Any:
    """The type ``param`` takes: its annotation, else its default's type; UNKNOWN if neither helps."""
    wanted = param.annotation
    if isinstance(wanted, str):
        init = inspect.unwrap(obj.__init__ if inspect.isclass(obj) else obj)
        names = getattr(init, "__globals__", None) or vars(sys.modules[obj.__module__])
        try:
            wanted = eval(wanted, dict(names))  # noqa: S307 - an annotation of installed code
        except Exception:
            wanted = inspect.Parameter.empty
    if wanted is not inspect.Parameter.empty:
        return wanted
    default = param.default
    return type(default) if isinstance(default, (bool, int, float, str)) else UNKNOWN


def _plain(node: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as plain Python (a mapping as an empty dict: only its kind matters);
    UNKNOWN when absent, missing, a ``_target_`` node, or an interpolation that does not resolve here."""
    if key not in node or OmegaConf.is_missing(node, key):
        return UNKNOWN
    try:
        value = node[key]
        if isinstance(value, DictConfig):
            return UNKNOWN if "_target_" in value else {}
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
    except Exception:  # instantiation reports an interpolation that fails, with OmegaConf's message
        return UNKNOWN


def fits(wanted: Any, value: Any) -> bool:
    """Whether a plain config value is of type ``wanted``; types it cannot judge accept anything."""
    if wanted in (Any, object, UNKNOWN):
        return True
    if wanted is None or wanted is type(None):
        return value is None
    origin, args = typing.get_origin(wanted), typing.get_args(wanted)
    if origin in UNIONS:
        return any(fits(arg, value) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin is not None:
        return _fits_generic(origin, args, value)
    if wanted in (bool, int, float, str) or _is_path(wanted):
        return _fits_scalar(wanted, value)
    if isinstance(wanted, type):
        return isinstance(value, wanted)
    return True  # a TypeVar, a forward reference, ...


def _fits_scalar(wanted: type, value: Any) -> bool:
    if wanted is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if wanted is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, bool if wanted is bool else str)


def _fits_generic(origin: Any, args: tuple[Any, ...], value: Any) -> bool:
    if origin in MAPPINGS:
        return isinstance(value, dict)
    if origin is abc.Callable:
        return callable(value)
    if origin not in SEQUENCES:
        return True
    if not isinstance(value, list):
        return False
    if origin is tuple and args and args[-1] is not Ellipsis:
        return len(value) == len(args) and all(fits(a, v) for a, v in zip(args, value, strict=True))
    return not args or all(fits(args[0], v) for v in value)


def _is_path(wanted: Any) -> bool:
    return isinstance(wanted, type) and issubclass(wanted, (PurePath, os.PathLike))


def type_error(key: str, value: Any, wanted: Any, target: str | None) -> ConfigError:
    """``key=value is a string, but X takes an int or null for it; set key to an int or null``."""
    words = describe(wanted)
    rule = f"{target} takes {words} for it" if target else f"it must be {words}"
    fix = words if len(words) <= 40 else "one of those"
    return ConfigError(f"{key}={_shown(value)} is {_kind(value)}, but {rule}; set {key} to {fix}")


def describe(wanted: Any) -> str:
    """A type in words: ``an int or null``, ``one of 'last', 'mean'``, ``a list of numbers``."""
    parts: list[str] = []
    literals: list[Any] = []
    for arg in _flat_union(wanted):
        if typing.get_origin(arg) is Literal:
            literals.extend(typing.get_args(arg))
        elif (words := _describe_one(arg)) not in parts:
            parts.append(words)
    if literals:
        parts.insert(0, "one of " + ", ".join(_shown(v) for v in literals))
    if "null" in parts:  # last reads best
        parts.append(parts.pop(parts.index("null")))
    return " or ".join(parts)


def _flat_union(wanted: Any) -> list[Any]:
    if typing.get_origin(wanted) in UNIONS:
        return [a for arg in typing.get_args(wanted) for a in _flat_union(arg)]
    return [wanted]


WORDS = {bool: "true or false", int: "an int", float: "a number", str: "a string", type(None): "null"}
PLURALS = {bool: "booleans", int: "ints", float: "numbers", str: "strings"}


def _describe_one(wanted: Any) -> str:
    origin, args = typing.get_origin(wanted), typing.get_args(wanted)
    if wanted is None or wanted in WORDS:
        return WORDS[type(None) if wanted is None else wanted]
    if _is_path(wanted):
        return "a string"
    if origin in MAPPINGS:
        return "a mapping"
    if origin in SEQUENCES:
        fixed = origin is tuple and len(args) > 1 and args[-1] is not Ellipsis
        count = f"{len(args)} " if fixed and len(set(args)) == 1 else ""
        return f"a list of {count}{PLURALS[args[0]]}" if args and args[0] in PLURALS else "a list"
    name = getattr(wanted, "__name__", None) or str(wanted)
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return {int: "an int", float: "a number", str: "a string"}.get(type(value), f"a {type(value).__name__}")


def _shown(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


# -- evaluation --------------------------------------------------------------------------------------
#: data keys that shape what the model sees; evaluating with other values than in training is suspect
SIGNAL_KEYS = ("preprocess", "fs", "window", "stride", "input", "analytic", "cleaning")


def signal_setting(value: Any) -> Any:
    """A signal-shaping setting for comparison: a mapping without its null entries, so a checkpoint
    written before an optional key existed (``data.preprocess.resample_to``) equals one that has it null."""
    if isinstance(value, dict):
        return {k: signal_setting(v) for k, v in value.items() if v is not None}
    return value


def warn_if_signals_differ(data_cfg: DictConfig, stored: DictConfig) -> None:
    """Warn for each signal-shaping data key that differs from the one the checkpoint was trained with."""
    given_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    trained_cfg = OmegaConf.to_container(stored)
    for key in SIGNAL_KEYS:
        given = signal_setting(given_cfg.get(key))  # type: ignore[union-attr]
        trained = signal_setting(trained_cfg.get(key))  # type: ignore[union-attr]
        if given != trained:
            log.warning(
                "data.%s differs from the one the checkpoint was trained with: %s vs %s", key, given, trained
            )
