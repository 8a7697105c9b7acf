"""The model variants at a glance: ``python -m ecg_lab.classification.variants [--format md|csv]``.

Composes every ``conf/model/*.yaml`` within the training config, instantiates its network and
prints one row per variant: what it is (the YAML's first comment line), its trainable parameters,
the SPEC's count and the deviation from it where the SPEC pins one, and the number of time steps
the CNN hands the RNN for a 1500-sample (5 s at 300 Hz) window.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ecg_lab.app.checks import task_of
from ecg_lab.app.config import CONFIG_DIR, register_resolvers
from ecg_lab.models.crnn import CRNN, count_parameters

# the SPEC's parameter counts (4 classes)
SPEC_PARAMS = {
    "cnn_lstm": 308_420,
    "cnn_lstm_ln": 308_676,
    "cnn_only": 44_228,
    "bilstm": 316_420,
    "gru": 105_460,
}
WINDOW = 1500  # samples: 5 s at 300 Hz
COLUMNS = ("config", "description", "parameters", "spec", "deviation_pct", "steps")


def model_names(config_dir: str | Path = CONFIG_DIR) -> list[str]:
    """The classifier configs in ``conf/model`` (all but the generative ones), sorted."""
    paths = (Path(config_dir) / "model").glob("*.yaml")
    return sorted(p.stem for p in paths if task_of(OmegaConf.load(p)) in (None, "classification"))


def description(path: Path) -> str:
    """The first comment line of a YAML file, without the leading ``# ``."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def build_net(name: str, config_dir: str | Path = CONFIG_DIR) -> CRNN:
    """The network of ``model=<name>``, composed within the training config."""
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir)):
        cfg = compose("train", overrides=[f"model={name}"])
    return instantiate(cfg.model.net)


@torch.no_grad()
def time_steps(net: CRNN, samples: int = WINDOW) -> int:
    """How many time steps ``net.features`` gives for one window of ``samples`` samples."""
    return int(net.eval().features(torch.zeros(1, 1, samples)).shape[1])


def variant_rows(config_dir: str | Path = CONFIG_DIR) -> list[dict[str, Any]]:
    """One dict per model config, keyed by ``COLUMNS`` (``spec``/``deviation_pct``: None if unpinned)."""
    rows = []
    for name in model_names(config_dir):
        net = build_net(name, config_dir)
        n, spec = count_parameters(net), SPEC_PARAMS.get(name)
        rows.append(
            {
                "config": name,
                "description": description(Path(config_dir) / "model" / f"{name}.yaml"),
                "parameters": n,
                "spec": spec,
                "deviation_pct": None if spec is None else 100.0 * (n - spec) / spec,
                "steps": time_steps(net),
            }
        )
    return rows


def _cells(row: dict[str, Any]) -> list[str]:
    spec, dev = row["spec"], row["deviation_pct"]
    return [
        row["config"],
        row["description"],
        f"{row['parameters']:,}",
        "" if spec is None else f"{spec:,}",
        "" if dev is None else f"{dev:+.2f}%",
        str(row["steps"]),
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``rows``."""
    head = ["config", "what it is", "parameters", "SPEC", "deviation", f"steps ({WINDOW} samples)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "--:|" * 4]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the variants table to stdout."""
    parser = argparse.ArgumentParser(prog="python -m ecg_lab.classification.variants", description=__doc__)
    parser.add_argument("--format", choices=("md", "csv"), default="md")
    args = parser.parse_args(argv)
    rows = variant_rows()
    if args.format == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows([r[c] for c in COLUMNS] for r in rows)
    else:
        print(markdown(rows))


if __name__ == "__main__":
    main()
