"""`cpr leaderboard`: every run in the store ranked by CPR = (Ψ − Ψ_baseline)/Γ, grouped by Ψ and evaluation set,
with each run's carbon disclosure card (docs/leaderboard.md)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from launch.output import console
from orchestrator.errors import InputError

if TYPE_CHECKING:
    from orchestrator.leaderboard import Board

FORMATS = ("table", "md", "csv", "html")


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "leaderboard",
        help="rank every run by capability per resource, with its carbon disclosure card",
        description="Rank the runs in the MLflow store by CPR = (Ψ − Ψ_baseline)/Γ of one kind, in groups of runs "
        "with the same Ψ on the same evaluation set, with energy and CO₂ and how each was measured. Without -o the "
        "table, md, csv or html goes to stdout.",
    )
    p.add_argument("--experiment", default="cpr", help="MLflow experiment (default: cpr)")
    p.add_argument(
        "--filter", default=None, help="an MLflow filter selecting runs, e.g. \"tags.`cpr.sweep` = 'debug-...'\""
    )
    p.add_argument(
        "--by",
        default=None,
        metavar="KIND",
        help="the Γ kind CPR divides by: energy_kwh, gpu_hours, co2_kg, tokens, flops, … (default: energy_kwh "
        "where measured, else tokens)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="RUN",
        help="a run (run id, job id or run name) whose final Ψ is Ψ_baseline for its group (default: each run's Ψ "
        "at step 0, else the untrained estimate −ln V for a loss-type Ψ)",
    )
    p.add_argument("--format", default="table", choices=FORMATS, help="table (default), md, csv or html")
    p.add_argument("-o", "--out", default=None, metavar="FILE", help="write it to FILE (default: stdout)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the SQLite store in ./cpr_runs)")
    p.set_defaults(func=leaderboard)


def _print_table(board: Board, out: Console) -> None:
    from rich.table import Table

    from orchestrator.leaderboard.render import terminal_columns

    for group in board.groups:
        head, rows = terminal_columns(group, board.by)
        out.print(f"{group.psi_name}, evaluation set {group.eval_set or 'not recorded'}: {group.why}", markup=False)
        table = Table(*head)
        table.columns[1].no_wrap = True  # the job id, whole
        for r in rows:
            table.add_row(*r)
        out.print(table)
    if board.set_apart:
        apart = ", ".join(f"{e.job_id} ({e.kind})" for e in board.set_apart)
        out.print(f"not training runs, not ranked: {apart}", markup=False)
    if not board.groups and not board.set_apart:
        out.print("no runs")


def leaderboard(args: argparse.Namespace) -> int:
    from launch.report import _store
    from orchestrator.core.resources import ResourceKind
    from orchestrator.leaderboard import leaderboard as rank_runs
    from orchestrator.leaderboard.render import FORMATS as RENDER

    if args.by is not None:
        ResourceKind.parse(args.by, field="--by")  # an unknown kind: refused before the store is read
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise InputError("-o", f"{out.parent} is not a folder", "write into an existing folder")
    uri = _store(args.tracking_uri)
    board = rank_runs(uri, filter_string=args.filter, experiment=args.experiment, by=args.by, baseline=args.baseline)
    if args.format == "table":
        if out is None:
            _print_table(board, console())
            return 0
        buf = io.StringIO()
        _print_table(board, Console(file=buf, width=220, color_system=None, soft_wrap=True))
        text = buf.getvalue()
    else:
        text = RENDER[args.format](board)
    if out is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        out.write_text(text, encoding="utf-8")
        print(out)
    return 0
