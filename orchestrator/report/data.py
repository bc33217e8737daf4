"""A run as the report needs it, read from the MLflow store alone: metric histories, tags, params, summary.json
and published blueprints, as plain dataclasses (no MLflow objects leak out)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.blueprints import Blueprint, parse_blueprint
from orchestrator.core import names
from orchestrator.core.psi import PsiSpec
from orchestrator.errors import InputError
from orchestrator.tracking.published import artifact_path

ENERGY_PREFIX = "energy/"


@dataclass(frozen=True)
class Series:
    """One metric's history: values at optimizer steps, in step order."""

    steps: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.steps)

    def at(self, step: int | None) -> float | None:
        """The value at `step`, or at the last step before it (None before the first point or without a step)."""
        if step is None:
            return None
        best = None
        for s, v in zip(self.steps, self.values, strict=True):
            if s > step:
                break
            best = v
        return best


@dataclass(frozen=True, kw_only=True)
class StopPoint:
    """Where a STOP fell: its step, reason, and whether it ended the run or was the rule's shadow-mode verdict."""

    step: int | None
    reason: str | None
    enforced: bool


@dataclass(kw_only=True)
class RunData:
    """Everything the report draws for one run."""

    run_id: str
    job_id: str
    run_name: str
    status: str
    resource: str
    """The Γ kind the stop rule divided by (`stop.resource`)."""
    patience: int | None
    decision: str | None
    reason: str | None
    psi: Series
    gamma: dict[str, Series]
    ratio: Series
    eta: Series
    checks_below: Series
    energy_kwh: dict[str, float] = field(default_factory=dict)
    """Final cumulative kWh per telemetry source (energy/<source>_kwh), without the total."""
    stop: StopPoint | None = None
    rule_stop: StopPoint | None = None
    """The rule's own STOP when it differs from `stop` (shadow mode, or a later budget/user stop)."""
    forecast: dict[str, Any] | None = None
    psi_label: str = PsiSpec().label()
    """What Ψ is, from the run's psi.name and psi.units params (a run from before `psi=`: −validation loss)."""
    summary: dict[str, Any] | None = None
    blueprints: list[Blueprint] = field(default_factory=list)
    adapt_strategy: str | None = None
    """An adapt job's selection strategy (tag cpr.adapt.strategy): a sweep's legend names it."""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    """The run's params and tags as logged (the leaderboard's carbon card reads them)."""
    start_ms: int | None = None
    end_ms: int | None = None
    """MLflow's start and end times of the run (ms since the epoch; end None while it runs)."""
    psi_initial: float | None = None
    """Ψ of the model as it started, before any step (metric cpr/psi_initial; None for runs from before it)."""

    @property
    def label(self) -> str:
        """How a comparison names the run: its job id, and an adapt job's strategy."""
        return f"{self.job_id} ({self.adapt_strategy})" if self.adapt_strategy else self.job_id

    def gamma_final(self) -> dict[str, float]:
        return {k: s.values[-1] for k, s in self.gamma.items() if s}

    def cross_influence_blueprint(self) -> Blueprint | None:
        """The newest published version that carries a cross-influence map (schema 1.2), None when none does."""
        return next((bp for bp in reversed(self.blueprints) if bp.cross_influence is not None), None)


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _history(client: Any, run_id: str, key: str) -> Series:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    by_step = {int(m.step): float(m.value) for m in points}  # a step logged twice (a replay): the last one
    steps = sorted(by_step)
    return Series(tuple(steps), tuple(by_step[s] for s in steps))


def _artifact(client: Any, run_id: str, path: str) -> bytes | None:
    """An artifact's bytes, None when the run has none at that path (or the artifact store cannot be read)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()
        except Exception:  # MLflow raises several types for a missing artifact
            return None


def _stop_point(d: dict[str, Any] | None, *, enforced: bool) -> StopPoint | None:
    if not d or d.get("action") != "stop":
        return None
    step = d.get("step")
    return StopPoint(step=None if step is None else int(step), reason=d.get("reason"), enforced=enforced)


def _blueprints(client: Any, run: Any) -> list[Blueprint]:
    versions = sorted(int(v) for v in run.data.tags.get(names.BLUEPRINT_VERSIONS, "").split(",") if v.strip().isdigit())
    out = []
    for v in versions:
        data = _artifact(client, run.info.run_id, artifact_path(v))
        if data is not None:
            out.append(parse_blueprint(data, source=f"run {run.info.run_id} {artifact_path(v)}"))
    return out


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().lstrip("-").isdigit() else None


def _psi_label(params: dict[str, str]) -> str:
    """`Ψ = <name> [<units>]` from a run's params."""
    default = PsiSpec()
    return PsiSpec(name=params.get("psi.name", default.name), units=params.get("psi.units", default.units)).label()


