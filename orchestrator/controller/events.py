"""The events `ControllerState.step` takes and the effects it returns (plain dataclasses): what happened to a job
or the pool, and what the Ray shell must do about it (`effects.EffectApplier` applies them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.controller.records import JobEntry
from orchestrator.core import names
from orchestrator.core.decisions import StopReason
from orchestrator.core.reports import EvalReport, TrainReport


# -- events -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Submitted:
    entry: JobEntry


@dataclass(frozen=True)
class Train:
    job_id: str
    report: TrainReport
    logged: bool = False
    """Its step's metrics are already in the run (a retry, or a step redone after a restart)."""


@dataclass(frozen=True)
class Eval:
    job_id: str
    report: EvalReport
    logged: bool = False


@dataclass(frozen=True)
class Telemetry:
    job_id: str
    samples: list[dict[str, Any]]


@dataclass(frozen=True)
class Probe:
    """A probe's general-set figures (`metrics`); `label`: the blueprint checkpoint it was taken at, if any."""

    job_id: str
    step: int
    metrics: dict[str, float]
    label: str | None = None
    nonfinite: bool = False
    logged: bool = False


@dataclass(frozen=True)
class BlueprintPublished:
    job_id: str
    record: dict[str, Any]
    """{"version", "step", "tokens", "checkpoint", "path"}."""
    fresh: bool
    model_id: str


@dataclass(frozen=True)
class BlueprintFailed:
    job_id: str
    step: int
    message: str


@dataclass(frozen=True)
class Checkpointed:
    job_id: str
    record: dict[str, Any]


@dataclass(frozen=True)
class Adapted:
    """Rank 0 of an adapt job: its selection (S_adapt with every submodule's figures), or what its engine measured."""

    job_id: str
    record: dict[str, Any]


@dataclass(frozen=True)
class Sources:
    job_id: str
    rank: int
    statuses: list[dict[str, Any]]


@dataclass(frozen=True)
class StopRequest:
    job_id: str
    reason: StopReason = StopReason.USER
    detail: str | None = None
    """What asked, when the reason alone does not say: the signal of an `interrupted` stop (e.g. "SIGTERM")."""
    request: str | None = None
    """The run's `cpr stop` request tag (its time) a poll found: one request acts once, a new one again."""


@dataclass(frozen=True)
class Tick:
    """One scheduling round; `cluster`: the cluster's resources now (slots per pool)."""

    cluster: dict[str, float]


@dataclass(frozen=True)
class GangStarted:
    job_id: str
    world: int


@dataclass(frozen=True)
class RankLost:
    """Its gang lost a rank (`failure`), or was gone when a restarted controller looked for it (not a failure)."""

    job_id: str
    why: str
    failure: bool = True


@dataclass(frozen=True)
class GangReturned:
    """Every rank of its gang returned (results: one per rank)."""

    job_id: str
    results: list[dict[str, Any]]


@dataclass(frozen=True)
class RestartReady:
    """Its checkpoint for the next gang (`resume`, converted if the size changes) is ready."""

    job_id: str
    resume: dict[str, Any]
    step: int


@dataclass(frozen=True)
class Finish:
    job_id: str


@dataclass(frozen=True)
class Fail:
    job_id: str
    error: str
    input_error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Release:
    """It ended: the slots it still holds go back (recorded as the scheduler's STOP)."""

    job_id: str


@dataclass(frozen=True)
class Ended:
    job_id: str


@dataclass(frozen=True)
class Resumed:
    """`cpr submit +resume=JOB`: an interrupted or lost job, loaded back from its store folder, continues from
    `resume` ({"dir", "tag", "universal"}, saved at `step`) with its tracker's ledger, window and decisions."""

    job_id: str
    resume: dict[str, Any]
    step: int
    was: str
    """What it was: `interrupted (SIGTERM)` or `lost`."""


@dataclass(frozen=True)
class Initial:
    """Ψ of the model as it starts (step 0, before any update): a fresh job's rank 0 measures it once."""

    job_id: str
    psi: float
    val_loss: float


