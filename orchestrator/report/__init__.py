"""`cpr report`: a run's (or a sweep's) Ψ–Γ story as PNG files and one self-contained HTML page.

Three layers, each usable alone: `data` reads the MLflow store into plain dataclasses, `figures` draws them with
matplotlib (Agg, no pyplot state), `page` embeds the PNGs in one HTML file with no network references.
"""

from __future__ import annotations

from orchestrator.report.build import (
    ReportFiles,
    log_run_report,
    log_sweep_report,
    write_run_report,
    write_sweep_report,
)
from orchestrator.report.data import RunData, Series, load_run, load_runs

__all__ = [
    "ReportFiles",
    "RunData",
    "Series",
    "load_run",
    "load_runs",
    "log_run_report",
    "log_sweep_report",
    "write_run_report",
    "write_sweep_report",
]
