"""Results across runs: find run folders, group them into configurations, aggregate, tabulate, plot.

A run folder is any folder holding ``.hydra/config.yaml``. Runs are grouped into configurations (the
model name plus the job's overrides, minus seed, fold and path-like keys); each configuration gets mean
and standard deviation of its test metrics over its completed runs. Writes ``results_table.csv``,
``results_table.md``, ``results_f1.png`` and ``validation_curves.png``.

With ``ci``, a metric whose runs carry a bootstrap interval (``<metric>_ci`` in ``test_metrics.json``)
also gets the mean over runs of each bound (``<metric>_ci_lo``, ``<metric>_ci_hi``): a single run's cell
reads ``0.775 [0.751, 0.798]``, several runs' ``0.775 ± 0.012 [0.751, 0.798]``. The mean of the bounds
is the typical width of one run's interval (the uncertainty from the test recordings), the std the
spread between runs (seeds, folds); the two are shown side by side, not merged into one interval.

``report.html`` beside the tables (``results.html`` where that folder is itself a run's) holds the same
table, both plots and every run with a relative link to its own ``report.html`` (written here for a run
that has none: one from before the page existed, or one that failed before its test).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import math
import os
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib import colormaps

from ecg_lab.app.figures import subplots
from ecg_lab.app.html_report import (
    REPORT,
    Raw,
    Section,
    esc,
    figure,
    figures_row,
    note,
    table,
    write_page,
    write_run_report,
)
from ecg_lab.app.outputs import COMPLETED, FAILED, KILLED, RUNNING, read_status
from ecg_lab.errors import first_line

log = logging.getLogger(__name__)

# override keys that vary between repetitions of one configuration, or only say where things live
IGNORED_KEYS: tuple[str, ...] = (
    "seed",
    "data.fold",
    "data.split_seed",
    "paths.*",
    "hydra.*",
    "data.root",
    "data.cache_dir",
    "ckpt_path",
    "threads",
    "hydra/launcher",
    "callbacks.progress.*",
)
# folders of a run's own outputs, not searched for further runs: an eval of a run's own split beside it
# would otherwise count as one more run of that configuration (an aggregate run is searched: make best)
RUN_OUTPUT_DIRS = frozenset(
    {"checkpoints", "csv", "tensorboard", "wandb", "export", "export_runs", "eval", "explain"}
)
BASE_METRICS: tuple[str, ...] = ("f1", "auroc", "acc", "official_f1")
LABELS = {"f1": "test weighted F1", "auroc": "AUROC", "acc": "accuracy", "official_f1": "official F1"}


@dataclass
class Run:
    """One run folder and what it left behind."""

    path: Path
    configuration: str
    model: str
    seed: int | None = None
    fold: int | None = None
    status: str = FAILED
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """``value`` unless it is missing or an unresolved ``${...}`` interpolation."""
    return None if value is None or (isinstance(value, str) and "${" in value) else value


def _dig(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict):
            return None
        cfg = cfg.get(part)
    return _plain(cfg)


def _first(*values: Any) -> Any:
    """The first value that is not None (so seed 0 and fold 0 count)."""
    return next((v for v in values if v is not None), None)


def _hydra_choice(path: Path, group: str) -> str | None:
    """The config group choice recorded in ``.hydra/hydra.yaml`` (fallback for the model name)."""
    try:
        hydra_cfg = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text())
        return _plain(hydra_cfg["hydra"]["runtime"]["choices"].get(group))
    except Exception:  # missing or odd hydra.yaml just means no fallback
        return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _override_value(overrides: Sequence[str], key: str) -> str | None:
    for o in overrides:
        if "=" in o and _override_key(o) == key:
            return o.split("=", 1)[1]
    return None


def configuration_name(model: str, overrides: Sequence[str], ignore: Sequence[str] = IGNORED_KEYS) -> str:
    """``model`` followed by the sorted overrides that define the configuration (not seed, fold, paths)."""
    kept = sorted(
        o
        for o in overrides
        if _override_key(o) != "model" and not any(fnmatch.fnmatchcase(_override_key(o), p) for p in ignore)
    )
    return " ".join([model, *kept])


def window_configuration(metrics: dict[str, Any], cfg: dict[str, Any], ignore: Sequence[str]) -> str:
    """For an ``ecg_lab.aggregate`` run: the configuration of the training run whose checkpoint it
    aggregates (the run folder two levels above the checkpoint), so aggregators over different window
    models are different rows; empty when that folder is gone."""
    ckpt = metrics.get("ckpt_path") or _dig(cfg, "ckpt_path")
    window_run = Path(str(ckpt)).parent.parent if ckpt else None
    if window_run is None or not (window_run / ".hydra" / "overrides.yaml").exists():
        return ""
    try:
        overrides = [
            str(o) for o in yaml.safe_load((window_run / ".hydra" / "overrides.yaml").read_text()) or []
        ]
    except Exception:  # an unreadable folder is only a less specific name
        return ""
    model = _hydra_choice(window_run, "model") or _override_value(overrides, "model") or "?"
    return f"[{configuration_name(model, overrides, ignore)}]"


def aggregators_configuration(
    metrics: dict[str, Any], overrides: Sequence[str], ignore: Sequence[str]
) -> str:
    """For ``ecg_lab.eval`` of ``aggregator.ckpt`` files: the first one's aggregate run's configuration
    (see :func:`window_configuration`), ``→ ensemble of N`` for several, then this run's own overrides
    (a calibration); ``aggregate ?`` when that run folder is gone."""
    paths = metrics.get("ckpt_paths") or []
    member = Path(str(paths[0])).parent if paths else None
    name = "aggregate ?"
    if member is not None and (member / ".hydra" / "config.yaml").is_file():
        name = load_run(member, ignore).configuration
    ensemble = f" → ensemble of {len(paths)}" if len(paths) > 1 else ""
    return " ".join(filter(None, [f"{name}{ensemble}", configuration_name("", overrides, ignore).strip()]))


def _load_json(path: Path) -> dict[str, Any]:
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    return payload


def _read_history(path: Path) -> list[dict[str, float]]:
    """``metrics_history.csv`` as one dict per row, numeric cells only; empty if missing or unreadable."""
    rows: list[dict[str, float]] = []
    try:
        with path.open(newline="") as fh:
            for raw in csv.DictReader(fh):
                row: dict[str, float] = {}
                for k, v in raw.items():
                    try:
                        row[k] = float(v)
                    except (TypeError, ValueError):
                        pass
                rows.append(row)
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    return rows


def load_run(path: Path, ignore: Sequence[str] = IGNORED_KEYS) -> Run:
    """Read one run folder; anything unreadable makes it a failed run with the reason, never an error."""
    problems: list[str] = []
    cfg: dict[str, Any] = {}
    overrides: list[str] = []
    try:
        cfg = yaml.safe_load((path / ".hydra" / "config.yaml").read_text()) or {}
        if not isinstance(cfg, dict):
            raise ValueError("not a mapping")
    except Exception as exc:  # any unreadable config is reported, not raised
        problems.append(f"unreadable .hydra/config.yaml: {exc}")
        cfg = {}
    if (path / ".hydra" / "overrides.yaml").exists():
        try:
            overrides = [
                str(o) for o in yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
            ]
        except Exception as exc:
            problems.append(f"unreadable .hydra/overrides.yaml: {exc}")

    status_info: dict[str, Any] | None = None
    if (path / "run_status.json").exists():
        status_info = read_status(path)
        if status_info is None:
            problems.append("corrupt run_status.json")
    metrics: dict[str, Any] = {}
    metrics_file = path / "test_metrics.json"
    if metrics_file.exists():
        try:
            metrics = _load_json(metrics_file)
        except Exception as exc:
            problems.append(f"corrupt test_metrics.json: {exc}")

    model = _first(
        _plain(metrics.get("model_name")), _dig(cfg, "model_name"), _override_value(overrides, "model")
    )
    if model is None:
        model = _hydra_choice(path, "model") or "unknown"
    seed = _as_int(_first(_plain(metrics.get("seed")), _dig(cfg, "seed"), _override_value(overrides, "seed")))
    fold = _as_int(
        _first(_dig(cfg, "data.fold"), _override_value(overrides, "data.fold"), _plain(metrics.get("fold")))
    )
    if _first(_dig(cfg, "data.folds"), _override_value(overrides, "data.folds")) is None:
        fold = None  # data.fold means nothing without data.folds

    status = str((status_info or {}).get("status") or "")
    error = (status_info or {}).get("error")
    if problems:
        status, error = FAILED, "; ".join(problems)
    elif status in (FAILED, KILLED):
        error = error or f"{status} (no error recorded)"
    elif status == RUNNING:
        pid, started = status_info.get("pid"), status_info.get("started", "?")
        error = (
            f"still running (process {pid}, started {started})"
            if pid
            else f"still running, or killed (started {started})"
        )
    elif not metrics:
        status, error = FAILED, error or "no test_metrics.json"
    else:
        status, error = COMPLETED, None
    if status == COMPLETED and "wall_time_s" not in metrics and status_info:
        # runs from before test_metrics.json held it; a null there means unknown (a resume of a checkpoint
        # without epoch times), and this process's time would understate the run
        metrics["wall_time_s"] = status_info.get("wall_time_s")
    configuration = configuration_name(str(model), overrides, ignore)
    if (metrics.get("task_name") or _dig(cfg, "task_name")) == "aggregate":
        configuration = f"{window_configuration(metrics, cfg, ignore)} → aggregate {configuration}".strip()
    elif metrics.get("aggregators"):
        configuration = aggregators_configuration(metrics, overrides, ignore)
    return Run(
        path=path,
        configuration=configuration,
        model=str(model),
        seed=seed,
        fold=fold,
        status=status,
        error=str(error) if error is not None else None,
        metrics=metrics if status == COMPLETED else {},
        history=_read_history(path / "metrics_history.csv"),
        overrides=overrides,
    )


def find_runs(dirs: Iterable[str | Path], ignore: Sequence[str] = IGNORED_KEYS) -> list[Run]:
    """All run folders under ``dirs`` (each counted once); SystemExit if a DIR is missing or holds none."""
    runs: dict[Path, Run] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise SystemExit(f"ecg_lab.report: {d} does not exist or is not a directory")
        found = 0
        for root, subdirs, _files in os.walk(d):
            here = Path(root)
            if (here / ".hydra" / "config.yaml").is_file():
                found += 1
                runs.setdefault(here.resolve(), load_run(here, ignore))
            # a run folder may hold further runs (make best puts the aggregator's in <run>/aggregate)
            subdirs[:] = sorted(s for s in subdirs if not s.startswith(".") and s not in RUN_OUTPUT_DIRS)
        if not found:
            raise SystemExit(f"ecg_lab.report: no run folders (with .hydra/config.yaml) under {d}")
    return list(runs.values())


def _class_names(runs: Sequence[Run]) -> list[str]:
    names: list[str] = []
    for r in runs:
        classes = r.metrics.get("classes") or [
            k.removeprefix("sensitivity_") for k in r.metrics if k.startswith("sensitivity_")
        ]
        names += [str(c) for c in classes if str(c) not in names]
    return names


def metric_keys(runs: Sequence[Run], extra: Sequence[str] = (), only: Sequence[str] = ()) -> list[str]:
    """The metrics a table reports: ``only`` when given, else weighted F1, AUROC, accuracy, official F1
    and per-class sensitivity; then ``extra``."""
    keys = list(only) or [*BASE_METRICS, *(f"sensitivity_{c}" for c in _class_names(runs))]
    return keys + [k for k in extra if k not in keys]


CI_BOUNDS = ("lo", "hi")


def interval_bounds(metrics: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``<key>_ci_lo`` and ``<key>_ci_hi`` of each ``<key>_ci: [lo, hi]`` in ``metrics`` (None where it
    is missing or not a pair)."""
    out: dict[str, Any] = {}
    for key in keys:
        ci = metrics.get(f"{key}_ci")
        pair = ci if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
        out |= {f"{key}_ci_{bound}": value for bound, value in zip(CI_BOUNDS, pair, strict=True)}
    return out


