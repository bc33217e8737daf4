"""Shared by the benchmarks: run `cpr submit` for real and read back what the run recorded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CPR = str(Path(sys.executable).with_name("cpr"))


def submit(workdir: Path, *overrides: str, timeout_s: float = 3600, verb: str = "submit") -> dict[str, Any]:
    """Run one job (`cpr submit`, or `cpr adapt` with verb="adapt") to its end; returns its job id, run id, summary
    and the path of its recorded curve."""
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run([CPR, verb, *overrides], cwd=workdir, capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"cpr {verb} {' '.join(overrides)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    job_id = re.search(r"^job id: (\S+)", done.stdout, re.M).group(1)  # type: ignore[union-attr]
    run_id = re.search(r"^MLflow run id: (\S+)", done.stdout, re.M).group(1)  # type: ignore[union-attr]
    state = workdir / "cpr_runs" / "jobs" / job_id
    summary = json.loads((state / "summary.json").read_text())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'cpr_runs' / 'mlflow.db'}")
    curve = Path(client.download_artifacts(run_id, "curve.csv", str(state)))
    return {
        "job_id": job_id,
        "run_id": run_id,
        "summary": summary,
        "curve": curve,
        "wall_s": wall,
        "stdout": done.stdout,
    }
