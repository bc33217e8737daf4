"""Write a report to a folder: the PNGs and `report.html`. The functions the CLI and the controller call."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core import names
from orchestrator.report import figures as fg
from orchestrator.report.data import RunData, load_run, load_runs
from orchestrator.report.page import run_page, sweep_page

HTML_NAME = "report.html"
ARTIFACT_DIR = "report"
"""Where the controller's copy goes among a run's artifacts (report/report.html, report/*.png)."""
SWEEP_ARTIFACT_DIR = "sweep_report"
"""Where the sweep comparison goes among the artifacts of the sweep's last job to end."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReportFiles:
    """What was written: the page and the PNGs it embeds (in page order)."""

    html: Path
    pngs: tuple[Path, ...]

    @property
    def all(self) -> tuple[Path, ...]:
        return (*self.pngs, self.html)


# (file stem, drawing function, title, caption) of a run's figures, in page order.
_RUN_FIGURES = (
    ("psi_gamma", fg.psi_vs_gamma, "Ψ against Γ", "Ψ (as the job defines it) at each check against the stop rule's Γ."),
    ("psi_gamma_kinds", fg.psi_vs_each_gamma, "Ψ against the other kinds of Γ", "The same checks, other Γ kinds."),
    ("ratio_eta", fg.ratio_vs_eta, "Marginal return against η", "Shaded: successive checks below η (patience)."),
    ("gamma_kinds", fg.gamma_breakdown, "Γ by kind, with CO₂", "Cumulative Γ of every kind; energy per source."),
    ("forecast", fg.forecast, "Forecast", "Saturating power-law fit of Ψ(Γ) at the run's end."),
    ("gradient_mass", fg.mass_heatmap, "Gradient mass per submodule", "Share of ‖g‖² in each blueprint version."),
    ("retained_mass", fg.retained_mass, "Retained mass m(k)", "m(k) ≈ k^γ (empirical γ), latest blueprint; stars: k*."),
)


# The cross-influence section's figures (file stem, drawing function, caption), drawn when a version carries a map.
_CROSS_INFLUENCE_FIGURES = (
    ("cross_influence", fg.cross_influence_heatmap, "T̂ = U·diag(σ)·Vᵀ at the kept rank: submodule groups × blocks."),
    ("cross_influence_spectrum", fg.cross_influence_spectrum, "Every singular value; coloured: the r kept."),
)


def render_run(run: RunData, out_dir: Path) -> ReportFiles:
    """Draw a loaded run into `out_dir` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = []
    for stem, draw, title, caption in _RUN_FIGURES:
        path = draw(run, out_dir / f"{stem}.png")
        if path is not None:
            shown.append((title, caption, path))
    influence = []
    for stem, draw, caption in _CROSS_INFLUENCE_FIGURES:
        path = draw(run, out_dir / f"{stem}.png")
        if path is not None:
            influence.append((caption, path))
    page = out_dir / HTML_NAME
    page.write_text(run_page(run, shown, influence), encoding="utf-8")
    return ReportFiles(html=page, pngs=(*(p for _, _, p in shown), *(p for _, p in influence)))


def write_run_report(tracking_uri: str, ref: str, out_dir: Path, *, experiment: str = "cpr") -> ReportFiles:
    """The report of one run (job id or run id), from the MLflow store alone."""
    return render_run(load_run(tracking_uri, ref, experiment=experiment), out_dir)


def log_run_report(
    writer: Any, tracking_uri: str, out_dir: Path, *, experiment: str = "cpr", timeout_s: float = 10.0
) -> ReportFiles | None:
    """For the controller at a run's end: wait for the run's writes, render its report into `out_dir` (which must
    outlive the writer's queue: files are read when written) and queue them as artifacts under `report/`.
    Never raises: a report that cannot be drawn is a tag `cpr.report` saying why, not a failed job; None then."""
    return _log(
        writer,
        ARTIFACT_DIR,
        names.REPORT,
        lambda: write_run_report(tracking_uri, writer.run_id, out_dir, experiment=experiment),
        timeout_s,
    )


def log_sweep_report(
    writer: Any, tracking_uri: str, sweep: str, out_dir: Path, *, experiment: str = "cpr", timeout_s: float = 10.0
) -> ReportFiles | None:
    """For the controller when the last job of a sweep ends: the comparison of the sweep's runs (tag `cpr.sweep`)
    as artifacts of that job's run, under `sweep_report/`. Never raises, as `log_run_report`."""
    return _log(
        writer,
        SWEEP_ARTIFACT_DIR,
        names.SWEEP_REPORT,
        lambda: write_sweep_report(tracking_uri, [sweep], out_dir, experiment=experiment),
        timeout_s,
    )


def _log(
    writer: Any, artifact_dir: str, tag: str, draw: Callable[[], ReportFiles], timeout_s: float
) -> ReportFiles | None:
    """Draw after the run's writes are in, queue the files under `artifact_dir`, and say in `tag` where (or why not)."""
    try:
        if not writer.flush(timeout_s):  # the store is down: `cpr report` draws it later from the same store
            raise RuntimeError(f"its MLflow writes were still pending after {timeout_s:g} s")
        files = draw()
    except Exception as exc:  # matplotlib, MLflow or a malformed artifact: the job's outcome stands
        why = f"not drawn: {type(exc).__name__}: {exc}"
        log.warning("%s of run %s %s", artifact_dir, writer.run_id, why)
        writer.set_tags({tag: why[:500]})
        return None
    for path in files.all:
        writer.log_file(str(path), artifact_dir)
    writer.set_tags({tag: f"{artifact_dir}/{HTML_NAME}"})
    return files


def sweep_kind(runs: Sequence[RunData]) -> str:
    """The Γ kind to compare a sweep on: the one most of its jobs' rules used."""
    return Counter(r.resource for r in runs).most_common(1)[0][0]


def render_sweep(runs: Sequence[RunData], out_dir: Path, kind: str | None = None) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = kind or sweep_kind(runs)
    shown = []
    path = fg.sweep_psi_vs_gamma(runs, kind, out_dir / "sweep_psi_gamma.png")
    if path is not None:
        shown.append(("Ψ against Γ, every job", f"Γ kind {kind}; circles mark each job's stop.", path))
    page = out_dir / HTML_NAME
    page.write_text(sweep_page(runs, kind, shown), encoding="utf-8")
    return ReportFiles(html=page, pngs=tuple(p for _, _, p in shown))


def write_sweep_report(
    tracking_uri: str,
    refs: Sequence[str] | None,
    out_dir: Path,
    *,
    filter_string: str | None = None,
    kind: str | None = None,
    experiment: str = "cpr",
) -> ReportFiles:
    """One comparison report across a sweep's jobs (named, or selected by an MLflow filter)."""
    runs = load_runs(tracking_uri, list(refs or []), filter_string=filter_string, experiment=experiment)
    return render_sweep(runs, out_dir, kind)