def _run_table(runs: Sequence[Run], columns: Sequence[str]) -> pd.DataFrame:
    """One row per run: configuration, model, status, seed, fold and the ``columns`` of its test
    metrics as numbers (NaN where missing, not numeric or not finite); a column ``<key>_ci_lo|hi`` is
    a bound of the run's interval ``<key>_ci``."""
    info = pd.DataFrame(
        [(r.configuration, r.model, r.status, r.seed, r.fold, r.metrics.get("hardware")) for r in runs],
        columns=["configuration", "model", "status", "seed", "fold", "hardware"],
    ).astype({"seed": "Int64", "fold": "Int64"})
    with_ci = [c.removesuffix("_ci_lo") for c in columns if c.endswith("_ci_lo")]
    records = [r.metrics | interval_bounds(r.metrics, with_ci) for r in runs]
    values = pd.DataFrame.from_records(records, columns=list(columns), index=info.index)
    values = values.apply(pd.to_numeric, errors="coerce").astype(float)
    return pd.concat([info, values.where(np.isfinite(values))], axis=1)


def _joined(values: pd.Series) -> str:
    return " ".join(str(v) for v in sorted(set(values.dropna())))


def aggregate(
    runs: Sequence[Run],
    extra_metrics: Sequence[str] = (),
    sort: str = "f1",
    only: Sequence[str] = (),
    ci: bool = False,
) -> list[dict[str, Any]]:
    """One row per configuration: counts, seeds, folds, and ``<metric>_mean`` / ``<metric>_std``; with
    ``ci`` also ``<metric>_ci_lo`` / ``<metric>_ci_hi``, the means of its runs' interval bounds.

    Rows are sorted by ``<sort>_mean`` descending (NaN last), or by name with ``sort="configuration"``.
    """
    if not runs:
        return []
    keys = metric_keys([r for r in runs if r.status == COMPLETED], extra_metrics, only)
    bounds = [f"{k}_ci_{b}" for k in keys for b in CI_BOUNDS] if ci else []
    table = _run_table(runs, [*keys, *bounds, "n_params", "epochs", "wall_time_s"])
    configurations = table.groupby("configuration", sort=False)
    done = table[table["status"] == COMPLETED].groupby("configuration")
    statuses = {"n_runs": COMPLETED, "n_failed": FAILED, "n_killed": KILLED, "n_running": RUNNING}
    counts = pd.crosstab(table["configuration"], table["status"]).reindex(
        columns=[*statuses.values()], fill_value=0
    )
    stats = done[keys].agg(["mean", "std"])  # std: ddof=1, NaN below two runs
    stats.columns = [f"{k}_{stat}" for k, stat in stats.columns]
    summary = pd.DataFrame(
        {
            "model": configurations["model"].first(),
            **{name: counts[status] for name, status in statuses.items()},
            "seeds": done["seed"].agg(_joined).astype(object),  # empty when no run completed
            "folds": done["fold"].agg(_joined).astype(object),
            "n_params": done["n_params"].median(),
            "epochs": done["epochs"].mean(),
            "wall_time_min": done["wall_time_s"].mean() / 60,
            "hardware": done["hardware"].agg(_joined).astype(object),
        },
        index=configurations.size().index,
    )
    summary = (
        summary.join(stats)
        .join(done[bounds].mean())
        .fillna({"seeds": "", "folds": "", "hardware": ""})
        .reset_index()
    )
    n_params = [None if math.isnan(v) else int(v) for v in summary["n_params"]]
    summary["n_params"] = pd.Series(n_params, index=summary.index, dtype=object)
    summary = summary.sort_values("configuration")
    col = sort if sort in summary.columns else f"{sort}_mean"
    if sort != "configuration" and col in summary.columns:
        summary = summary.sort_values(col, ascending=False, kind="stable")  # NaN last, ties by name
    return summary.astype(object).to_dict("records")


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``rows`` as CSV; missing values and NaN become empty cells."""
    table = pd.DataFrame(list(rows), columns=list(rows[0]) if rows else ["configuration"], dtype=object)
    table.to_csv(path, index=False, lineterminator="\r\n")
    return path


def _fmt_metric(mean: Any, std: Any, lo: Any = None, hi: Any = None) -> str:
    """``mean``, ``± std`` when known, ``[lo, hi]`` when both bounds are known."""
    if _is_missing(mean):
        return "–"
    cell = f"{mean:.3f}" if _is_missing(std) else f"{mean:.3f} ± {std:.3f}"
    return cell if _is_missing(lo) or _is_missing(hi) else f"{cell} [{lo:.3f}, {hi:.3f}]"


def _fmt_number(v: Any, digits: int = 1) -> str:
    if _is_missing(v):
        return "–"
    return str(int(v)) if float(v).is_integer() else f"{v:.{digits}f}"


def metric_label(key: str) -> str:
    """A metric's column header: ``test weighted F1`` for ``f1``, ``sens. N`` for ``sensitivity_N``."""
    return LABELS.get(key, key.replace("sensitivity_", "sens. ").replace("F1_", "F1 "))


