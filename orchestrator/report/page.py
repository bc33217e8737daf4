"""One self-contained HTML page: inline CSS, every PNG embedded as a base64 data URI, no script and no URL, so it
opens offline and from an MLflow artifact view alike."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.report.data import RunData

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f6f7; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.stop { color: #c0392b; font-weight: bold; }
"""


def _t(text: str) -> str:
    """Text content escaped (quotes need no escaping outside attributes)."""
    return html.escape(text, quote=False)


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.5g}" if math.isfinite(value) else str(value)
    return str(value)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _figure(title: str, caption: str, path: Path) -> str:
    return f"<h2>{_t(title)}</h2><figure>{_img(path)}<figcaption>{_t(caption)} ({_t(path.name)})</figcaption></figure>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_t(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_t(fmt(c))}</td>' if isinstance(c, int | float) else f"<td>{_t(fmt(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_t(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def stop_sentence(run: RunData) -> str:
    """The decision in words, e.g. "stopped at step 120 (marginal_return)"."""
    if run.stop is None:
        return f"no stop recorded (state {run.status})"
    at = f" at step {run.stop.step}" if run.stop.step is not None else ""
    text = f"stopped{at} ({run.stop.reason or 'unknown reason'})"
    c = (run.summary or {}).get("cooldown") or {}
    if c.get("start_step") is not None:
        cut = f", cut short: {c['cut']}" if c.get("cut") else ""
        text = (
            f"stopped at step {c['end']['step']} ({run.stop.reason or 'unknown reason'}) after a learning-rate "
            f"cool-down ({c['shape']}{cut}) from its STOP decided{at}"
        )
    if run.rule_stop is not None and run.rule_stop.step is not None:
        mode = "shadow mode" if not run.rule_stop.enforced else "the rule"
        text += f"; the rule's own STOP ({mode}) at step {run.rule_stop.step} ({run.rule_stop.reason})"
    return text


def cross_influence_section(run: RunData, figures: Sequence[tuple[str, Path]]) -> str:
    """The section on the newest version's cross-influence map: what T is, its size, rank and energy, and the
    figures (caption, PNG path); empty when no version carries a map or nothing was drawn."""
    bp = run.cross_influence_blueprint()
    if bp is None or bp.cross_influence is None or not figures:
        return ""
    ci = bp.cross_influence
    where = f"blueprint v{bp.blueprint_version}" + (f" (step {bp.step})" if bp.step is not None else "")
    text = (
        f"From {where}: T_ij is the mean per-example gradient norm of submodule group i over the sampled windows "
        f"of data block j, measured by cpr select under the base model; {len(ci.groups)} groups × "
        f"{len(ci.blocks)} {ci.block_kind} blocks ({sum(ci.examples):,} windows). Its rank-{ci.rank} SVD summary "
        f"keeps {ci.energy:.1%} of Σσ² (σ₁ = {ci.singular_values[0]:.4g})."
    )
    shown = "".join(
        f"<figure>{_img(path)}<figcaption>{_t(caption)} ({_t(path.name)})</figcaption></figure>"
        for caption, path in figures
    )
    return f'<h2 id="cross-influence">Cross-influence: which data moves which submodules</h2><p>{_t(text)}</p>{shown}'


def run_page(
    run: RunData, figures: Sequence[tuple[str, str, Path]], cross_influence: Sequence[tuple[str, Path]] = ()
) -> str:
    """The page of one run: its decision and figures (title, caption, PNG path), and the cross-influence section
    when a version carries a map (its figures: caption, PNG path)."""
    final = run.gamma_final()
    facts: list[tuple[str, Any]] = [
        ("job", run.job_id),
        ("run", run.run_id),
        ("state", run.status),
        ("stop rule's Γ kind", run.resource),
        ("patience", run.patience),
        ("checks", len(run.psi.steps)),
        ("Ψ is", run.psi_label),
        ("final Ψ", run.psi.values[-1] if run.psi else None),
    ]
    if run.stop is not None and run.stop.step is not None:
        facts.append(("Ψ at the stop", run.psi.at(run.stop.step)))
    summary = run.summary or {}
    c = summary.get("cooldown") or {}
    if c.get("start_step") is not None:
        facts += [
            ("validation loss at the decision", c["decision"].get("val_loss")),
            ("validation loss after the cool-down", c["end"].get("val_loss")),
            ("Ψ gained by the cool-down", c.get("psi_gained")),
            ("cool-down steps", f"{c['start_step']} → {c['end']['step']} ({c['shape']})"),
        ]
    if summary.get("gamma_saved_fraction") is not None:
        facts.append(("Γ saved (fraction of the token budget left)", summary["gamma_saved_fraction"]))
    if summary.get("why"):
        facts.append(("why the rule stopped", summary["why"]))
    fc = run.forecast
    if fc:
        facts += [("forecast Ψ∞", fc.get("psi_inf")), ("forecast Ψ gain left to budget", fc.get("psi_gain_to_budget"))]
    body = [
        f"<h1>cpr report: {_t(run.job_id)}</h1>",
        f'<p class="stop">{_t(stop_sentence(run))}</p>',
        _table(("", ""), facts),
        "<h2>Γ at the end, by kind</h2>",
        _table(("kind", "Γ"), [(k + (" (rule)" if k == run.resource else ""), v) for k, v in final.items()]),
    ]
    body += [_figure(title, caption, path) for title, caption, path in figures]
    if not run.blueprints:
        body.append("<p>No blueprints were published by this run: no gradient-mass figures.</p>")
    body.append(cross_influence_section(run, cross_influence))
    return _document(f"cpr report {run.job_id}", "".join(body))


def sweep_page(runs: Sequence[RunData], kind: str, figures: Sequence[tuple[str, str, Path]]) -> str:
    """The comparison page of a sweep: one row per job, and the shared figures."""
    rows = []
    for run in runs:
        final = run.gamma_final()
        rows.append(
            (
                run.label,
                run.status,
                run.stop.reason if run.stop else None,
                run.stop.step if run.stop else None,
                run.psi.values[-1] if run.psi else None,
                final.get(kind),
                final.get("energy_kwh"),
                final.get("co2_kg"),
                final.get("tokens"),
            )
        )
    header = ("job", "state", "stop reason", "stop step", "final Ψ", f"Γ {kind}", "kWh", "kg CO₂", "tokens")
    body = [f"<h1>cpr sweep report: {len(runs)} jobs</h1>", _table(header, rows)]
    body += [_figure(title, caption, path) for title, caption, path in figures]
    return _document(f"cpr sweep report ({len(runs)} jobs)", "".join(body))
