"""The leaderboard as Markdown, CSV or one offline HTML page (the table for a terminal is the CLI's, from
`columns`). Every form carries the same rows; the HTML page adds each run's full carbon card."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from orchestrator.leaderboard.rank import Board, Group, Row
from orchestrator.report.page import _document, _t, _table

MISSING = "–"


def num(x: float | None, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return MISSING
    return f"{x:.{digits}g}"


def header(by: str) -> tuple[str, ...]:
    """The short columns of the terminal table and the Markdown form (docs/leaderboard.md says what each is)."""
    return (
        "rank",
        "job",
        "state",
        "Ψ",
        "Ψ₀",
        "Ψ₀ from",
        f"Γ {by}",
        f"CPR per {by}",
        "Γ saved",
        "stop",
        "kWh",
        "CO₂ kg",
        "gCO₂/kWh",
        "energy by",
        "ranks",
        "wall h",
        "note",
    )


SHORT_SOURCE = {"Ψ at step 0": "step 0", "untrained estimate −ln V": "−ln V est."}


def cells(row: Row) -> tuple[str, ...]:
    e, c = row.entry, row.entry.card
    return (
        MISSING if row.rank is None else str(row.rank),
        e.job_id,
        e.state,
        num(e.psi),
        num(row.baseline),
        SHORT_SOURCE.get(row.baseline_source, row.baseline_source),
        num(row.gamma_by),
        num(row.cpr),
        num(row.saved_by),
        e.stop_reason or MISSING,
        num(c.energy_kwh),
        num(c.co2_kg),
        num(c.grid_g_per_kwh),
        c.energy_method,
        MISSING if c.ranks is None else str(c.ranks),
        num(c.wall_hours),
        row.note,
    )


def columns(group: Group, by: str) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and one tuple of text cells per row of a group (the Markdown form shows these)."""
    return header(by), [cells(r) for r in group.rows]


TERMINAL_DROPS = ("state", "Ψ₀ from", "kWh", "gCO₂/kWh", "ranks", "wall h")
"""Left out of the terminal table so that it fits a terminal; every other form has them."""


def terminal_columns(group: Group, by: str) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """`columns` less TERMINAL_DROPS (the baseline's source shown as a mark on Ψ₀)."""
    head, rows = columns(group, by)
    keep = [i for i, h in enumerate(head) if h not in TERMINAL_DROPS]
    src = head.index("Ψ₀ from")
    base = head.index("Ψ₀")
    out = []
    for r in rows:
        cells_ = list(r)
        if cells_[src] != "step 0" and cells_[base] != MISSING:
            cells_[base] += f" ({cells_[src]})"
        out.append(tuple(cells_[i] for i in keep))
    return tuple(head[i] for i in keep), out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(board: Board) -> str:
    out = [f"# cpr leaderboard: CPR = (Ψ − Ψ_baseline) / Γ {board.by}", ""]
    for group in board.groups:
        head, rows = columns(group, board.by)
        out += [f"## {group.psi_name}, evaluation set {group.eval_set or 'not recorded'}", "", group.why, ""]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
        out.append("")
    if board.set_apart:
        out.append("Not training runs, not ranked: " + ", ".join(f"{e.job_id} ({e.kind})" for e in board.set_apart))
        out.append("")
    return "\n".join(out)


CSV_HEADER = (
    "group_psi",
    "group_units",
    "eval_set",
    "rank",
    "job_id",
    "run_id",
    "state",
    "psi",
    "psi_baseline",
    "baseline_from",
    "by",
    "gamma_by",
    "cpr",
    "gamma_saved_by",
    "stop_reason",
    "energy_kwh",
    "energy_method",
    "co2_kg",
    "co2_method",
    "grid_g_per_kwh",
    "grid_source",
    "hardware",
    "ranks",
    "wall_hours",
    "estimates",
    "note",
)


def _raw(x: float | int | None) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else repr(x)


def to_csv(board: Board) -> str:
    """One line per run, full precision, the card flattened (lists `; `-joined); a group's columns repeat."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for g in board.groups:
        for r in g.rows:
            e, c = r.entry, r.entry.card
            w.writerow(
                (
                    g.psi_name,
                    g.psi_units,
                    g.eval_set or "",
                    "" if r.rank is None else r.rank,
                    e.job_id,
                    e.run_id,
                    e.state,
                    _raw(e.psi),
                    _raw(r.baseline),
                    r.baseline_source,
                    board.by,
                    _raw(r.gamma_by),
                    _raw(r.cpr),
                    _raw(r.saved_by),
                    e.stop_reason or "",
                    _raw(c.energy_kwh),
                    c.energy_method,
                    _raw(c.co2_kg),
                    c.co2_method,
                    _raw(c.grid_g_per_kwh),
                    c.grid_source,
                    " | ".join(c.hardware),
                    _raw(c.ranks),
                    _raw(c.wall_hours),
                    "; ".join(c.estimates),
                    r.note,
                )
            )
    return buf.getvalue()


def _card(row: Row) -> str:
    e, c = row.entry, row.entry.card
    facts: Sequence[tuple[str, Any]] = (
        ("run", e.run_id),
        ("energy", f"{num(c.energy_kwh)} kWh, measured by {c.energy_method}"),
        ("CO₂", f"{num(c.co2_kg)} kg = {c.co2_method}"),
        ("grid intensity", f"{num(c.grid_g_per_kwh)} gCO₂/kWh ({c.grid_source})"),
        ("hardware", " | ".join(c.hardware) or "not recorded"),
        ("ranks", MISSING if c.ranks is None else c.ranks),
        ("wall time", f"{num(c.wall_hours)} h"),
        ("Γ by kind", ", ".join(f"{k} {num(v)}" for k, v in sorted(e.gamma.items())) or MISSING),
        ("Γ saved by the stop", ", ".join(f"{k} {num(v)}" for k, v in sorted(e.gamma_saved.items())) or MISSING),
        ("stop", f"{e.stop_reason or MISSING} (the rule's Γ kind: {e.rule_kind or MISSING})"),
        ("estimates", "; ".join(c.estimates) or "none"),
    )
    return f"<h3>{_t(e.job_id)}</h3>" + _table(("", ""), [(k, str(v)) for k, v in facts])


def to_html(board: Board) -> str:
    """One offline page: a ranked table per group, then each run's carbon card (no script, no URL)."""
    body = [
        "<h1>cpr leaderboard</h1>",
        f"<p>CPR = (Ψ − Ψ_baseline) / Γ {_t(board.by)}: the capability a run gained per unit of {_t(board.by)}. "
        "Runs are ranked only against runs of the same Ψ on the same evaluation set.</p>",
    ]
    for g in board.groups:
        head, rows = columns(g, board.by)
        body += [f"<h2>{_t(g.psi_name)}, evaluation set {_t(g.eval_set or 'not recorded')}</h2>", f"<p>{_t(g.why)}</p>"]
        body.append(_table(head, rows))
    body.append("<h2>Carbon disclosure, per run</h2>")
    body += [_card(r) for g in board.groups for r in g.rows]
    if board.set_apart:
        apart = ", ".join(f"{e.job_id} ({e.kind})" for e in board.set_apart)
        body.append(f"<p>Not training runs, not ranked: {_t(apart)}</p>")
    return _document(f"cpr leaderboard by {board.by}", "".join(body))


FORMATS = {"md": to_markdown, "csv": to_csv, "html": to_html}
