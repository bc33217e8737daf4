"""The leaderboard's runs from the MLflow store, through the report's reader (`orchestrator.report.data`)."""

from __future__ import annotations

import math

from orchestrator.core import names
from orchestrator.leaderboard.card import carbon_card
from orchestrator.leaderboard.rank import Entry
from orchestrator.report.data import RunData, load_all

LOSS_KINDS = ("val_loss", "domains")
"""Ψ kinds that are −(a held-out loss in nats/token): an untrained model scores about −ln V on them."""


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def untrained_estimate(params: dict[str, str]) -> float | None:
    """−ln V for a loss-type Ψ (a model at initialisation predicts about uniformly over its V tokens); None else."""
    vocab = _float(params.get("model.vocab_size"))
    if params.get("psi.kind", "val_loss") not in LOSS_KINDS or not vocab or vocab < 2:
        return None
    return -math.log(vocab)


def gamma_saved(run: RunData) -> dict[str, float]:
    """Γ the STOP left unspent, by kind: the summary's projection at the token budget − what was used."""
    summary = run.summary or {}
    if not summary.get("stopped"):
        return {}
    used, projected = summary.get("gamma") or {}, summary.get("gamma_projected_at_budget") or {}
    return {k: max(0.0, float(projected[k]) - float(v)) for k, v in used.items() if projected.get(k) is not None}


def entry(run: RunData) -> Entry:
    # Γ to the run's end (the ledger's totals in its summary), else its last check's: a short run's telemetry may
    # arrive after its last check.
    gamma = {k: float(v) for k, v in ((run.summary or {}).get("gamma") or {}).items()} or run.gamma_final()
    wall = None
    if run.start_ms and run.end_ms:
        wall = (run.end_ms - run.start_ms) / 3.6e6
    psi0 = run.psi_initial
    return Entry(
        run_id=run.run_id,
        job_id=run.job_id,
        state=run.status,
        kind=run.tags.get(names.KIND) or None,
        psi_name=run.tags.get(names.PSI_NAME) or run.params.get("psi.name") or "-val_loss",
        psi_units=run.tags.get(names.PSI_UNITS) or run.params.get("psi.units") or "nats/token",
        eval_set=run.params.get(names.EVAL_SET) or None,
        psi=run.psi.values[-1] if run.psi else None,
        psi_initial=psi0,
        psi_untrained_estimate=untrained_estimate(run.params),
        gamma=gamma,
        gamma_saved=gamma_saved(run),
        stop_reason=run.stop.reason if run.stop else run.reason,
        rule_kind=run.resource,
        card=carbon_card(run.tags, run.params, gamma, wall_hours=wall),
    )


def load_entries(
    uri: str, *, filter_string: str | None = None, experiment: str = "cpr", baseline: str | None = None
) -> tuple[list[Entry], Entry | None]:
    runs, base = load_all(uri, filter_string=filter_string, experiment=experiment, baseline=baseline)
    return [entry(r) for r in runs], None if base is None else entry(base)