@dataclass(frozen=True)
class Notified:
    """A notification's delivery on one channel ended: sent, or failed after its retries (`notify/dispatch.py`)."""

    job_id: str
    channel: str
    delivery_id: str
    ok: bool
    error: str | None = None


Event = (
    Submitted
    | Train
    | Eval
    | Telemetry
    | Probe
    | BlueprintPublished
    | BlueprintFailed
    | Checkpointed
    | Adapted
    | Sources
    | StopRequest
    | Tick
    | GangStarted
    | RankLost
    | GangReturned
    | RestartReady
    | Finish
    | Fail
    | Release
    | Ended
    | Resumed
    | Initial
    | Notified
)


# -- effects ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetTags:
    job_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class LogMetrics:
    job_id: str
    metrics: dict[str, float]
    step: int
    mark: str | None = None


@dataclass(frozen=True)
class LogText:
    job_id: str
    text: str
    name: str


@dataclass(frozen=True)
class LogStoreFile:
    """One of its store's files as an artifact of its run (when it exists)."""

    job_id: str
    name: str


@dataclass(frozen=True)
class AppendLog:
    job_id: str
    name: str
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class SaveTracker:
    job_id: str


@dataclass(frozen=True)
class SaveHandle:
    job_id: str


@dataclass(frozen=True)
class SaveSummary:
    job_id: str


@dataclass(frozen=True)
class LiveMetric:
    """One `ControllerMetrics` call: method name and arguments."""

    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class ScheduleEntry:
    """A line of the cluster's scheduler log."""

    entry: dict[str, Any]


@dataclass(frozen=True)
class StartGang:
    job_id: str


@dataclass(frozen=True)
class HaltLater:
    """Stop it as a user would, on another thread (the pool lock is held where this is decided)."""

    job_id: str
    reason: StopReason


@dataclass(frozen=True)
class EndUnstarted:
    job_id: str


@dataclass(frozen=True)
class PublishBlueprint:
    job_id: str
    step: int


@dataclass(frozen=True)
class RecordBlueprint:
    job_id: str
    model_id: str
    version: int
    path: str
    versions: list[int]


@dataclass(frozen=True)
class PollStop:
    """Ask the tracking store whether `cpr stop` was asked for these waiting jobs."""

    job_ids: list[str]


@dataclass(frozen=True)
class ConvertCheckpoint:
    """Convert this ZeRO checkpoint to a universal one (another world size), then step `RestartReady`."""

    job_id: str
    path: str


@dataclass(frozen=True)
class Print:
    message: str


@dataclass(frozen=True)
class SetDone:
    job_id: str


@dataclass(frozen=True)
class Notify:
    """Send this event (`notify/events.py`) on the job's channels: enqueued, never sent on the caller's thread."""

    job_id: str
    event: dict[str, Any]


Effect = (
    SetTags
    | LogMetrics
    | LogText
    | LogStoreFile
    | AppendLog
    | SaveTracker
    | SaveHandle
    | SaveSummary
    | LiveMetric
    | ScheduleEntry
    | StartGang
    | HaltLater
    | EndUnstarted
    | PublishBlueprint
    | RecordBlueprint
    | PollStop
    | ConvertCheckpoint
    | Print
    | SetDone
    | Notify
)


@dataclass
class Effects:
    """What one step asks of the shell, in order, and what it answers."""

    items: list[Effect] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    """What the caller gets back (a rank's report, a user's request)."""
    final: list[Effect] = field(default_factory=list)
    """Applied after `items` even when one of them failed (a failed job's state must be set all the same)."""
    next: str | None = None
    """For a gang's runner: "finish", "restart", "pause" or "fail" (then `error` says why)."""
    error: str | None = None

    def add(self, *effects: Effect) -> None:
        self.items.extend(effects)


def decision_tags(action: str, reason: Any) -> dict[str, str]:
    return {names.DECISION: action, names.REASON: reason.value if reason else ""}
