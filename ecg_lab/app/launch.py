"""Console scripts (``ecg-lab-train`` ...): set OpenMP's spin before the verb's module loads torch."""

from __future__ import annotations

import importlib
from typing import Any

from ecg_lab.app.environment import prefer_short_omp_spin


def _run(verb: str) -> Any:
    prefer_short_omp_spin()
    return importlib.import_module(f"ecg_lab.{verb}").main()


def train() -> Any:
    return _run("train")


def eval() -> Any:  # noqa: A001 - the verb's name
    return _run("eval")


def generate() -> Any:
    return _run("generate")


def analyze() -> Any:
    return _run("analyze")


def export() -> Any:
    return _run("export")


def report() -> Any:
    return _run("report")


def check_backend() -> Any:
    return _run("check_backend")


def aggregate() -> Any:
    return _run("aggregate")


def explain() -> Any:
    return _run("explain")
