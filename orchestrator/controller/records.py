"""What the controller's state holds of one job: facts of its config, its persisted record (`handle.json`), and
its whole entry (tracker, record, logs' figures), each with a JSON round trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.lifecycle import JobLifecycle


@dataclass(frozen=True, kw_only=True)
class JobFacts:
    """What the decisions need of a job's config (`job_facts.job_facts` computes them from a `JobConfig`)."""

    name: str
    priority: int
    group: str | None
    num_workers: int
    """The ranks it asked for (what it starts and comes back from a pause with)."""
    min_world: int
    max_world: int
    slot_kind: str
    """The pool its ranks draw from: "CPU" or "GPU"."""
    slot_step: int
    """Slots per rank."""
    resize_cooldown_s: float | None
    max_restarts: int
    max_tokens: int
    tokens_per_step: int
    zero_stage: int
    notify_on: tuple[str, ...] = ()
    """The events its notifications send (`notify.on`; none when no channel is set)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobFacts:
        return cls(**{**data, "notify_on": tuple(data.get("notify_on", ()))})


@dataclass(kw_only=True)
class HandleRecord:
    """What `handle.json` keeps of a job (the rest is rebuilt from job.json, tracker.json and the logs)."""

    state: JobLifecycle = JobLifecycle.QUEUED
    submitted_t: float = 0.0
    slots: int = 0
    """Pool slots the scheduler gave it (0 while queued, and again once its STOP is decided)."""
    schedule: str = ""
    """The scheduler's last word on it, as `cpr status` shows it."""
    world: int = 0
    """Ranks of its current (or last) worker gang."""
    restart_to: int | None = None
    """A decided resize (the ranks to come back with) or pause (0): the ranks checkpoint at their next report."""
    resume: dict[str, Any] | None = None
    """The checkpoint its next gang loads: {"dir", "tag", "universal"}."""
    incarnation: int = 0
    """Gangs started before the current one (restarts)."""
    last_resize_t: float | None = None
    restarts: list[dict[str, Any]] = field(default_factory=list)
    """Each checkpoint-restart: {"step", "from_workers", "to_workers", "seconds"} (seconds from the decision to the
    new gang's start; 0 ranks: paused)."""
    psi_at_budget: float | None = None
    """Forecast Ψ at its token budget (grouped jobs only: what the scheduler's dominance test compares)."""
    train_s: float = 0.0
    probe_s: float = 0.0
    """Rank 0's training and probe seconds summed over its gangs."""
    checkpoint: dict[str, Any] | None = None
    """Its latest complete periodic checkpoint since its gang started: {"step", "tokens", "path", "world_size"}."""
    stop_request: str | None = None
    """The last `cpr stop` request (its run tag's time) acted on: a poll that finds it again does nothing."""
    failures: int = 0
    """Gangs lost to a dead rank (each restarted from a checkpoint while ≤ cluster.max_restarts)."""
    error: str | None = None
    input_error: dict[str, Any] | None = None
    """Set when it failed on bad input met at run time: InputError's field, problem and fix."""
    interrupted_by: str | None = None
    """The signal its client got (e.g. "SIGTERM") when it was interrupted."""
    psi_initial: float | None = None
    """Ψ of the model as it started, before any step (`Initial`): the baseline of its gain."""
    notify_sent: int = 0
    notify_failed: int = 0
    """Notification deliveries sent, and failed after their retries (per channel), since it was submitted."""
    notify_error: str | None = None
    """The last failed delivery's channel and error (URLs masked)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "submitted_t": self.submitted_t,
            "slots": self.slots,
            "schedule": self.schedule,
            "world": self.world,
            "restart_to": self.restart_to,
            "resume": self.resume,
            "incarnation": self.incarnation,
            "last_resize_t": self.last_resize_t,
            "restarts": [dict(r) for r in self.restarts],
            "psi_at_budget": self.psi_at_budget,
            "train_s": self.train_s,
            "probe_s": self.probe_s,
            "checkpoint": self.checkpoint,
            "failures": self.failures,
            "error": self.error,
            "input_error": self.input_error,
            # Only when set: a record of a job never interrupted keeps the earlier controller's keys.
            **({"interrupted_by": self.interrupted_by} if self.interrupted_by else {}),
            **({"psi_initial": self.psi_initial} if self.psi_initial is not None else {}),
            **({"stop_request": self.stop_request} if self.stop_request is not None else {}),
            **(self._notify_dict() if self.notify_sent or self.notify_failed else {}),
        }

    def _notify_dict(self) -> dict[str, Any]:
        return {"notify_sent": self.notify_sent, "notify_failed": self.notify_failed, "notify_error": self.notify_error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HandleRecord:
        """A record as `to_dict` (or the controller of earlier versions, same keys) wrote it; absent keys default."""
        r = cls()
        return cls(
            state=JobLifecycle(data.get("state", r.state)),
            submitted_t=float(data.get("submitted_t", r.submitted_t)),
            slots=int(data.get("slots", r.slots)),
            schedule=str(data.get("schedule", r.schedule)),
            world=int(data.get("world", r.world)),
            restart_to=data.get("restart_to"),
            resume=data.get("resume"),
            incarnation=int(data.get("incarnation", r.incarnation)),
            last_resize_t=data.get("last_resize_t"),
            restarts=[dict(x) for x in data.get("restarts", [])],
            psi_at_budget=data.get("psi_at_budget"),
            train_s=float(data.get("train_s", r.train_s)),
            probe_s=float(data.get("probe_s", r.probe_s)),
            checkpoint=data.get("checkpoint"),
            failures=int(data.get("failures", r.failures)),
            error=data.get("error"),
            input_error=data.get("input_error"),
            interrupted_by=data.get("interrupted_by"),
            psi_initial=data.get("psi_initial"),
            stop_request=data.get("stop_request"),
            notify_sent=int(data.get("notify_sent", 0)),
            notify_failed=int(data.get("notify_failed", 0)),
            notify_error=data.get("notify_error"),
        )


@dataclass(kw_only=True)
class JobEntry:
    """Everything the decisions hold of one job."""

    job_id: str
    facts: JobFacts
    tracker: JobTracker
    record: HandleRecord
    run_id: str = ""
    sweep: str | None = None
    """The `cpr submit -m` it came from: the last of its jobs to end logs their comparison report."""
    telemetry_lines: int = 0
    """Samples in its telemetry.jsonl: those past what tracker.json counted are replayed after a controller restart."""
    blueprints: list[dict[str, Any]] = field(default_factory=list)
    """Published versions: {"version", "step", "tokens", "checkpoint", "path"}."""
    sources: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    """Its last gang's results, one per rank."""
    summary: dict[str, Any] | None = None
    done: bool = False
    adapt: dict[str, Any] | None = None
    """An adapt job's selection and measured memory, as rank 0 sent them (`Adapted`)."""

    @property
    def state(self) -> JobLifecycle:
        return self.record.state

    def tracker_dict(self) -> dict[str, Any]:
        """What tracker.json holds."""
        return {**self.tracker.to_dict(), "telemetry_lines": self.telemetry_lines}

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "facts": self.facts.to_dict(),
            "tracker": self.tracker.to_dict(),
            "record": self.record.to_dict(),
            "run_id": self.run_id,
            "sweep": self.sweep,
            "telemetry_lines": self.telemetry_lines,
            "blueprints": self.blueprints,
            "sources": {str(k): v for k, v in self.sources.items()},
            "results": self.results,
            "summary": self.summary,
            "done": self.done,
            "adapt": self.adapt,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobEntry:
        return cls(
            job_id=data["job_id"],
            facts=JobFacts.from_dict(data["facts"]),
            tracker=JobTracker.from_dict(data["tracker"]),
            record=HandleRecord.from_dict(data["record"]),
            run_id=data["run_id"],
            sweep=data["sweep"],
            telemetry_lines=data["telemetry_lines"],
            blueprints=list(data["blueprints"]),
            sources={int(k): v for k, v in data["sources"].items()},
            results=list(data["results"]),
            summary=data["summary"],
            done=data["done"],
            adapt=data.get("adapt"),
        )