def table_cells(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The results table's header and cells, as the markdown and HTML tables show them."""
    header = ["configuration", "runs", "seeds"]
    show_folds = any(r["folds"] for r in rows)
    header += ["folds"] if show_folds else []
    header += [metric_label(k) for k in keys]
    header += ["params", "epochs", "wall time (min)"]
    show_hardware = any(r.get("hardware") for r in rows)
    header += ["hardware"] if show_hardware else []
    body = []
    for r in rows:
        extra = [f"+{r['n_failed']} failed"] if r["n_failed"] else []
        extra += [f"+{r['n_killed']} killed"] if r["n_killed"] else []
        extra += [f"+{r['n_running']} running"] if r["n_running"] else []
        cells = [
            r["configuration"],
            f"{r['n_runs']}" + (f" ({', '.join(extra)})" if extra else ""),
            r["seeds"] or "–",
        ]
        cells += [r["folds"] or "–"] if show_folds else []
        cells += [
            _fmt_metric(r.get(f"{k}_mean"), r.get(f"{k}_std"), r.get(f"{k}_ci_lo"), r.get(f"{k}_ci_hi"))
            for k in keys
        ]
        cells += [
            "–" if r["n_params"] is None else f"{r['n_params']:,}",
            _fmt_number(r["epochs"]),
            _fmt_number(r["wall_time_min"]),
        ]
        cells += [r.get("hardware") or "–"] if show_hardware else []
        body.append(cells)
    return header, body


def failed_runs(runs: Sequence[Run]) -> list[Run]:
    """The runs that did not complete, by path."""
    return sorted((r for r in runs if r.status != COMPLETED), key=lambda r: str(r.path))


def reason(run: Run) -> str:
    """The first line of why ``run`` did not complete (its status when nothing says more)."""
    text = (run.error or run.status).strip()
    return text.splitlines()[0] if text else run.status


def markdown_table(rows: Sequence[dict[str, Any]], runs: Sequence[Run], keys: Sequence[str]) -> str:
    """The results table in markdown, then a "Failed runs" section."""
    header, body = table_cells(rows, keys)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
    ]
    for configuration, *cells in body:
        lines.append("| " + " | ".join(["`" + configuration.replace("|", "\\|") + "`", *cells]) + " |")
    bad = failed_runs(runs)
    lines += ["", "## Failed runs", ""]
    if not bad:
        lines.append("None.")
    for r in bad:
        lines.append(f"- `{r.path}` (`{r.configuration}`, {r.status}): {reason(r)}")
    return "\n".join(lines) + "\n"


