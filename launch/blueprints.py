"""`cpr blueprint validate|show|diff|aggregate`: inspect gradient blueprint files (§5, App. A; docs/blueprints.md).

Human output is rich tables; `--json` prints one JSON object. Bad files raise InputError, which the dispatcher
prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from launch.output import console, fmt
from orchestrator.blueprints import (
    AggregateTable,
    Blueprint,
    aggregate_blueprints,
    blueprint_to_dict,
    diff_blueprints,
    load_blueprint,
)
from orchestrator.blueprints.consistency import consistency_notes, degenerate_entries
from orchestrator.errors import InputError

EPILOG = """\
A blueprint is JSON in the paper's Appendix A.1 shape (model_id, training_checkpoint, layers[] with id,
gradient_norm, alpha, gamma, k_star, domain_tags) or schema 1.x, which adds schema_version, versions, CIs,
parameter prefixes, fit quality, resource model, privacy and provenance (1.1: DP accounting; 1.2: the
cross-influence map of `cpr select`, which `show` summarises).
Schema: orchestrator/blueprints/schema/blueprint.schema.json

Published blueprints (what `cpr submit` jobs publish to MLflow) are read with `list` and `get`:
  cpr blueprint list [--run RUN | --model MODEL_ID]      versions, with run, step and checkpoint
  cpr blueprint get RUN|MODEL_ID [--version N] [-o FILE]  the published JSON, byte for byte
