"""Applies what `ControllerState.step` returns: MLflow writes through each job's run writer, its store files and
logs, the live metrics, the cluster's scheduler log, and the actions only the shell can take (start a gang, stop a
job later, publish a blueprint, poll `cpr stop`) through the `Shell` it is given."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from orchestrator.controller.events import (
    AppendLog,
    ConvertCheckpoint,
    Effect,
    Effects,
    EndUnstarted,
    HaltLater,
    LiveMetric,
    LogMetrics,
    LogStoreFile,
    LogText,
    Notify,
    PollStop,
    Print,
    PublishBlueprint,
    RecordBlueprint,
    SaveHandle,
    SaveSummary,
    SaveTracker,
    ScheduleEntry,
    SetDone,
    SetTags,
    StartGang,
)
from orchestrator.controller.handles import JobHandle
from orchestrator.controller.metrics import ControllerMetrics
from orchestrator.core.decisions import StopReason
from orchestrator.files import append_json_lines
from orchestrator.tracking.published import record_version


class Shell(Protocol):
    """The controller's actions that an effect may ask for."""

    def start_gang(self, job_id: str) -> None: ...

    def halt_later(self, job_id: str, reason: StopReason) -> None: ...

    def end_unstarted(self, job_id: str) -> None: ...

    def publish_blueprint(self, job_id: str, step: int) -> None: ...

    def poll_stop(self, job_ids: list[str]) -> None: ...

    def notify(self, job_id: str, event: dict[str, Any]) -> None: ...


class EffectApplier:
    """One applier per controller: `apply(effects)` runs them in order (then `effects.final`, whatever happened)."""

    def __init__(
        self,
        handles: dict[str, JobHandle],
        metrics: ControllerMetrics,
        shell: Shell,
        schedule_log: Callable[[], Path | None],
    ) -> None:
        self.handles = handles
        self.metrics = metrics
        self.shell = shell
        self.schedule_log = schedule_log

    def apply(self, effects: Effects) -> None:
        try:
            self.apply_all(effects.items)
        finally:
            self.apply_all(effects.final)

    def apply_all(self, items: Iterable[Effect]) -> None:
        for effect in items:
            self.apply_one(effect)

    def apply_one(self, e: Effect) -> None:
        if isinstance(e, SetTags):
            self.handles[e.job_id].writer.set_tags(e.tags)
        elif isinstance(e, LogMetrics):
            self.handles[e.job_id].writer.log_metrics(e.metrics, step=e.step, mark=e.mark)
        elif isinstance(e, LogText):
            self.handles[e.job_id].writer.log_text(e.text, e.name)
        elif isinstance(e, LogStoreFile):
            h = self.handles[e.job_id]
            path = h.store.path(e.name)
            if path.exists():
                h.writer.log_file(str(path))
        elif isinstance(e, AppendLog):
            self.handles[e.job_id].store.append(e.name, e.records)
        elif isinstance(e, SaveTracker):
            self.handles[e.job_id].save_tracker()
        elif isinstance(e, SaveHandle):
            self.handles[e.job_id].save_handle()
        elif isinstance(e, SaveSummary):
            h = self.handles[e.job_id]
            h.store.save("summary.json", h.entry.summary)
        elif isinstance(e, LiveMetric):
            getattr(self.metrics, e.method)(*e.args)
        elif isinstance(e, ScheduleEntry):
            self._schedule_entry(e)
        elif isinstance(e, StartGang):
            self.shell.start_gang(e.job_id)
        elif isinstance(e, HaltLater):
            self.shell.halt_later(e.job_id, e.reason)
        elif isinstance(e, EndUnstarted):
            self.shell.end_unstarted(e.job_id)
        elif isinstance(e, PublishBlueprint):
            self.shell.publish_blueprint(e.job_id, e.step)
        elif isinstance(e, RecordBlueprint):
            # Byte for byte the file in the local store, so `cpr blueprint get` returns exactly what was published.
            record_version(
                self.handles[e.job_id].writer,
                model_id=e.model_id,
                version=e.version,
                text=Path(e.path).read_text(encoding="utf-8"),
                versions=e.versions,
            )
        elif isinstance(e, PollStop):
            self.shell.poll_stop(e.job_ids)
        elif isinstance(e, Print):
            print(e.message, flush=True)
        elif isinstance(e, Notify):
            self.shell.notify(e.job_id, e.event)
        elif isinstance(e, SetDone):
            self.handles[e.job_id].done.set()
        elif isinstance(e, ConvertCheckpoint):
            pass  # the gang's runner does it (`gangs.GangRunner`), between two steps
        else:  # pragma: no cover - a new effect kind without its branch
            raise TypeError(f"no applier for {type(e).__name__}")

    def _schedule_entry(self, e: ScheduleEntry) -> None:
        path = self.schedule_log()
        if path is not None:
            append_json_lines(path, [e.entry])
