"""``report.html``: a run folder at a glance, and the page parts the sweep page shares.

A page is one self-contained file: one inline ``<style>``, a table of contents, tables, and the PNG
figures embedded as base64 ``data:`` URIs; no script, no external stylesheet, nothing fetched, so it
opens offline, from an archive or a mail. Every text on it is escaped.

The run page (:func:`write_run_report`) shows what the run folder holds, whatever the task: the run
(task, model, data, status, wall time, hardware), the test metrics with their bootstrap 95% intervals
(``<metric>_ci`` in ``test_metrics.json``) and, for a classifier, the per-class table; the figures (the
training curves, the confusion matrices, a VAE's reconstructions and generated ECGs, and any other PNG
in the folder); the ``worst`` test recordings of ``predictions.csv`` that are wrong with the highest
probability, with their explanation figures when the task can draw them (:class:`TestOutcome.explain
<ecg_lab.app.outputs.TestOutcome>`); and the run's overrides and resolved config.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ecg_lab.classification.predictions import most_confidently_wrong
from ecg_lab.edge.runtime import calibrated
from ecg_lab.errors import ConfigError, first_line

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

REPORT = "report.html"
#: draws the explanation figure of one test recording, given its id and true label
Explain = Callable[[str, str], "Figure"]

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;
margin:0 auto;max-width:1180px;padding:24px 32px 64px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 10px;padding-bottom:4px;
border-bottom:1px solid #d0d7de}h3{font-size:15px;margin:20px 0 6px}
.sub{color:#59636e;margin:0 0 16px;word-break:break-all}
nav{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 16px;display:inline-block}
nav ol{margin:4px 0;padding-left:20px}a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
.wide{overflow-x:auto}table{border-collapse:collapse;margin:8px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;white-space:nowrap}tr:nth-child(even) td{background:#fbfcfd}
.figs{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}
figure{margin:12px 0 20px;max-width:100%}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#59636e;font-size:13px}.note{color:#59636e}.bad{color:#cf222e}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px;overflow:auto;font-size:12px}
details summary{cursor:pointer;color:#0969da}code{font-size:13px}
"""


# -- page parts ---------------------------------------------------------------------------------------
class Raw(str):
    """Markup put on a page as it is (everything else is escaped)."""


def esc(value: Any) -> str:
    """``value`` as escaped HTML text (:class:`Raw` as it is)."""
    return value if isinstance(value, Raw) else html.escape(str(value))


@dataclass
class Section:
    """One ``<h2>`` section of a page and its entry in the table of contents."""

    title: str
    body: str

    @property
    def anchor(self) -> str:
        """The section's id: its title in lower case, runs of other characters as ``-``."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def png_bytes(fig: Figure, dpi: int) -> bytes:
    """``fig`` laid out and rendered as PNG bytes."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure(png: bytes | Path, caption: str) -> str:
    """An ``<img>`` of ``png`` (bytes or a file) as a base64 ``data:`` URI, with its caption."""
    data = png.read_bytes() if isinstance(png, Path) else png
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def figures_row(figures: Iterable[str]) -> str:
    """Figures side by side, wrapping to the next line where the page is too narrow."""
    return f'<div class="figs">{"".join(figures)}</div>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """An HTML table; cells from column ``numeric_from`` on are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if i >= numeric_from else ''}>{esc(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def facts(rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column table of ``(name, value)`` rows, the names as row headers."""
    body = "".join(f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in rows)
    return f"<table><tbody>{body}</tbody></table>"


def note(text: str) -> str:
    """A grey paragraph."""
    return f'<p class="note">{esc(text)}</p>'


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page: title, subtitle, a table of contents, then the sections."""
    toc = "".join(f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in sections)
    parts = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>'
        f"<nav><strong>Contents</strong><ol>{toc}</ol></nav>{parts}</body></html>\n"
    )


def write_page(path: Path, title: str, subtitle: str, sections: Sequence[Section]) -> Path:
    """Write the page atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render_page(title, subtitle, sections), encoding="utf-8")
    tmp.replace(path)
    return path


