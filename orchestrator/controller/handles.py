"""A job as the controller's shell holds it: its decision entry (`state.JobEntry`) next to its engines (config,
store folder, MLflow run writer, blueprint store), its lock and done event; made at submission or loaded back from
its store folder after a controller restart."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.blueprints.store import LocalBlueprintStore
from orchestrator.config.compose import job_from_dict
from orchestrator.config.schema import JobConfig
from orchestrator.controller.job_facts import job_facts
from orchestrator.controller.records import HandleRecord, JobEntry
from orchestrator.controller.store import JobStore
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.ledger import TelemetrySample
from orchestrator.core.lifecycle import ENDED, JobLifecycle
from orchestrator.tracking.writer import RunWriter


@dataclass(kw_only=True)
class JobHandle:
    """The controller's live record of one job: its decision entry and what the shell drives it with."""

    entry: JobEntry
    job: JobConfig
    store: JobStore
    writer: Any
    blueprint_store: Any = None
    launch: tuple[Any, ...] = ()
    """What its gang needs once the scheduler starts it: (prepared data, checkpoint dir)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    group: Any = None
    """Its running worker gang, if any."""
    notifier: Any = None
    """Its notifications' senders (`notify.dispatch.JobNotifier`): made when it is submitted or restored, retired
    when it ends (what is queued still goes out)."""

    @property
    def job_id(self) -> str:
        return self.entry.job_id

    @property
    def state(self) -> JobLifecycle:
        return self.entry.record.state

    @property
    def tracker(self) -> JobTracker:
        return self.entry.tracker

    def save_handle(self) -> None:
        self.store.save("handle.json", self.entry.record.to_dict())

    def save_tracker(self) -> None:
        self.store.save("tracker.json", self.entry.tracker_dict())


def new_entry(
    job_id: str, job: JobConfig, tracker: JobTracker, *, submitted_t: float, run_id: str, sweep: str | None
) -> JobEntry:
    return JobEntry(
        job_id=job_id,
        facts=job_facts(job),
        tracker=tracker,
        record=HandleRecord(submitted_t=submitted_t),
        run_id=run_id,
        sweep=sweep,
    )


def load_handle(root: Path) -> JobHandle:
    """A job as its store folder left it: config, tracker (plus telemetry since), handle, run writer."""
    store = JobStore(root)
    meta = store.load("job.json")
    saved = store.load("tracker.json")
    tracker = JobTracker.from_dict(saved)
    samples = store.read_lines("telemetry.jsonl")
    tracker.on_telemetry([TelemetrySample.from_dict(x) for x in samples[saved.get("telemetry_lines", 0) :]])
    # Decisions the tracker holds that its append-only log missed (the process died between the two writes).
    logged = store.read_lines("decisions.jsonl")
    store.append("decisions.jsonl", [d for d in tracker.decisions if d not in logged[-len(tracker.decisions) :]])
    writer = RunWriter.attach(meta["tracking_uri"], meta["run_id"], meta["experiment_id"], journal_dir=root)
    job = job_from_dict(meta["job"])
    record = HandleRecord.from_dict(store.load("handle.json") if store.path("handle.json").exists() else {})
    entry = JobEntry(
        job_id=meta["job_id"],
        facts=job_facts(job),
        tracker=tracker,
        record=record,
        run_id=writer.run_id,
        sweep=meta.get("sweep"),
        telemetry_lines=len(samples),
        blueprints=[b for b in store.read_lines("blueprints.jsonl") if "version" in b],
    )
    h = JobHandle(
        entry=entry,
        job=job,
        store=store,
        writer=writer,
        blueprint_store=LocalBlueprintStore(meta["blueprint_dir"]),
        launch=(meta["prepared"], meta["checkpoint_dir"]),
    )
    if record.state in ENDED:
        entry.summary = store.load("summary.json") if store.path("summary.json").exists() else None
        entry.done = True
        h.done.set()
    return h
