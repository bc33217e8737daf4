"""`cpr notify test|summary [overrides…]`: check the notification set-up with a sample message, or send the store's
recent jobs as a summary, on the channels the same overrides give a job (`notify.urls`, `notify.webhook`,
`notify.command`; docs/notify.md). Sent here, at once, with the job's timeout and retries; one line per channel."""

from __future__ import annotations

import argparse
import socket
import time
from dataclasses import asdict

from launch.output import console
from orchestrator.errors import InputError


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "notify",
        help="send a test notification, or a summary of recent jobs, to the configured channels",
        description="Send on the channels a job with the same overrides would use, e.g. "
        "`cpr notify test notify.webhook=https://hooks.example.org/cpr 'notify.secret=${oc.env:CPR_NOTIFY_SECRET}'` "
        "or `cpr notify summary --days 7 'notify.urls=[ntfy://ntfy.sh/my-topic]'`. Exit 0 when every channel "
        "took it, 1 when one failed, 2 on bad input.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    sub.required = True
    t = sub.add_parser("test", help="a sample message that says it is a test")
    t.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides (notify.*, or +experiment=…)")
    t.set_defaults(func=run)
    s = sub.add_parser("summary", help="the jobs of the last --days in the store, in one message")
    s.add_argument("--days", type=float, default=7.0, help="how far back (default 7)")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the store under ./cpr_runs)")
    s.add_argument("--experiment", default="cpr", help="MLflow experiment (default: cpr)")
    s.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides (notify.*, or +experiment=…)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.config.compose import compose_job
    from orchestrator.config.validate import validate_job
    from orchestrator.notify import events
    from orchestrator.notify.channels import deliver
    from orchestrator.notify.checks import notify_channels

    job = compose_job(list(args.overrides))
    validate_job(job, args.overrides)
    n = job.notify
    if not n.enabled:
        raise InputError(
            "notify", "no channel is set", "set notify.urls=[…], notify.webhook=URL or notify.command=PROGRAM"
        )
    channels = notify_channels(n)
    now = time.time()
    if args.action == "test":
        event = events.test_event(t_s=now, origin=socket.gethostname())
    else:
        if args.days <= 0:
            raise InputError("--days", f"must be > 0, got {args.days:g}", "e.g. --days 7")
        from launch.report import _store
        from orchestrator.tracking.runs import list_jobs

        since = now - args.days * 86400
        rows = [
            {k: v for k, v in asdict(r).items() if k in ("job_id", "state", "reason", "step", "psi", "gamma")}
            for r in list_jobs(_store(args.tracking_uri), args.experiment)
            if r.start_time is not None and r.start_time / 1000 >= since
        ]
        event = events.summary_event(rows, since_s=since, until_s=now, experiment=args.experiment)
    out = console()
    failed = 0
    for channel in channels:
        result = deliver(channel, event, retries=n.retries, backoff_s=n.backoff_s)
        if result.ok:
            out.print(
                f"{channel.name}: sent ({result.attempts} attempt{'s' * (result.attempts > 1)}, {result.seconds:.2f} s)"
            )
        else:
            failed += 1
            out.print(f"[red]{channel.name}: failed[/red] after {result.attempts} attempts: {result.error}")
    return 1 if failed else 0