def fmt(value: Any, fixed: bool = False) -> str:
    """A cell: a float with 4 significant digits (``fixed``: 4 decimals, unless tiny or huge), an int
    with thousands separators, '–' for nothing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if fixed and (value == 0 or 1e-3 <= abs(value) < 1e4) else f"{value:.4g}"


def with_interval(value: Any, interval: Any) -> str:
    """A metric ``value`` (4 decimals) and, when ``interval`` is a ``[lo, hi]`` pair, `` [lo, hi]``."""
    pair = interval if isinstance(interval, list | tuple) and len(interval) == 2 else None
    bounds = f" [{fmt(pair[0], True)}, {fmt(pair[1], True)}]" if pair else ""
    return fmt(value, True) + bounds


# -- the run page --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportSettings:
    """Config node ``report``: how many of the test recordings wrong with the highest probability the
    page lists (with their explanation figures, for a classifier; 0: none), and those figures' dpi."""

    worst: int = 3
    dpi: int = 80

    def __post_init__(self) -> None:
        for key, least in (("worst", 0), ("dpi", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"report.{key}={value!r} must be an int >= {least}, e.g. report.{key}="
                    f"{getattr(ReportSettings, key)}"
                )


def report_settings(node: Any) -> ReportSettings | None:
    """Config node ``report`` built (a bad value: its one-line ConfigError); None: no ``report.html``."""
    from ecg_lab.app.config import instantiate_node

    return None if node is None else instantiate_node(node)


#: test_metrics.json keys shown under "Run", with their labels
RUN_FACTS = {
    "task_name": "task",
    "model_name": "model",
    "data": "data",
    "data_root": "data folder",
    "split": "split",
    "seed": "seed",
    "epochs": "epochs",
    "n_params": "parameters",
    "n_records": "test recordings",
    "n_windows": "test windows",
    "n_generated": "generated ECGs",
    "wall_time_s": "wall time (s)",
    "hardware": "hardware",
    "ckpt_path": "checkpoint",
    "ensemble_size": "ensemble members",
}
#: test_metrics.json keys that are no metric (or have their own figure)
NOT_METRICS = frozenset(RUN_FACTS) | {
    "classes",
    "confusion_matrix",
    "record_confusion_matrix",
    "bootstrap",
    "calibration",
    "ckpt_paths",
}
#: figure sections: title and the file name patterns, in order; other PNGs go under "Other figures"
FIGURE_SECTIONS = (
    ("Training curves", ("training_curves.png",)),
    ("Confusion matrices", ("confusion_matrix*.png",)),
    ("ROC, precision-recall and reliability", ("roc*.png", "pr_*.png", "reliability*.png")),
    ("Samples", ("reconstructions.png", "generated.png")),
)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; empty when it is missing or unreadable (with a warning for the latter)."""
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("report.html: %s is unreadable (%s); left out", path, first_line(err))
        return {}
    return payload if isinstance(payload, dict) else {}


def run_section(run_dir: Path, metrics: dict[str, Any]) -> Section:
    """The run's facts: status (``run_status.json``), then what ``test_metrics.json`` says about it."""
    from ecg_lab.app.outputs import read_status  # outputs writes the page: imported here, not at the top

    status = read_status(run_dir) or {}
    rows: list[tuple[str, Any]] = [("run folder", str(run_dir.resolve()))]
    rows += [(k, status[k]) for k in ("status", "started", "ended") if status.get(k)]
    rows += [("error", status["error"])] if status.get("error") else []
    rows += [(label, fmt(metrics[k])) for k, label in RUN_FACTS.items() if metrics.get(k) is not None]
    if "calibration" in metrics:
        rows.append(("calibration", (metrics["calibration"] or {}).get("method", "?")))
    missing = "" if metrics else note("No test_metrics.json: the run has no test results.")
    return Section("Run", facts(rows) + missing)


def per_class_names(metrics: dict[str, Any], classes: Sequence[str]) -> list[str]:
    """The metric names that come per class (``sensitivity`` of ``sensitivity_N``), in order."""
    names: list[str] = []
    for key in metrics:
        for c in classes:
            name = key.removesuffix(f"_{c}")
            if name != key and name and name not in names:
                names.append(name)
    return names


def metrics_section(metrics: dict[str, Any]) -> Section | None:
    """The overall metrics, then (with classes) one row per class, each value with its 95% interval."""
    classes = [str(c) for c in metrics.get("classes") or []]
    names = per_class_names(metrics, classes)
    skip = NOT_METRICS | {f"{n}_{c}" for n in names for c in classes}
    overall = [
        (k, with_interval(v, metrics.get(f"{k}_ci")))
        for k, v in metrics.items()
        if is_number(v) and k not in skip and not k.endswith("_ci")
    ]
    if not overall and not names:
        return None
    parts = [table(["metric", "value"], overall)] if overall else []
    if names and classes:
        support = metrics.get("record_confusion_matrix")
        header = ["class", *names, *(["test recordings"] if support else [])]
        rows = [
            [c, *(with_interval(metrics.get(f"{n}_{c}"), metrics.get(f"{n}_{c}_ci")) for n in names)]
            + ([fmt(int(sum(support[i])))] if support else [])
            for i, c in enumerate(classes)
        ]
        parts += ["<h3>Per class</h3>", table(header, rows)]
    if any(k.endswith("_ci") for k in metrics):
        parts.append(note(interval_note(metrics.get("bootstrap") or {})))
    return Section("Metrics", "".join(parts))


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or a float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def interval_note(boot: dict[str, Any]) -> str:
    """What ``[lo, hi]`` means, from ``test_metrics.json``'s ``bootstrap``."""
    return (
        f"[lo, hi]: the {boot.get('level', 0.95):.0%} bootstrap interval over {boot.get('n', '?')} "
        f"resamples of the test {boot.get('resampled', 'recordings')} (seed {boot.get('seed', '?')})."
    )


def figure_sections(run_dir: Path) -> list[Section]:
    """The run folder's PNGs under their titles (:data:`FIGURE_SECTIONS`), the rest as "Other figures"."""
    left = sorted(run_dir.glob("*.png"))
    sections = []
    for title, patterns in (*FIGURE_SECTIONS, ("Other figures", ("*.png",))):
        chosen = [p for pattern in patterns for p in left if p.match(pattern)]
        chosen = list(dict.fromkeys(chosen))
        left = [p for p in left if p not in chosen]
        if chosen:
            sections.append(Section(title, figures_row(figure(p, p.name) for p in chosen)))
    return sections


def worst_recordings(path: Path, n: int, calibration: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The (at most) ``n`` rows of ``predictions.csv`` whose ``predicted`` is not their ``label``, the
    highest probability of the predicted class first (under ``calibration``, as the decision was taken:
    what ``python -m ecg_lab.explain worst=N`` ranks by); empty without the file."""
    if n < 1 or not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    classes = [k.removeprefix("prob_") for k in (rows[0] if rows else {}) if k.startswith("prob_")]
    known = [r for r in rows if r.get("label") in classes]
    if not known:
        return []
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in known])
    labels = np.array([classes.index(r["label"]) for r in known])
    confidence = calibrated(probs, calibration)[0].max(axis=1)
    order = most_confidently_wrong(probs, labels, n, calibration)
    return [{**known[i], "probability": float(confidence[i])} for i in order]


def explanation(explain: Explain | None, row: dict[str, Any], dpi: int) -> str:
    """The explanation figure of one recording, or a note why there is none."""
    if explain is None:
        return ""
    try:
        png = png_bytes(explain(row["record"], row["label"]), dpi)
    except Exception as err:  # an optional figure: the run's results stand without it
        log.warning("report.html: no explanation of %s: %s", row["record"], first_line(err))
        return note(f"{row['record']}: no explanation figure ({first_line(err)})")
    caption = f"{row['record']}: true {row['label']}, predicted {row['predicted']} ({row['probability']:.2f})"
    return figure(png, caption)


def worst_section(
    run_dir: Path, metrics: dict[str, Any], settings: ReportSettings, explain: Explain | None
) -> Section | None:
    """The worst test recordings of ``predictions.csv``, with their explanation figures."""
    if not (run_dir / "predictions.csv").is_file() or settings.worst < 1:
        return None
    rows = worst_recordings(run_dir / "predictions.csv", settings.worst, metrics.get("calibration"))
    if not rows:
        return Section("Worst recordings", note("No test recording is predicted wrong."))
    header = ["#", "record", "true", "predicted", "probability", "windows"]
    cells = [
        [i + 1, r["record"], r["label"], r["predicted"], f"{r['probability']:.3f}", r.get("n_windows", "")]
        for i, r in enumerate(rows)
    ]
    drawn = (
        "each figure shows Grad-CAM, integrated gradients and the windows' class probabilities for the "
        "predicted class"
        if explain is not None
        else "python -m ecg_lab.explain ckpt_path=... worst=N draws their explanations"
    )
    text = note(
        f"The {len(rows)} test recordings predicted wrong with the highest probability (report.worst="
        f"{settings.worst}, the probability under the calibration that decided); {drawn}."
    )
    figures = "".join(explanation(explain, r, settings.dpi) for r in rows)
    return Section("Worst recordings", text + table(header, cells, numeric_from=4) + figures)


def config_section(run_dir: Path, config: dict[str, Any] | None) -> Section:
    """The run's overrides (``.hydra/overrides.yaml``) and its config: ``config`` (resolved) when given,
    else ``.hydra/config.yaml`` as composed."""
    parts = []
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        parts += ["<h3>Overrides</h3>", f"<pre>{esc(overrides.read_text().strip() or '[]')}</pre>"]
    composed = run_dir / ".hydra" / "config.yaml"
    if config is not None:
        text, what = yaml.safe_dump(config, sort_keys=False), "resolved config (stored with the model)"
    elif composed.is_file():
        text, what = composed.read_text(), ".hydra/config.yaml (as composed)"
    else:
        return Section("Config", "".join(parts) or note("No config found in the run folder."))
    parts.append(f"<details><summary>{esc(what)}</summary><pre>{esc(text)}</pre></details>")
    return Section("Config", "".join(parts))


def write_run_report(
    run_dir: str | Path,
    config: dict[str, Any] | None = None,
    settings: ReportSettings | None = None,
    explain: Explain | None = None,
) -> Path:
    """Write ``report.html`` into ``run_dir`` from the files there; ``config``: the run's resolved config;
    ``explain``: draws a test recording's explanation figure (the worst recordings get one each)."""
    run_dir = Path(run_dir)
    settings = settings or ReportSettings()
    metrics = read_json(run_dir / "test_metrics.json")
    sections = [
        run_section(run_dir, metrics),
        metrics_section(metrics),
        *figure_sections(run_dir),
        worst_section(run_dir, metrics, settings, explain),
        config_section(run_dir, config),
    ]
    title = " · ".join(str(metrics[k]) for k in ("task_name", "model_name", "data") if metrics.get(k))
    path = write_page(run_dir / REPORT, title or run_dir.name, str(run_dir), [s for s in sections if s])
    log.info("run report written to %s", path)
    return path
