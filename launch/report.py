"""`cpr report`: render a run's (or a sweep's) report from the MLflow store into PNG files and one HTML page."""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.tracking.uri import DEFAULT_RUNS_DIR

REPORTS_DIR = Path(DEFAULT_RUNS_DIR) / "reports"


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "report",
        help="draw a run's Ψ–Γ curve, stop, ratio, Γ, forecast and blueprints into PNGs and one HTML page",
        description="Render the report of a job (or, with --sweep, a comparison of several jobs) from the MLflow "
        "store alone: PNG files and a self-contained report.html.",
    )
    p.add_argument(
        "ids",
        nargs="*",
        metavar="RUN_OR_JOB_ID",
        help="a job id or run id (with --sweep: several, or the sweep id `cpr submit -m` printed)",
    )
    p.add_argument("-o", "--out", default=None, help=f"output folder (default: ./{REPORTS_DIR}/<job or sweep>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the SQLite store in ./cpr_runs)")
    p.add_argument("--experiment", default="cpr", help="MLflow experiment (default: cpr)")
    p.add_argument("--sweep", action="store_true", help="one comparison report across the jobs named or filtered")
    p.add_argument(
        "--filter",
        default=None,
        help="with --sweep: an MLflow filter selecting the jobs, e.g. \"tags.`cpr.model` = 'llama-tiny'\"",
    )
    p.add_argument("--resource", default=None, help="with --sweep: the Γ kind to compare on (default: the rules')")
    p.set_defaults(func=report)


def _sweep_name(ids: list[str], filter_string: str | None) -> str:
    if len(ids) == 1 and not filter_string and re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", ids[0]):
        return ids[0]  # a sweep id (or one job)
    key = "\n".join([*ids, filter_string or ""])
    return "sweep-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def _store(value: str | None) -> str:
    """The tracking URI to read; a SQLite file that does not exist is refused (reading must not create a store)."""
    from launch.jobs import _tracking_uri

    uri = _tracking_uri(value)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise InputError("--tracking-uri", f"no run store at {uri}", "pass the URI `cpr submit` wrote its runs to")
    return uri


def report(args: argparse.Namespace) -> int:
    from orchestrator.core.resources import ResourceKind
    from orchestrator.report import write_run_report, write_sweep_report

    if args.sweep:
        if not args.ids and not args.filter:
            raise InputError("--sweep", "names no jobs", "give job ids, or --filter with an MLflow filter")
        kind = None if args.resource is None else ResourceKind.parse(args.resource, field="--resource").value
        uri = _store(args.tracking_uri)
        out = Path(args.out) if args.out else REPORTS_DIR / _sweep_name(args.ids, args.filter)
        files = write_sweep_report(uri, args.ids, out, filter_string=args.filter, kind=kind, experiment=args.experiment)
    else:
        if len(args.ids) != 1 or args.filter or args.resource:
            raise InputError(
                "RUN_OR_JOB_ID",
                f"takes one job or run id (and no --filter or --resource), got {len(args.ids)} ids",
                "compare several jobs with --sweep",
            )
        uri = _store(args.tracking_uri)
        out = Path(args.out) if args.out else REPORTS_DIR / args.ids[0]
        files = write_run_report(uri, args.ids[0], out, experiment=args.experiment)
    for path in files.all:
        print(path)
    return 0
