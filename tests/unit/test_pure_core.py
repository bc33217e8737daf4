"""The decision logic stays pure: no engine (torch, Ray, DeepSpeed, MLflow, ...) is imported by the core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE = [
    ROOT / "orchestrator" / "core",
    ROOT / "orchestrator" / "blueprints",
    ROOT / "orchestrator" / "adapt",
    ROOT / "orchestrator" / "replay.py",
    ROOT / "orchestrator" / "errors.py",
    ROOT / "orchestrator" / "controller" / "store.py",
]
LAZY = ["benchmarks.compare_stoppers"]
"""Modules that drive an engine's own classes (Ray Tune's and transformers' stoppers) but import them only where they
are run, so importing the module, e.g. for `ours` or `oracle`, loads no engine."""
FORBIDDEN = {
    "torch",
    "ray",
    "deepspeed",
    "mlflow",
    "transformers",
    "tokenizers",
    "codecarbon",
    "pynvml",
    "hydra",
    "omegaconf",
    "datasets",
}


def pure_files() -> list[Path]:
    files: list[Path] = []
    for p in PURE:
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


def test_no_engine_imports_in_the_pure_core():
    offenders = []
    for path in pure_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert len(pure_files()) > 5
    assert offenders == []


def engines_loaded_by_importing(modules: list[str]) -> str:
    """The engine modules a fresh interpreter holds after importing `modules`, as printed by it."""
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip()


def test_importing_the_core_loads_no_engine():
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in pure_files()
    )
    assert engines_loaded_by_importing(modules) == "[]"


def test_modules_that_drive_engines_import_them_only_when_run():
    assert engines_loaded_by_importing(LAZY) == "[]"
