"""Importing ecg_lab sets nothing; the entry points do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

# every module of the package, imported in a clean process after the libraries it imports (which
# may set things of their own: torch sets KMP_DUPLICATE_LIB_OK, for one); then what changed is printed
PROBE = r"""
import ast, json, logging, os, pkgutil, sys, warnings, importlib, pathlib
import matplotlib
import ecg_lab
third_party = set()
for f in pathlib.Path(ecg_lab.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            third_party |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            third_party.add(node.module)
for name in sorted(third_party):
    if name.split(".")[0] not in ("ecg_lab", "__future__"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
env = dict(os.environ)
filters = list(warnings.filters)
backend = dict.__getitem__(matplotlib.rcParams, "backend")
def logging_filters():
    return {n: list(l.filters) for n, l in logging.root.manager.loggerDict.items() if hasattr(l, "filters")}
loggers = logging_filters()
names = sorted(
    m.name for m in pkgutil.walk_packages(ecg_lab.__path__, "ecg_lab.") if not m.name.endswith("__main__")
)
for name in names:
    importlib.import_module(name)
after = logging_filters()
print(json.dumps({
    "modules": names,
    "env": sorted(set(os.environ.items()) ^ set(env.items())),
    "warnings": len(warnings.filters) - len(filters),
    "backend_changed": dict.__getitem__(matplotlib.rcParams, "backend") != backend,
    "logging_filters": sorted(n for n, f in after.items() if f and f != loggers.get(n, [])),
}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    unset = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "MPLBACKEND")
    return {k: v for k, v in os.environ.items() if k not in unset} | extra


def test_importing_every_module_sets_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, env=_clean_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for module in (
        "ecg_lab.classification.module",
        "ecg_lab.classification.datamodule",
        "ecg_lab.generation.module",
        "ecg_lab.generation.datamodule",
        "ecg_lab.train",
    ):
        assert module in got["modules"]
    assert got["env"] == [], "importing ecg_lab changed the environment"
    assert got["warnings"] == 0, "importing ecg_lab installed warning filters"
    assert not got["backend_changed"], "importing ecg_lab changed matplotlib's backend"
    assert got["logging_filters"] == [], "importing ecg_lab installed logging filters"


def test_figures_use_no_pyplot_and_choose_no_backend() -> None:
    """ecg_lab draws on ``matplotlib.figure.Figure``; pyplot's global state is the user's."""
    for path in (REPO / "ecg_lab").rglob("*.py"):
        text = path.read_text()
        assert "matplotlib.use(" not in text and "import matplotlib.pyplot" not in text, path


# when torch is first imported, what GOMP_SPINCOUNT is; then the verb runs (--help: no work)
SPIN = r"""
import importlib.abc, os, runpy, sys
seen = {}
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "torch" not in seen:
            seen["torch"] = os.environ.get("GOMP_SPINCOUNT")
        return None
sys.meta_path.insert(0, Watch())
sys.argv = ["ecg_lab.train", "--help"]
try:
    runpy.run_module("ecg_lab.train", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("SPIN", seen.get("torch"))
"""


def test_python_m_verb_sets_the_omp_spin_before_torch_loads() -> None:
    run = [sys.executable, "-c", SPIN]
    proc = subprocess.run(run, capture_output=True, text=True, cwd=REPO, env=_clean_env(), timeout=300)
    assert "SPIN 10000" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(  # the user's own OpenMP policy wins
        run, capture_output=True, text=True, cwd=REPO, env=_clean_env(OMP_WAIT_POLICY="PASSIVE"), timeout=300
    )
    assert "SPIN None" in proc.stdout, proc.stdout + proc.stderr
