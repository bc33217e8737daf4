"""What a notification says: the events cpr pushes to people, each a plain JSON-safe dict with its figures.

Pure (no Ray, MLflow, HTTP): the controller's state machine builds them from a job's decision, summary or the
scheduler's word, and the shell sends them (`dispatch.py`). Every event has a stable `id` (a job, the event, and
what makes it unique: the check, the version, the incarnation), so the outbox can tell a repeat from a new one and
a receiver can drop a redelivery (docs/notify.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from orchestrator.core.numbers import json_safe

SCHEMA = "cpr-notification"
FORMAT_VERSION = 1


class NotifyEvent(StrEnum):
    STOP = "stop"
    """A job ended by a STOP (the rule, its budget, a user, the scheduler) with its figures and checkpoint."""
    DIVERGED = "diverged"
    """Non-finite losses past stop.max_nonfinite: the job stops."""
    SHADOW = "shadow"
    """stop.enforce=false: the rule would stop the job now; a person decides (`cpr stop JOB`)."""
    REALLOCATION = "reallocation"
    """The scheduler grew, shrank, paused, resumed or stopped (dominated) a job."""
    BLUEPRINT = "blueprint"
    """A gradient blueprint version was published."""
    FAILED = "failed"
    """A job failed (a rank's error, its gang lost too often)."""
    SUMMARY = "summary"
    """The store's runs over a period, sent on demand (`cpr notify summary`)."""
    TEST = "test"
    """A sample to check the set-up (`cpr notify test`)."""


JOB_EVENTS = (
    NotifyEvent.STOP,
    NotifyEvent.DIVERGED,
    NotifyEvent.SHADOW,
    NotifyEvent.REALLOCATION,
    NotifyEvent.BLUEPRINT,
    NotifyEvent.FAILED,
)
"""The events a job's controller sends (the others come from the command line)."""
DEFAULT_EVENTS = ("stop", "diverged", "shadow", "reallocation", "failed")
"""`notify.on` by default: every decision a person may act on; blueprint versions (four per job) are opt-in."""


def _g(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _gamma_line(gamma: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_g(v)}" for k, v in sorted(gamma.items())) or "—"


def _event(
    kind: NotifyEvent,
    key: str,
    job: Mapping[str, Any],
    t_s: float,
    title: str,
    lines: Sequence[str],
    *,
    headline: bool = True,
    **figures: Any,
) -> dict[str, Any]:
    """The common envelope: schema, id, event, the job (id, name, run), time, a one-line title and a chat message
    (its first line the title, without "cpr: ", unless `headline` is False)."""
    if headline:
        lines = [title.removeprefix("cpr: "), *lines]
    job_id = str(job.get("job_id", "cpr"))
    return json_safe(
        {
            "schema": SCHEMA,
            "format_version": FORMAT_VERSION,
            "id": f"{job_id}:{kind.value}:{key}",
            "event": kind.value,
            "t_s": t_s,
            **dict(job),
            "title": title,
            "message": "\n".join(lines),
            **figures,
        }
    )


def job_ref(job_id: str, name: str, run_id: str) -> dict[str, Any]:
    """Who an event is about: its job id, name and MLflow run."""
    return {"job_id": job_id, "name": name, "run_id": run_id}


def stop_event(job: Mapping[str, Any], summary: Mapping[str, Any], *, incarnation: int, t_s: float) -> dict[str, Any]:
    """The job ended by a STOP (any reason): Ψ, Γ by kind, the ratio and η it decided on, the forecast's gain left,
    Γ saved and where its checkpoint is."""
    reason = summary.get("reason") or "budget"
    decision = summary.get("decision") or {}
    evidence = decision.get("evidence") or {}
    forecast = summary.get("forecast") or {}
    gain_left = evidence.get("left")
    if gain_left is None and forecast.get("ok"):  # a relative or absolute η: the forecast's gain to the budget
        gain_left = forecast.get("psi_gain_to_budget")
    ratio, eta = decision.get("ratio", summary.get("last_ratio")), decision.get("eta", summary.get("eta"))
    saved = summary.get("gamma_saved_fraction")
    step = summary.get("step")
    verb = "finished at its budget" if reason == "budget" else f"stopped ({reason})"
    title = f"cpr: {job['job_id']} {verb} at step {_g(step)}"
    lines = [
        f"Ψ {_g(summary.get('psi'))}  Γ {_gamma_line(summary.get('gamma') or {})}",
        f"ratio {_g(ratio)}  η {_g(eta)}  gain left {_g(gain_left)}",
        f"Γ saved {'—' if saved is None else f'{saved:.1%}'} of the token budget",
    ]
    cooldown = summary.get("cooldown") or {}
    if cooldown.get("start_step") is not None:
        d = cooldown["decision"]
        lines.insert(
            1,
            f"decided at step {cooldown['start_step']} (val loss {_g(d.get('val_loss'))}); the learning-rate "
            f"cool-down after it gained Ψ {_g(cooldown.get('psi_gained'))}",
        )
    if summary.get("checkpoint"):
        lines.append(f"checkpoint: {summary['checkpoint']}")
    lines.append(f"report: cpr report {job['job_id']}")
    return _event(
        NotifyEvent.STOP,
        str(incarnation),
        job,
        t_s,
        title,
        lines,
        reason=reason,
        step=step,
        psi=summary.get("psi"),
        val_loss=summary.get("val_loss"),
        gamma=dict(summary.get("gamma") or {}),
        resource=summary.get("resource"),
        ratio=ratio,
        eta=eta,
        gain_left=gain_left,
        gamma_saved_fraction=saved,
        checkpoint=summary.get("checkpoint"),
        cooldown=dict(cooldown) or None,
    )


def diverged_event(job: Mapping[str, Any], decision: Mapping[str, Any], *, t_s: float) -> dict[str, Any]:
    """Non-finite losses for stop.max_nonfinite reports in a row: the job stops on its last finite checkpoint."""
    step = decision.get("step")
    title = f"cpr: {job['job_id']} diverged at step {_g(step)}"
    lines = [
        f"non-finite loss for {decision.get('checks_below', '?')} reports in a row; the job stops, its last "
        "checkpoint of a finite state is kept",
        f"report: cpr report {job['job_id']}",
    ]
    return _event(
        NotifyEvent.DIVERGED,
        f"{decision.get('check')}-{step}",
        job,
        t_s,
        title,
        lines,
        step=step,
        decision=dict(decision),
    )


def shadow_event(
    job: Mapping[str, Any], decision: Mapping[str, Any], gamma: Mapping[str, float], *, t_s: float
) -> dict[str, Any]:
    """Shadow mode (stop.enforce=false): the rule would stop now; the job runs on until a person stops it."""
    step = decision.get("step")
    evidence = decision.get("evidence") or {}
    title = f"cpr: the stop rule would stop {job['job_id']} now (step {_g(step)})"
    lines = [
        f"the stop rule would stop {job['job_id']} at step {_g(step)}: ratio {_g(decision.get('ratio'))} < "
        f"η {_g(decision.get('eta'))} for {decision.get('checks_below')} checks",
        f"Ψ {_g(decision.get('psi'))}  Γ {_gamma_line(gamma)}  gain left {_g(evidence.get('left'))}",
        "it runs on (stop.enforce=false): you decide",
        f"stop it now: cpr stop {job['job_id']}",
    ]
    return _event(
        NotifyEvent.SHADOW,
        str(decision.get("check")),
        job,
        t_s,
        title,
        lines,
        headline=False,
        step=step,
        psi=decision.get("psi"),
        gamma=dict(gamma),
        ratio=decision.get("ratio"),
        eta=decision.get("eta"),
        gain_left=evidence.get("left"),
        stop_command=f"cpr stop {job['job_id']}",
    )


def reallocation_kind(action: str, from_slots: int, to_slots: int, reason: str, was_paused: bool) -> str | None:
    """The scheduler's decision in a person's words (None: not a reallocation, e.g. a job's first start or the slots
    given back as it ended)."""
    if action == "resize":
        return "grown" if to_slots > from_slots else "shrunk"
    if action == "pause":
        return "paused"
    if action == "start" and was_paused:
        return "resumed"
    if action == "stop" and reason.startswith("dominated"):
        return "dominated"
    return None


def reallocation_event(job: Mapping[str, Any], kind: str, entry: Mapping[str, Any], *, t_s: float) -> dict[str, Any]:
    """A resize, a pause, a resume or a dominated job's STOP, with the scheduler's reason and figures."""
    frm, to = entry.get("from_slots"), entry.get("to_slots")
    title = f"cpr: {job['job_id']} {kind} ({frm} → {to} slots)"
    lines = [
        f"why: {entry.get('reason')}",
        f"ratio {_g(entry.get('ratio'))}  η {_g(entry.get('eta'))}",
    ]
    return _event(
        NotifyEvent.REALLOCATION,
        f"{kind}-{t_s:.3f}",
        job,
        t_s,
        title,
        lines,
        change=kind,
        from_slots=frm,
        to_slots=to,
        reason=entry.get("reason"),
        ratio=entry.get("ratio"),
        eta=entry.get("eta"),
    )


def blueprint_event(job: Mapping[str, Any], model_id: str, record: Mapping[str, Any], *, t_s: float) -> dict[str, Any]:
    """A new blueprint version: which model, which version, at which step, where the file is."""
    version = record.get("version")
    title = f"cpr: blueprint {model_id} v{version} published by {job['job_id']}"
    lines = [
        f"at step {_g(record.get('step'))} ({_g(record.get('tokens'))} tokens)",
        f"get it: cpr blueprint get {model_id} --version {version}",
    ]
    return _event(
        NotifyEvent.BLUEPRINT,
        f"v{version}",
        job,
        t_s,
        title,
        lines,
        model_id=model_id,
        version=version,
        step=record.get("step"),
        tokens=record.get("tokens"),
        path=record.get("path"),
    )


def failed_event(job: Mapping[str, Any], error: str, *, incarnation: int, t_s: float) -> dict[str, Any]:
    """A failed job with its error's last line."""
    title = f"cpr: {job['job_id']} failed"
    last = error.strip().splitlines()[-1] if error.strip() else "unknown error"
    lines = [last[:500], f"details: cpr status; cpr report {job['job_id']}"]
    return _event(NotifyEvent.FAILED, str(incarnation), job, t_s, title, lines, error=error[-2000:])


def test_event(*, t_s: float, origin: str) -> dict[str, Any]:
    """A sample message that says it is a test."""
    title = "cpr: test notification"
    lines = [
        "a test from `cpr notify test`: if you read this, cpr's notifications reach you",
        f"sent from {origin}",
    ]
    return _event(NotifyEvent.TEST, f"{t_s:.6f}", {"job_id": "cpr-test"}, t_s, title, lines, headline=False)


def summary_event(
    rows: Sequence[Mapping[str, Any]], *, since_s: float, until_s: float, experiment: str
) -> dict[str, Any]:
    """The store's jobs that started in [since_s, until_s]: how many ended how, Γ spent, and one line per job."""
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[str(r.get("state"))] = by_state.get(str(r.get("state")), 0) + 1
    energy = sum(float((r.get("gamma") or {}).get("energy_kwh", 0.0)) for r in rows)
    days = (until_s - since_s) / 86400
    title = f"cpr: {len(rows)} job{'' if len(rows) == 1 else 's'} in the last {days:.3g} days ({experiment})"
    lines = [", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) or "no jobs"]
    lines.append(f"energy {energy:.4g} kWh in all")
    for r in rows[:20]:
        reason = f" ({r['reason']})" if r.get("reason") else ""
        lines.append(f"- {r.get('job_id')}: {r.get('state')}{reason}, step {_g(r.get('step'))}, Ψ {_g(r.get('psi'))}")
    if len(rows) > 20:
        lines.append(f"… and {len(rows) - 20} more: cpr status")
    return _event(
        NotifyEvent.SUMMARY,
        f"{since_s:.0f}-{until_s:.0f}",
        {"job_id": "cpr-summary"},
        until_s,
        title,
        lines,
        experiment=experiment,
        since_t_s=since_s,
        jobs=[dict(r) for r in rows],
        by_state=by_state,
        energy_kwh=energy,
    )
