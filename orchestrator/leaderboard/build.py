"""The leaderboard for the CLI (`leaderboard`) and for the controller when a sweep ends (`log_sweep_leaderboard`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from orchestrator.core import names
from orchestrator.leaderboard.rank import Board, rank
from orchestrator.leaderboard.read import load_entries
from orchestrator.leaderboard.render import to_html

ARTIFACT_DIR = "leaderboard"
HTML_NAME = "leaderboard.html"
"""The sweep's leaderboard among the artifacts of its last job to end: leaderboard/leaderboard.html."""

log = logging.getLogger(__name__)


def leaderboard(
    tracking_uri: str,
    *,
    filter_string: str | None = None,
    experiment: str = "cpr",
    by: str | None = None,
    baseline: str | None = None,
) -> Board:
    """Every cpr run of the experiment the filter selects, ranked (InputError on a field that names nothing)."""
    entries, base = load_entries(tracking_uri, filter_string=filter_string, experiment=experiment, baseline=baseline)
    return rank(entries, by=by, baseline=base)


def sweep_filter(sweep: str) -> str:
    return f"tags.`{names.SWEEP}` = '{sweep}'"


def log_sweep_leaderboard(
    writer: Any, tracking_uri: str, sweep: str, out_dir: Path, *, experiment: str = "cpr"
) -> Path | None:
    """For the controller when the last job of a sweep ends (after the sweep report, so the run's writes are in):
    the sweep's runs ranked, as one offline page under `leaderboard/`, and tag `cpr.leaderboard` saying where (or
    why not). Never raises: the job's outcome stands."""
    try:
        board = leaderboard(tracking_uri, filter_string=sweep_filter(sweep), experiment=experiment)
        out_dir.mkdir(parents=True, exist_ok=True)
        page = out_dir / HTML_NAME
        page.write_text(to_html(board), encoding="utf-8")
    except Exception as exc:  # MLflow or a malformed record: a tag says why
        why = f"not written: {type(exc).__name__}: {exc}"
        log.warning("leaderboard of sweep %s %s", sweep, why)
        writer.set_tags({names.LEADERBOARD: why[:500]})
        return None
    writer.log_file(str(page), ARTIFACT_DIR)
    writer.set_tags({names.LEADERBOARD: f"{ARTIFACT_DIR}/{HTML_NAME}"})
    return page
