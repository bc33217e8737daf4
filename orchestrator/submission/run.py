"""Run a prepared job on the cluster: join or start Ray, hand the job to the controller, follow it to its end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import InputError
from orchestrator.submission.preflight import check_capacity
from orchestrator.submission.prepare import Prepared
from orchestrator.submission.ray_cluster import init_ray
from orchestrator.submission.resume import ResumePlan

POLL_S = 1.0


@dataclass(frozen=True)
class Started:
    """A job the controller took: its ids, where it runs, and the controller actor that runs it."""

    job_id: str
    run_id: str
    where: str
    """Which Ray: "local Ray (in this process)" or "Ray cluster at …"."""
    tracking_uri: str
    state_dir: str
    controller: Any = field(repr=False)


@dataclass(frozen=True)
class Outcome:
    """How a followed job ended: what the closing summary shows."""

    state: str
    run_id: str | None
    summary: dict[str, Any]
    """The controller's summary of the run (stop reason, Ψ, Γ used and projected, forecast, blueprints…)."""
    error: str | None = None
    input_error: dict[str, str] | None = None
    """Bad input only the run could meet (InputError's fields): the CLI reports it as one line, exit 2."""

    @property
    def ok(self) -> bool:
        return self.state in ("finished", "stopped")


def start(prepared: Prepared) -> Started:
    """Join or start Ray (a head that outlives this process when the job is detached), check the cluster has the
    job's slots, and submit it to the controller. The caller ends Ray (`disconnect`) for an attached job."""
    from orchestrator.controller.actor import controller_handle

    job = prepared.plan.job
    where = init_ray(job, start_head=job.detach)
    check_capacity(job)
    controller = controller_handle(job.cluster.namespace, detached=job.detach or job.cluster.address is not None)
    sub = prepared.submission
    answer = sub.send(controller)
    return Started(
        job_id=sub.job_id,
        run_id=answer["run_id"],
        where=where,
        tracking_uri=sub.tracking_uri,
        state_dir=sub.state_dir,
        controller=controller,
    )


def start_resumed(rp: ResumePlan) -> Started:
    """Join or start Ray as `start` does, and hand the controller the job to continue from its checkpoint."""
    import ray

    from orchestrator.controller.actor import controller_handle

    job = rp.plan.job
    where = init_ray(job, start_head=job.detach)
    check_capacity(job)
    controller = controller_handle(job.cluster.namespace, detached=job.detach or job.cluster.address is not None)
    try:
        answer = ray.get(controller.resume.remote(str(rp.state_dir), rp.resume, rp.step, rp.was))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, InputError):
            raise exc.cause from None
        raise
    return Started(
        job_id=rp.job_id,
        run_id=answer["run_id"],
        where=where,
        tracking_uri=rp.tracking_uri,
        state_dir=str(rp.state_dir),
        controller=controller,
    )


def follow(started: Started, on_progress: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
    """Wait for the job's end; `on_progress` hears the controller's view of it (step, loss, Ψ, Γ, decision) about
    every POLL_S seconds."""
    import ray

    from orchestrator.priority import lower_priority

    lower_priority()  # this process only polls and draws: the ranks, on this machine or not, come first
    controller, job_id = started.controller, started.job_id
    while True:
        result = ray.get(controller.wait.remote(job_id, POLL_S))
        if on_progress is not None:
            on_progress(ray.get(controller.view.remote(job_id)))
        if result is not None:
            return Outcome(
                state=result["state"],
                run_id=result.get("run_id"),
                summary=result.get("summary") or {},
                error=result.get("error"),
                input_error=result.get("input_error"),
            )


def request_stop(started: Started, *, signal_name: str | None = None, timeout_s: float | None = None) -> None:
    """Ask the controller for a user stop: the job checkpoints, then ends as `stopped`; with `signal_name` (the
    client got SIGTERM or SIGINT) it ends as `interrupted`, resumable."""
    import ray

    if signal_name is None:
        ray.get(started.controller.request_stop.remote(started.job_id), timeout=timeout_s)
    else:
        ray.get(started.controller.request_stop.remote(started.job_id, "interrupted", signal_name), timeout=timeout_s)


def drain(started: Started, timeout_s: float) -> int:
    """Wait up to `timeout_s` for the run's MLflow writes to reach the store; returns how many are still owed (they
    wait in the job's journal for `cpr sync`)."""
    import ray

    return int(ray.get(started.controller.drain.remote(started.job_id, timeout_s)) or 0)