def _colors(n: int) -> list[Any]:
    cmap = colormaps.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def plot_f1(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars of test weighted F1 and official F1 per configuration, std as error bars."""
    n = max(len(rows), 1)
    fig, ax = subplots(figsize=(8, 1.2 + 0.55 * n), dpi=120)
    y = np.arange(len(rows))[::-1]
    for i, (key, label) in enumerate((("f1", "test weighted F1"), ("official_f1", "official F1"))):
        means = np.array([r.get(f"{key}_mean", math.nan) for r in rows], dtype=float)
        stds = np.nan_to_num(np.array([r.get(f"{key}_std", math.nan) for r in rows], dtype=float))
        ax.barh(y + (0.2 if i == 0 else -0.2), np.nan_to_num(means), 0.38, xerr=stds, capsize=3, label=label)
    ax.set_yticks(y, [r["configuration"] for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test score (mean ± std over runs)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_validation_curves(
    rows: Sequence[dict[str, Any]], runs: Sequence[Run], path: Path, key: str = "val/f1"
) -> Path:
    """``key`` per epoch, one line per configuration: mean over its completed runs, ±std band."""
    logged = pd.DataFrame(
        [
            (r.configuration, i, int(h["epoch"]), h[key])
            for i, r in enumerate(runs)
            if r.status == COMPLETED
            for h in r.history
            if "epoch" in h and math.isfinite(h.get(key, math.nan))
        ],
        columns=["configuration", "run", "epoch", "value"],
    )
    # one value per epoch and run (the last one logged), then mean and std over a configuration's runs
    last = logged.groupby(["configuration", "run", "epoch"])["value"].last()
    curves = last.groupby(["configuration", "epoch"]).agg(["mean", "std"]).fillna({"std": 0.0})
    fig, ax = subplots(figsize=(8, 4.5), dpi=120)
    plotted = 0
    for row, color in zip(rows, _colors(len(rows)), strict=True):
        if row["configuration"] not in curves.index.get_level_values("configuration"):
            continue
        curve = curves.loc[row["configuration"]]
        x, mean, std = curve.index.to_numpy() + 1, curve["mean"].to_numpy(), curve["std"].to_numpy()
        ax.plot(x, mean, marker="o", ms=2.5, color=color, label=f"{row['configuration']} (n={row['n_runs']})")
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        plotted += 1
    if not plotted:
        ax.text(0.5, 0.5, f"no {key} history found", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.set_title(f"{key} per epoch (mean ± std over runs)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(
    runs: Sequence[Run],
    out_dir: str | Path,
    extra_metrics: Sequence[str] = (),
    sort: str = "f1",
    curve_key: str = "val/f1",
    only: Sequence[str] = (),
    ci: bool = False,
) -> dict[str, Path]:
    """Write the CSV and markdown tables and both plots into ``out_dir``; returns their paths.
    ``only``: the metric columns instead of the default ones; ``ci``: with the bootstrap intervals."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = run_pages(runs)  # before the plots: a run folder given as out_dir shows its own figures only
    rows = aggregate(runs, extra_metrics, sort, only, ci)
    keys = metric_keys([r for r in runs if r.status == COMPLETED], extra_metrics, only)
    md = out / "results_table.md"
    md.write_text("# Results\n\n" + markdown_table(rows, runs, keys))
    paths = {
        "csv": write_csv(rows, out / "results_table.csv"),
        "markdown": md,
        "f1_plot": plot_f1(rows, out / "results_f1.png"),
        "curves": plot_validation_curves(rows, runs, out / "validation_curves.png", curve_key),
    }
    return paths | {"html": write_html(rows, runs, keys, paths, pages, sweep_page(out))}


def sweep_page(out: Path) -> Path:
    """``report.html`` in ``out``, or ``results.html`` where ``out`` is a run folder (whose own page
    ``report.html`` is)."""
    return out / ("results.html" if (out / ".hydra" / "config.yaml").is_file() else REPORT)


# -- report.html -------------------------------------------------------------------------------------
def run_pages(runs: Sequence[Run]) -> dict[Path, Path]:
    """Each run folder's ``report.html``, written where there is none; a folder it cannot be written
    into is left out (with a warning)."""
    pages = {}
    for r in runs:
        page = r.path / REPORT
        if not page.is_file():
            try:
                write_run_report(r.path)
            except OSError as err:
                log.warning("no %s for %s: %s", REPORT, r.path, first_line(err))
                continue
        pages[r.path] = page
    return pages


def link(page: Path, start: Path, text: str) -> Raw:
    """An ``<a>`` to ``page`` by its path relative to the folder ``start``."""
    href = urllib.parse.quote(Path(os.path.relpath(page.resolve(), start.resolve())).as_posix())
    return Raw(f'<a href="{esc(href)}">{esc(text)}</a>')


def run_row(run: Run, keys: Sequence[str], page: Path | None, out: Path) -> list[Any]:
    """One run's cells: its folder (linked to its ``page``), configuration, status (and why, unless it
    completed), seed, fold and its ``keys``."""
    name = os.path.relpath(run.path.resolve(), out.resolve())
    status = run.status if run.status == COMPLETED else f"{run.status}: {reason(run)}"
    cells = [link(page, out, name) if page else name, run.configuration, status, _fmt_number(run.seed)]
    return [*cells, _fmt_number(run.fold), *(_fmt_metric(run.metrics.get(k), None) for k in keys)]


def runs_section(runs: Sequence[Run], keys: Sequence[str], pages: dict[Path, Path], out: Path) -> Section:
    """Every run, by configuration, seed and fold, linked to its page."""
    ordered = sorted(runs, key=lambda r: (r.configuration, r.seed or 0, r.fold or 0, str(r.path)))
    rows = [run_row(r, keys, pages.get(r.path), out) for r in ordered]
    header = ["run", "configuration", "status", "seed", "fold", *(metric_label(k) for k in keys)]
    return Section("Runs", table(header, rows, numeric_from=3))


PLOT_CAPTIONS = {
    "f1_plot": "test weighted F1 and official F1 per configuration (mean ± std over runs)",
    "curves": "validation curves per configuration (mean ± std over runs)",
}


def write_html(
    rows: Sequence[dict[str, Any]],
    runs: Sequence[Run],
    keys: Sequence[str],
    plots: dict[str, Path],
    pages: dict[Path, Path],
    path: Path,
) -> Path:
    """``report.html``: the results table, the failed runs, both plots and every run linked to its page
    (``pages``: run folder → its ``report.html``)."""
    header, cells = table_cells(rows, keys)
    results = table(header, cells, numeric_from=header.index("seeds") + 1 + ("folds" in header))
    results += note(
        "Mean ± std over each configuration's completed runs; [lo, hi] (with --ci): the mean of its runs' "
        "95% bootstrap bounds."
    )
    bad = failed_runs(runs)
    failed = "".join(f"<li><code>{esc(r.path)}</code> ({esc(r.status)}): {esc(reason(r))}</li>" for r in bad)
    sections = [
        Section("Results", results),
        Section("Failed runs", f"<ul>{failed}</ul>" if bad else note("None.")),
        Section(
            "Plots",
            figures_row(figure(plots[key], caption) for key, caption in PLOT_CAPTIONS.items()),
        ),
        runs_section(runs, keys, pages, path.parent),
    ]
    n_done = sum(r.status == COMPLETED for r in runs)
    title = f"Results: {len(rows)} configurations, {n_done} of {len(runs)} runs completed"
    return write_page(path, title, str(path.parent.resolve()), sections)