"""


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "blueprint",
        help="list and get published gradient blueprints; validate, show, diff and aggregate blueprint files",
        description="Inspect gradient blueprints: submodule-level gradient statistics released at a checkpoint.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="blueprint_verb", metavar="ACTION")
    sub.required = True

    help_uri = "MLflow tracking URI (default: the SQLite store under ./cpr_runs)"
    ls = sub.add_parser(
        "list",
        help="list the blueprint versions runs published to MLflow",
        description="List published blueprint versions (each validated as it is read), by model id and version.",
    )
    which = ls.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="RUN", help="only this MLflow run id or cpr job id")
    which.add_argument("--model", metavar="MODEL_ID", help="only this model id")
    ls.add_argument("--tracking-uri", default=None, help=help_uri)
    ls.add_argument("--experiment", default="cpr", help="MLflow experiment (default: cpr)")
    ls.add_argument("--json", action="store_true", help="print one JSON object per version")
    ls.set_defaults(func=run_list)

    g = sub.add_parser(
        "get",
        help="write one published blueprint, byte for byte",
        description="Write a published blueprint exactly as it was published, to FILE or standard output.",
    )
    g.add_argument("ref", metavar="RUN|MODEL_ID", help="MLflow run id, cpr job id or model id")
    g.add_argument("--version", type=_version, default=None, metavar="N", help="version to get (default: the latest)")
    g.add_argument("-o", "--output", metavar="FILE", default=None, help="write to FILE (default: standard output)")
    g.add_argument("--tracking-uri", default=None, help=help_uri)
    g.add_argument("--experiment", default="cpr", help="MLflow experiment (default: cpr)")
    g.set_defaults(func=run_get)

    v = sub.add_parser(
        "validate",
        help="check files against the blueprint schema",
        description="Validate blueprint files against the JSON Schema and the rules it cannot say (finite "
        "numbers, unique ids, size cap). Prints one OK line per file, with notes on numbers that do not follow from "
        "each other and warnings on entries whose fit supports no recommendation; stops at the first bad file "
        "(exit 2).",
    )
    v.add_argument("files", nargs="+", metavar="FILE", help="blueprint JSON files")
    v.add_argument("--strict", action="store_true", help="exit 1 when any entry has a warning (for CI gates)")
    v.set_defaults(func=run_validate)

    s = sub.add_parser(
        "show",
        help="print a blueprint as a table",
        description="Print a blueprint: header fields, then one row per submodule.",
    )
    s.add_argument("file", metavar="FILE", help="a blueprint JSON file")
    s.add_argument("--json", action="store_true", help="print the validated blueprint as one JSON object")
    s.set_defaults(func=run_show)

    d = sub.add_parser(
        "diff",
        help="compare the gradient ranking of two blueprints",
        description="Per common id: rank by gradient_norm in A and B (1 = largest), rank change (B − A) and norm "
        "ratio (B / A); ids on one side only; Spearman ρ over the common ids (none with fewer than 3).",
    )
    d.add_argument("a", metavar="A", help="the first blueprint file")
    d.add_argument("b", metavar="B", help="the second blueprint file")
    d.add_argument("--json", action="store_true", help="print the diff as one JSON object")
    d.set_defaults(func=run_diff)

    a = sub.add_parser(
        "aggregate",
        help="combine blueprints into one table (App. A.2)",
        description="Combine blueprint files into one table keyed (model_id, training_checkpoint, layer id). "
        "As in the paper's App. A.2, a later file overwrites an earlier key; overwritten keys are counted.",
    )
    a.add_argument("files", nargs="+", metavar="FILE", help="blueprint JSON files, in order")
    a.add_argument("--csv", metavar="OUT", help="write the table as CSV to OUT ('-' for standard output)")
    a.set_defaults(func=run_aggregate)


# --------------------------------------------------------------------------------------------- list, get


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def run_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from launch.jobs import _tracking_uri
    from orchestrator.tracking.published import list_published

    rows = list_published(
        _tracking_uri(args.tracking_uri), run=args.run, model_id=args.model, experiment=args.experiment
    )
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return 0
    con = console()
    if not rows:
        con.print("no published blueprints")
        return 0
    table = Table(show_edge=False)
    for name in ("model_id", "version", "checkpoint", "step", "tokens", "run", "job", "created"):
        table.add_column(name, justify="right" if name in ("version", "step", "tokens") else "left")
    for r in rows:
        table.add_row(
            escape(r.model_id),
            f"v{r.version}",
            escape(f"{r.training_checkpoint:g}" + (f" ({r.checkpoint})" if r.checkpoint else "")),
            "–" if r.step is None else str(r.step),
            "–" if r.tokens_seen is None else f"{r.tokens_seen:,}",
            r.run_id[:12],
            escape(r.job_id or "–"),
            escape(r.created_at or "–"),
        )
    con.print(table)
    return 0


def run_get(args: argparse.Namespace) -> int:
    from launch.jobs import _tracking_uri
    from orchestrator.tracking.published import fetch_published

    row, data = fetch_published(
        _tracking_uri(args.tracking_uri), args.ref, version=args.version, experiment=args.experiment
    )
    if args.output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        with open(args.output, "wb") as fh:
            fh.write(data)
    except OSError as err:
        raise InputError("-o", f"cannot write {args.output}: {err.strerror or err}", "check the path") from None
    print(f"wrote {args.output}: {row.model_id} v{row.version} (run {row.run_id}, step {row.step})", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- validate


def run_validate(args: argparse.Namespace) -> int:
    warned = False
    for path in args.files:
        bp = load_blueprint(path)
        print(f"OK {path} ({len(bp.layers)} layers, schema {bp.shape})", flush=True)
        for note in consistency_notes(bp):
            print(f"  note: {note}", flush=True)
        for warning in degenerate_entries(bp):
            print(f"  warning: {warning}", flush=True)
            warned = True
    return 1 if args.strict and warned else 0


# --------------------------------------------------------------------------------------------- show


def _header(bp: Blueprint) -> str:
    parts = [f"[bold]{escape(bp.model_id)}[/bold]", f"checkpoint {bp.training_checkpoint:g}", f"schema {bp.shape}"]
    if bp.blueprint_version is not None:
        parts.append(f"v{bp.blueprint_version}")
    for label, value in (("created", bp.created_at), ("run", bp.run_id), ("step", bp.step)):
        if value is not None:
            parts.append(f"{label} {escape(str(value))}")
    if bp.tokens_seen is not None:
        parts.append(f"tokens {bp.tokens_seen:,}")
    return ", ".join(parts)


SHOW_SINGULAR_VALUES = 5
SHOW_TOP = 3
"""`show` lists this many singular values, and this many groups and blocks of the first singular vectors."""


def _top(names: Sequence[str], loadings: Sequence[float]) -> str:
    """The SHOW_TOP names with the largest |loading|, each with its signed loading."""
    order = sorted(range(len(names)), key=lambda i: -abs(loadings[i]))[:SHOW_TOP]
    return ", ".join(f"{escape(names[i])} {loadings[i]:+.2f}" for i in order)


def cross_influence_lines(bp: Blueprint) -> list[str]:
    """The cross-influence summary `show` prints (rich markup), none without a map: its size, rank and energy, the
    leading singular values, and the groups and blocks that load most on the first pattern (σ₁'s vectors)."""
    ci = bp.cross_influence
    if ci is None:
        return []
    sv = ", ".join(fmt(s, 3) for s in ci.singular_values[:SHOW_SINGULAR_VALUES])
    more = f", … ({len(ci.singular_values)} in all)" if len(ci.singular_values) > SHOW_SINGULAR_VALUES else ""
    return [
        f"cross-influence: {len(ci.groups)} groups × {len(ci.blocks)} {escape(ci.block_kind)} blocks "
        f"({sum(ci.examples):,} windows), rank {ci.rank} keeps {ci.energy:.1%} of Σσ²; σ: {sv}{more}",
        f"  first pattern (σ₁ {fmt(ci.singular_values[0], 3)}): groups {_top(ci.groups, [r[0] for r in ci.u])}; "
        f"blocks {_top(ci.blocks, [r[0] for r in ci.v])}",
    ]


def run_show(args: argparse.Namespace) -> int:
    bp = load_blueprint(args.file)
    if args.json:
        print(json.dumps(blueprint_to_dict(bp), indent=2, allow_nan=False))
        return 0
    con = console()
    con.print(_header(bp))
    if bp.resource_model is not None:
        r = bp.resource_model
        extra = ", ".join(
            f"{k} {escape(str(v))}"
            for k, v in (("optimizer", r.optimizer), ("precision", r.precision), ("ZeRO", r.zero_stage))
            if v is not None
        )
        con.print(
            f"resource model: cost_fixed {fmt(r.cost_fixed)}, cost_per_param {fmt(r.cost_per_param)}"
            + (f" {escape(r.unit)}" if r.unit else "")
            + (f" ({extra})" if extra else "")
        )
    if bp.privacy is not None:
        p = bp.privacy
        guarantee = (
            f"ε {fmt(p.epsilon)}, δ {p.delta:g} ({escape(p.accountant or 'accountant unknown')}, "
            f"{p.composed_releases} queries; adjacency: {escape(p.adjacency or 'unstated')})"
            if p.epsilon is not None and p.delta is not None
            else "no stated ε, δ"
        )
        con.print(f"privacy: {p.mechanism} noise, clip {fmt(p.clip)}, σ {fmt(p.sigma)}, {guarantee}: {escape(p.note)}")
        if p.withheld:
            con.print(f"withheld: {escape(', '.join(p.withheld))}")
    for line in cross_influence_lines(bp):
        con.print(line)
    table = Table(show_edge=False)
    for name, justify in (
        ("id", "left"),
        ("gradient_norm", "right"),
        ("CI", "right"),
        ("n_params", "right"),
        ("alpha", "right"),
        ("gamma", "right"),
        ("gamma_fit", "right"),
        ("k*", "right"),
        ("domains", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for e in bp.layers:
        ci = f"[{fmt(e.ci.low)}, {fmt(e.ci.high)}] @{e.ci.level:g}" if e.ci else "–"
        k = fmt(e.k_star, 3) + ("" if e.k_star_interior in (None, True) else " (full)")
        if e.fit is not None and e.fit.error:
            k = "no fit"
        tags = " ".join(f"{escape(d)}={v:.3g}" for d, v in (e.domain_tags or {}).items()) or "–"
        table.add_row(
            escape(e.id),
            fmt(e.gradient_norm),
            escape(ci),
            f"{e.n_params:,}" if e.n_params is not None else "–",
            fmt(e.alpha, 3),
            fmt(e.gamma, 3),
            fmt(e.gamma_fit, 3),
            k,
            tags,
        )
    con.print(table)
    return 0


# --------------------------------------------------------------------------------------------- diff


def run_diff(args: argparse.Namespace) -> int:
    a, b = load_blueprint(args.a), load_blueprint(args.b)
    diff = diff_blueprints(a, b)
    if args.json:
        print(json.dumps({"file_a": args.a, "file_b": args.b, **diff.to_dict()}, indent=2, allow_nan=False))
        return 0
    con = console()
    con.print(f"A: {escape(args.a)}  ({escape(a.model_id)}, checkpoint {a.training_checkpoint:g})")
    con.print(f"B: {escape(args.b)}  ({escape(b.model_id)}, checkpoint {b.training_checkpoint:g})")
    table = Table(show_edge=False)
    for name in ("id", "rank A", "rank B", "Δrank", "norm A", "norm B", "B/A"):
        table.add_column(name, justify="left" if name == "id" else "right")
    for c in diff.common:
        table.add_row(
            escape(c.id),
            str(c.rank_a),
            str(c.rank_b),
            f"{c.rank_change:+d}" if c.rank_change else "0",
            fmt(c.norm_a),
            fmt(c.norm_b),
            fmt(c.norm_ratio, 3),
        )
    con.print(table)
    rho = (
        "undefined (fewer than 3 common ids or constant norms)"
        if diff.spearman_rho is None
        else (f"{diff.spearman_rho:.4f}")
    )
    con.print(f"{diff.n_common} common ids; Spearman ρ of the ranks: {rho}")
    if diff.only_a:
        con.print(f"only in A: {escape(', '.join(diff.only_a))}")
    if diff.only_b:
        con.print(f"only in B: {escape(', '.join(diff.only_b))}")
    return 0


# --------------------------------------------------------------------------------------------- aggregate


def run_aggregate(args: argparse.Namespace) -> int:
    loaded: Sequence[tuple[str, Blueprint]] = [(path, load_blueprint(path)) for path in args.files]
    table = aggregate_blueprints(loaded)
    summary = (
        f"{len(table.rows)} rows from {len(loaded)} file(s); {table.n_overwritten} key(s) overwritten by later files"
    )
    if args.csv == "-":
        table.to_csv(sys.stdout)
        return 0
    if args.csv is not None:
        try:
            table.to_csv(args.csv)
        except OSError as err:
            raise InputError("--csv", f"cannot write {args.csv}: {err.strerror or err}", "check the path") from None
        _print_summary(console(), f"wrote {args.csv}: {summary}", table)
        return 0
    con = console()
    out = Table(show_edge=False)
    for name in ("model_id", "checkpoint", "id", "gradient_norm", "alpha", "gamma", "k*", "source"):
        out.add_column(
            name, justify="right" if name in ("checkpoint", "gradient_norm", "alpha", "gamma", "k*") else "left"
        )
    for row in table.rows:
        e = row.layer
        out.add_row(
            escape(row.model_id),
            f"{row.training_checkpoint:g}",
            escape(e.id),
            fmt(e.gradient_norm),
            fmt(e.alpha, 3),
            fmt(e.gamma, 3),
            fmt(e.k_star, 3),
            escape(row.source),
        )
    con.print(out)
    _print_summary(con, summary, table)
    return 0


def _print_summary(con: Console, summary: str, table: AggregateTable) -> None:
    con.print(escape(summary))
    for o in table.overwritten:
        con.print(
            f"  overwritten: {escape(o.key[0])} @ {o.key[1]:g} {escape(o.key[2])} "
            f"({escape(o.previous_source)} -> {escape(o.source)})"
        )