def _read(client: Any, run: Any, *, blueprints: bool) -> RunData:
    run_id, tags, params, metrics = run.info.run_id, run.data.tags, run.data.params, run.data.metrics
    raw = _artifact(client, run_id, "summary.json")
    summary = json.loads(raw) if raw else None
    resource = params.get("stop.resource") or (summary or {}).get("resource") or "energy_kwh"
    gamma = {kind: _history(client, run_id, names.gamma(kind)) for kind in names.gamma_kinds(metrics)}
    energy = {
        k.removeprefix(ENERGY_PREFIX).removesuffix("_kwh"): float(v)
        for k, v in metrics.items()
        if k.startswith(ENERGY_PREFIX) and k.endswith("_kwh") and k != "energy/total_kwh"
    }
    psi = _history(client, run_id, names.PSI)
    stop = _stop_point((summary or {}).get("decision"), enforced=True)
    if stop is None and tags.get(names.DECISION) == "stop":  # no summary.json (yet): the tags and the last check
        stop = StopPoint(step=psi.steps[-1] if psi else None, reason=tags.get(names.REASON) or None, enforced=True)
    rule_stop = _stop_point((summary or {}).get("rule_decision"), enforced=bool((summary or {}).get("enforce", True)))
    if rule_stop is not None and stop is not None and (rule_stop.step, rule_stop.reason) == (stop.step, stop.reason):
        rule_stop = None
    forecast = (summary or {}).get("forecast")
    return RunData(
        run_id=run_id,
        job_id=tags.get(names.JOB_ID, run_id),
        run_name=run.info.run_name or "",
        status=tags.get(names.STATE) or run.info.status,
        resource=resource,
        patience=_int(params.get("stop.patience")),
        decision=tags.get(names.DECISION) or None,
        reason=tags.get(names.REASON) or None,
        psi=psi,
        psi_label=_psi_label(params),
        gamma=dict(sorted(gamma.items())),
        ratio=_history(client, run_id, names.RATIO),
        eta=_history(client, run_id, names.ETA),
        checks_below=_history(client, run_id, names.CHECKS_BELOW),
        energy_kwh=dict(sorted(energy.items())),
        stop=stop,
        rule_stop=rule_stop,
        forecast=forecast if isinstance(forecast, dict) and forecast.get("ok") else None,
        summary=summary,
        blueprints=_blueprints(client, run) if blueprints else [],
        adapt_strategy=tags.get(names.ADAPT_STRATEGY) or None,
        params=dict(params),
        tags=dict(tags),
        start_ms=run.info.start_time,
        end_ms=run.info.end_time,
        psi_initial=metrics.get(names.PSI_INITIAL),
    )


def _cpr_runs(client: Any, experiment: str, extra_filter: str | None = None, *, strict: bool = False) -> list[Any]:
    """The cpr runs of an experiment (none when it does not exist; `strict`: an InputError on --experiment)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        if strict:
            raise InputError("--experiment", f"no experiment {experiment!r} in the store", "see the MLflow UI's list")
        return []
    where = "tags.`cpr.job_id` != ''" + (f" and {extra_filter}" if extra_filter else "")
    try:
        return client.search_runs([exp.experiment_id], filter_string=where, max_results=1000)
    except Exception as exc:  # MLflow's parser error for a bad --filter
        problem = " ".join(str(exc).split())[:200]
        raise InputError(
            "--filter", f"MLflow cannot search with it: {problem}", "e.g. tags.`cpr.model` = 'x'"
        ) from None


def _match(runs: list[Any], ref: str, uri: str) -> Any:
    for run in runs:
        if ref in (run.info.run_id, run.data.tags.get(names.JOB_ID)):
            return run
    raise InputError("RUN_OR_JOB_ID", f"no job or run {ref!r} in {uri}", "see `cpr status` for the jobs there")


def load_run(uri: str, ref: str, *, experiment: str = "cpr", blueprints: bool = True) -> RunData:
    """One run by job id (tag cpr.job_id) or run id; InputError when the store has neither."""
    client = _client(uri)
    return _read(client, _match(_cpr_runs(client, experiment), ref, uri), blueprints=blueprints)


def load_runs(
    uri: str, refs: list[str] | None = None, *, filter_string: str | None = None, experiment: str = "cpr"
) -> list[RunData]:
    """The runs of a sweep: the ones named (in that order; a sweep id, tag `cpr.sweep`, names all its runs), or
    every cpr run the MLflow filter selects (oldest first); blueprints are not read (the comparison does not draw
    them)."""
    client = _client(uri)
    runs = sorted(_cpr_runs(client, experiment, filter_string), key=lambda r: (r.info.start_time or 0, r.info.run_id))
    chosen = runs
    if refs:
        chosen = []
        for ref in refs:
            sweep = [run for run in runs if run.data.tags.get(names.SWEEP) == ref]
            chosen += sweep or [_match(runs, ref, uri)]
    if not chosen:
        raise InputError("--filter", f"selects no cpr run in {uri}", "check it against `cpr status`")
    return [_read(client, run, blueprints=False) for run in chosen]


def load_all(
    uri: str, *, filter_string: str | None = None, experiment: str = "cpr", baseline: str | None = None
) -> tuple[list[RunData], RunData | None]:
    """Every cpr run of `experiment` the MLflow filter selects (oldest first; an empty list when none does), and the
    run `baseline` names (run id, job id or run name, searched in the whole experiment: the filter need not select
    it). InputError on --experiment, --filter or --baseline when they name nothing; blueprints are not read."""
    client = _client(uri)
    runs = sorted(
        _cpr_runs(client, experiment, filter_string, strict=True), key=lambda r: (r.info.start_time or 0, r.info.run_id)
    )
    base = None
    if baseline is not None:
        every = runs if not filter_string else _cpr_runs(client, experiment)
        found = [r for r in every if baseline in (r.info.run_id, r.data.tags.get(names.JOB_ID), r.info.run_name)]
        if not found:
            raise InputError("--baseline", f"no run {baseline!r} in experiment {experiment!r}", "give a run or job id")
        base = _read(client, found[0], blueprints=False)
    return [_read(client, run, blueprints=False) for run in runs], base
