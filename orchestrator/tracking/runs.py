"""The read side of the store for the CLI: jobs as their runs record them, and user stop requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.core import names
from orchestrator.errors import InputError


@dataclass(frozen=True, kw_only=True)
class JobRow:
    job_id: str
    run_id: str
    run_name: str
    state: str
    decision: str | None
    reason: str | None
    step: int | None
    psi: float | None
    gamma: dict[str, float] = field(default_factory=dict)
    start_time: int | None = None
    end_time: int | None = None
    stop_requested: bool = False
    schedule: str | None = None
    """The scheduler's last decision on the job (tag cpr.schedule), e.g. "queued: needs 2 CPU slots, 0 of 2 free"."""
    slots: int | None = None
    """Pool slots it holds (tag cpr.slots): it changes with a resize or a pause."""
    controller: str | None = None
    """Its controller's identity (tag cpr.controller): whether it still runs tells a live job from a lost one."""
    state_dir: str | None = None
    """Its store folder (tag cpr.state_dir)."""
    notify: str | None = None
    """Its notifications' deliveries (tag cpr.notify), e.g. "3 sent, 1 failed (last: webhook: …)"."""
    last_report_t: float | None = None
    """When it last reported (epoch seconds): its newest check's time; `cpr status` sets it for a lost job from its
    store folder's files when they are at hand."""


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _runs(client: Any, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`cpr.job_id` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )


def list_jobs(tracking_uri: str, experiment: str = "cpr") -> list[JobRow]:
    client = _client(tracking_uri)
    rows = []
    for run in _runs(client, experiment):
        tags, metrics = run.data.tags, run.data.metrics
        step, last_t = None, None
        if names.PSI in metrics:
            hist = client.get_metric_history(run.info.run_id, names.PSI)
            step = max((m.step for m in hist), default=None)
            last_t = max((m.timestamp / 1000 for m in hist), default=None)
        rows.append(
            JobRow(
                job_id=tags[names.JOB_ID],
                run_id=run.info.run_id,
                run_name=run.info.run_name or "",
                state=tags.get(names.STATE, "unknown"),
                decision=tags.get(names.DECISION) or None,
                reason=tags.get(names.REASON) or None,
                step=step,
                psi=metrics.get(names.PSI),
                gamma=names.gamma_kinds(metrics),
                start_time=run.info.start_time,
                end_time=run.info.end_time,
                stop_requested=names.STOP_REQUESTED in tags,
                schedule=tags.get(names.SCHEDULE) or None,
                slots=int(tags[names.SLOTS]) if tags.get(names.SLOTS, "").isdigit() else None,
                controller=tags.get(names.CONTROLLER),
                state_dir=tags.get(names.STATE_DIR),
                notify=tags.get(names.NOTIFY) or None,
                last_report_t=last_t,
            )
        )
    return rows


def find_run(tracking_uri: str, job_or_run_id: str, experiment: str = "cpr") -> str:
    """Run id of a job id (tag cpr.job_id) or of a run id; InputError when neither is in the store."""
    client = _client(tracking_uri)
    for run in _runs(client, experiment):
        if job_or_run_id in (run.info.run_id, run.data.tags.get(names.JOB_ID)):
            return run.info.run_id
    raise InputError("job", f"no job or run {job_or_run_id!r} in {tracking_uri}", "see `cpr status` for the jobs there")


def request_stop(tracking_uri: str, run_id: str, *, by: str = "user") -> None:
    """`cpr stop`: the request's time (to the microsecond: a second request is another value) on the run's tag."""
    client = _client(tracking_uri)
    client.set_tag(run_id, names.STOP_REQUESTED, datetime.now(UTC).isoformat(timespec="microseconds"))
    client.set_tag(run_id, f"{names.STOP_REQUESTED}_by", by)


def cools_on_stop(tracking_uri: str, run_id: str) -> bool:
    """Whether a STOP of this job ends in a learning-rate cool-down (its params: train.schedule=wsd and
    stop.on_stop=cooldown; a run from before cool-downs has neither and halts)."""
    params = _client(tracking_uri).get_run(run_id).data.params
    return params.get("train.schedule") == "wsd" and params.get("stop.on_stop") == "cooldown"


def stop_request(client: Any, run_id: str) -> str | None:
    """The latest `cpr stop` request on the run (its time), or None."""
    return client.get_run(run_id).data.tags.get(names.STOP_REQUESTED)
