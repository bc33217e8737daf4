"""`cpr status`, `cpr stop` and `cpr sync`: jobs as their MLflow runs record them, a user STOP request, and the
MLflow writes a job's journal still owes.

Both read the tracking store, so they work for attached and detached jobs, on this machine or a cluster: the
controller writes each job's state, last decision and reason as run tags, and polls its run for a stop request.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from launch.output import MISSING, console, fmt
from orchestrator.errors import InputError


def _tracking_uri(value: str | None) -> str:
    from orchestrator.tracking.uri import DEFAULT_RUNS_DIR, check_tracking_uri, default_tracking_uri

    uri = default_tracking_uri(Path.cwd() / DEFAULT_RUNS_DIR) if value is None else value
    if value is None and not Path(uri.removeprefix("sqlite:///")).exists():
        raise InputError(
            "--tracking-uri", f"no run store at {uri}", "run `cpr submit` here first, or pass --tracking-uri URI"
        )
    check_tracking_uri(uri)
    return uri


def register(verbs: argparse._SubParsersAction) -> None:
    help_uri = "MLflow tracking URI (default: the SQLite store under ./cpr_runs)"
    p = verbs.add_parser(
        "status",
        help="list jobs with their state and last decision",
        description="List cpr jobs recorded in the MLflow store, newest first.",
    )
    p.add_argument("--tracking-uri", default=None, help=help_uri)
    p.add_argument("--experiment", default="cpr", help="MLflow experiment (default: cpr)")
    p.add_argument("--json", action="store_true", help="print one JSON object per job")
    p.set_defaults(func=status)

    s = verbs.add_parser(
        "stop",
        help="ask a running job to stop (reason `user`; it checkpoints first)",
        description="Record a user STOP request on the job's run; the controller sees it within "
        "seconds, the workers save a DeepSpeed checkpoint and end.",
    )
    s.add_argument("job", help="job id (as printed by `cpr submit`) or MLflow run id")
    s.add_argument("--tracking-uri", default=None, help=help_uri)
    s.add_argument("--experiment", default="cpr", help="MLflow experiment (default: cpr)")
    s.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for the job to end")
    s.set_defaults(func=stop)

    y = verbs.add_parser(
        "sync",
        help="send MLflow writes still owed in the jobs' journals (after an outage outlived the cluster)",
        description="Each job's MLflow writes are journaled under <runs_dir>/jobs/<job>/ until the store takes them. "
        "The controller sends them itself; if Ray was shut down before the store came back, this sends them.",
    )
    y.add_argument("--runs-dir", default="cpr_runs", help="the jobs' runs_dir (default: ./cpr_runs)")
    y.add_argument("--timeout", type=float, default=60.0, metavar="S", help="give up on a store after S seconds")
    y.set_defaults(func=sync)


def status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from orchestrator.controller.liveness import observe
    from orchestrator.core.lifecycle import LOST, lost_label
    from orchestrator.tracking.runs import list_jobs

    rows = [observe(r) for r in list_jobs(_tracking_uri(args.tracking_uri), args.experiment)]
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row), default=str))
        return 0
    out = console()
    if not rows:
        out.print("no jobs")
        return 0
    columns = ["job", "run", "state", "decision", "reason", "step", "Ψ", "Γ", "slots", "scheduler"]
    notified = any(r.notify for r in rows)
    table = Table(*columns, *(["notifications"] if notified else []))
    for r in rows:
        gamma = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r.gamma.items())) or MISSING
        state = r.state + (" (stop requested)" if r.stop_requested and r.state == "running" else "")
        if r.state == LOST:
            state = lost_label(r.last_report_t, time.time())
        table.add_row(
            r.job_id,
            r.run_id[:12],
            state,
            r.decision or MISSING,
            r.reason or MISSING,
            MISSING if r.step is None else str(r.step),
            fmt(r.psi),
            gamma,
            MISSING if r.slots is None else str(r.slots),
            r.schedule or MISSING,
            *([r.notify or MISSING] if notified else []),
        )
    out.print(table)
    return 0


def stop(args: argparse.Namespace) -> int:
    from orchestrator.controller.liveness import observe
    from orchestrator.core.lifecycle import ENDED, LOST, JobLifecycle
    from orchestrator.tracking.runs import cools_on_stop, find_run, list_jobs, request_stop

    uri = _tracking_uri(args.tracking_uri)
    run_id = find_run(uri, args.job, args.experiment)
    row = next((observe(r) for r in list_jobs(uri, args.experiment) if r.run_id == run_id), None)
    if row is not None and row.state in ENDED:
        raise InputError("job", f"{row.job_id} already ended ({row.state}, reason {row.reason})", "nothing to stop")
    if row is not None and row.state == LOST:
        raise InputError(
            "job", f"{row.job_id} is lost: its controller is gone", f"`cpr submit +resume={row.job_id}` continues it"
        )
    request_stop(uri, run_id)
    out = console()
    what = "it checkpoints and ends shortly"
    if row is not None and row.state == JobLifecycle.COOLING:
        what = "its learning-rate cool-down is cut short: it checkpoints and ends at its next report"
    elif cools_on_stop(uri, run_id):
        what = (
            "it cools the learning rate down from its next check, then checkpoints and ends (`cpr stop` again: at once)"
        )
    out.print(f"stop requested for {row.job_id if row else args.job} (run {run_id}); {what}")
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        row = next((r for r in list_jobs(uri, args.experiment) if r.run_id == run_id), None)
        if row is not None and row.state in ENDED:
            out.print(f"{row.job_id}: {row.state}, reason {row.reason}")
            return 0
        time.sleep(1.0)
    return 0


def sync(args: argparse.Namespace) -> int:
    """Send the owed MLflow writes of every job that has ended, in order; exit 1 if a store still does not take them.
    A live job's writes are its controller's to send (two writers would share one journal)."""
    from orchestrator.controller.store import JobStore
    from orchestrator.core.lifecycle import ENDED
    from orchestrator.tracking.journal import Journal
    from orchestrator.tracking.writer import RunWriter

    jobs = Path(args.runs_dir) / "jobs"
    if not jobs.is_dir():
        raise InputError("--runs-dir", f"no jobs under {jobs}", "run it where `cpr submit` ran, or pass --runs-dir")
    out, owed_jobs, left = console(), 0, 0
    for folder in sorted(p for p in jobs.iterdir() if (p / "job.json").exists()):
        store = JobStore(folder)
        if not Journal(folder).recover()[2]:
            continue
        state = store.load("handle.json")["state"] if store.path("handle.json").exists() else "unknown"
        if state not in ENDED:
            out.print(f"{folder.name}: {state}, its controller sends its writes")
            continue
        owed_jobs += 1
        meta = store.load("job.json")
        writer = RunWriter.attach(meta["tracking_uri"], meta["run_id"], meta["experiment_id"], journal_dir=folder)
        owed = writer.pending()
        writer.flush(args.timeout)
        still = writer.pending()
        left += still
        out.print(f"{folder.name}: {owed - still} of {owed} writes sent" + (f" ({writer.last_error})" if still else ""))
    if not owed_jobs:
        out.print("nothing owed by an ended job")
    return 1 if left else 0
