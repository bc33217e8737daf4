"""The controller: one named Ray actor per cluster that runs jobs, takes reports, decides and writes MLflow.

A thin shell around the pure `ControllerState` (state.py): each RPC becomes an event, stepped under the job's lock
(or the pool's, for scheduling), and the effects it returns are applied (effects.py): MLflow writes, the job's
store files, live metrics, gangs started (gangs.py), endings (endings.py), blueprints (publishing.py). A threaded
actor: reports from many ranks are handled concurrently, each job's state behind its own lock.

Faults (docs/reliability.md): a gang that loses a rank is restarted from its last periodic checkpoint (up to
`cluster.max_restarts` times). The actor itself is restartable: Ray brings it back after its process dies, with its
constructor arguments, and `__init__` rebuilds every job from its store folder (listed in the registry file, see
registry.py), re-adopts the running gangs (detached, named), and answers the reports the ranks retried meanwhile.
A report seen before (a retry, or a step redone after a restart) is answered but not counted or logged again.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import ray

from orchestrator.blueprints.publish import probe_metrics
from orchestrator.blueprints.store import LocalBlueprintStore
from orchestrator.config.compose import job_from_dict, job_to_yaml
from orchestrator.controller import gangs
from orchestrator.controller.effects import EffectApplier
from orchestrator.controller.endings import Endings
from orchestrator.controller.events import (
    Adapted,
    BlueprintFailed,
    Checkpointed,
    Effects,
    Eval,
    Event,
    Initial,
    Notified,
    Probe,
    Resumed,
    Sources,
    StopRequest,
    Submitted,
    Telemetry,
    Tick,
    Train,
)
from orchestrator.controller.handles import JobHandle, load_handle, new_entry
from orchestrator.controller.liveness import identity
from orchestrator.controller.metrics import ControllerMetrics, default_sink
from orchestrator.controller.publishing import publish_blueprint
from orchestrator.controller.registry import JobRegistry, default_registry
from orchestrator.controller.state import ControllerState
from orchestrator.controller.store import JobStore
from orchestrator.core import names
from orchestrator.core.decisions import StopReason
from orchestrator.core.flops import FlopsModel
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.lifecycle import WAITING, JobLifecycle
from orchestrator.core.reports import EvalReport, ProbeReport, TrainReport
from orchestrator.errors import InputError
from orchestrator.notify.checks import notify_channels
from orchestrator.notify.dispatch import OUTBOX, JobNotifier
from orchestrator.priority import lower_priority
from orchestrator.tracking.secrets import mask_config
from orchestrator.tracking.writer import RunWriter

CONTROLLER_NAME = "cpr-controller"
SCHEDULER_TICK_S = 0.5


def scheduler_log(job_dir: str | Path) -> Path:
    """The cluster's scheduler decisions, next to its jobs' folders: `<runs_dir>/scheduler/decisions.jsonl`."""
    return Path(job_dir).parent.parent / "scheduler" / "decisions.jsonl"


class Controller:
    """Ray actor body; create it with `controller_handle()`. `registry`: the file listing its jobs' folders (None:
    none kept, as in tests outside Ray)."""

    def __init__(self, registry: str | None = None) -> None:
        lower_priority()
        self.state = ControllerState()
        self.jobs: dict[str, JobHandle] = {}
        self.pool_lock = threading.Lock()  # the queue and the pool: submissions, ticks, job endings
        self.registry = JobRegistry(registry) if registry is not None else None
        self._scheduler: threading.Thread | None = None
        self._schedule_log: Path | None = None
        self._next_stop_poll = 0.0
        self._due: set[tuple[str, int]] = set()
        """(job, step) of probes whose blueprint is due (`publish_blueprint`, under the job's lock)."""
        self._publishing: dict[str, threading.Lock] = {}
        """One lock per job: its blueprints are built one at a time, in the order of their probes."""
        self._notifier_lock = threading.Lock()
        self.metrics = ControllerMetrics(default_sink())
        """Live Prometheus metrics (through Ray's metrics agent): one call per event, no I/O."""
        self.effects = EffectApplier(self.jobs, self.metrics, self, lambda: self._schedule_log)
        self.endings = Endings(self)
        # An unreachable MLflow must fail a call at once: the run writers retry with their own backoff, and the stop
        # polls skip a round, instead of a thread blocking for minutes inside MLflow's HTTP retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._restore()

    # -- stepping the state -------------------------------------------------------------------------------------
    def step_job(self, h: JobHandle, event: Event) -> Effects:
        """One event of this job, under its lock; its effects applied."""
        with h.lock:
            fx = self.state.step(event, time.time())
            self.effects.apply(fx)
        return fx

    def step_pool(self, event: Event) -> Effects:
        """One event of the queue and the pool, under the pool's lock; its effects applied."""
        with self.pool_lock:
            fx = self.state.step(event, time.time())
            self.effects.apply(fx)
        return fx

    # -- restart -----------------------------------------------------------------------------------------------
    def _restore(self) -> None:
        """After a restart of this actor: every registered job from its store, running gangs adopted again."""
        for root in (self.registry.folders() if self.registry else {}).values():
            try:
                h = load_handle(root)
            except Exception:  # one broken folder must not keep the others down
                traceback.print_exc()
                continue
            self.jobs[h.job_id] = h
            self.state.jobs[h.job_id] = h.entry
            self.metrics.restore(h.job_id, h.state, h.tracker.view())
            self._schedule_log = scheduler_log(root)
            if h.job.notify.enabled and h.store.path(OUTBOX).exists():
                notifier = self.notifier(h)  # what the previous controller queued and never sent goes out now
                if notifier is not None:
                    notifier.resume()
        live = [h for h in self.jobs.values() if not h.done.is_set()]
        for h in live:
            h.writer.set_tags({names.CONTROLLER: identity()})  # this process runs them now
            if h.state not in WAITING:  # its gang was running (or starting, restarting, stopping)
                self._thread(gangs.run_job, self, h, True, name=f"job-{h.job_id}")
        if live:
            print(f"controller restarted: {len(live)} live jobs restored", flush=True)
            self._start_scheduler()

    # -- job submission -------------------------------------------------------------------------------------
    def submit(
        self,
        *,
        job_id: str,
        job: dict[str, Any],
        prepared: dict[str, Any],
        flops_model: dict[str, Any],
        tracking_uri: str,
        artifact_location: str | None,
        state_dir: str,
        checkpoint_dir: str,
        blueprint_dir: str,
        carbon_intensity_kg_per_kwh: float | None,
        params: dict[str, str],
        sweep: str | None = None,
    ) -> dict[str, Any]:
        """Open the job's MLflow run, persist its record, queue it; returns the run id at once."""
        cfg = job_from_dict(job)
        if job_id in self.jobs:
            raise ValueError(f"job {job_id} exists")
        with self.pool_lock:
            same = self.state.live_same_name(cfg.name)
        if same is not None:
            raise InputError(
                "name",
                f"a job named {cfg.name!r} is already {same.state} ({same.job_id})",
                "give this one another name, e.g. name=" + cfg.name + "-2",
            )
        tracker = JobTracker(
            job_id=job_id,
            rule_config=cfg.stop.rule_config(),
            enforce=cfg.stop.enforce,
            max_tokens=cfg.train.max_tokens,
            flops_model=FlopsModel(**flops_model),
            carbon_intensity_kg_per_kwh=carbon_intensity_kg_per_kwh,
            start_t=None,  # set when its ranks start: its time in the queue is not its wall-clock Γ
            psi=cfg.psi.spec(),
            cooldown=cfg.cooldown_plan(),
        )
        tags = {
            names.JOB_ID: job_id,
            names.STATE: JobLifecycle.QUEUED.value,
            names.MODEL: cfg.model.name,
            names.DATA: cfg.data.name,
            names.CONTROLLER: identity(),
            names.STATE_DIR: str(Path(state_dir).resolve()),
            names.PSI_NAME: tracker.psi.name,
            names.PSI_UNITS: tracker.psi.units,
            **({names.SWEEP: sweep} if sweep else {}),
        }
        writer = RunWriter.create(
            tracking_uri,
            cfg.tracking.experiment,
            job_id,
            tags,
            artifact_location=artifact_location,
            journal_dir=state_dir,
        )
        # Its submission time before it is registered: the scheduler thread may start it at its next tick.
        entry = new_entry(job_id, cfg, tracker, submitted_t=time.time(), run_id=writer.run_id, sweep=sweep)
        handle = JobHandle(
            entry=entry,
            job=cfg,
            store=JobStore(Path(state_dir)),
            writer=writer,
            blueprint_store=LocalBlueprintStore(blueprint_dir),
            launch=(prepared, checkpoint_dir),
        )
        self.jobs[job_id] = handle
        self.notifier(handle)  # its channels made now, off any job's lock: a notification is then only enqueued
        writer.log_params(params)
        writer.log_text(job_to_yaml(job_from_dict(mask_config(job))), "config.yaml")  # secrets masked, as the params
        handle.store.save(
            "job.json",
            {
                "job_id": job_id,
                "job": job,
                "prepared": prepared,
                "run_id": writer.run_id,
                "experiment_id": writer.experiment_id,
                "tracking_uri": tracking_uri,
                "checkpoint_dir": checkpoint_dir,
                "blueprint_dir": blueprint_dir,
                "flops_model": flops_model,
                "sweep": sweep,
                "carbon_intensity_kg_per_kwh": carbon_intensity_kg_per_kwh,
            },
        )
        self.step_job(handle, Submitted(entry))
        if self.registry is not None:
            self.registry.register(job_id, state_dir)
        with self.pool_lock:
            self._schedule_log = scheduler_log(state_dir)
        self._start_scheduler()
        return {"job_id": job_id, "run_id": writer.run_id}

    # -- the queue and the pool ------------------------------------------------------------------------------
    def _start_scheduler(self) -> None:
        with self.pool_lock:
            if self._scheduler is None:
                self._scheduler = self._thread(self._schedule_loop, name="scheduler")

    def _schedule_loop(self) -> None:
        while True:
            try:
                self.step_pool(Tick(dict(ray.cluster_resources())))
            except Exception:  # a scheduler error must not stop scheduling; it is logged and the next tick retries
                traceback.print_exc()
            time.sleep(SCHEDULER_TICK_S)

    @staticmethod
    def _thread(target: Any, *args: Any, name: str | None = None) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        return t

    # `Shell` (effects.py): what the state's effects ask of the actor.
    def start_gang(self, job_id: str) -> None:
        self._thread(gangs.run_job, self, self.jobs[job_id], name=f"job-{job_id}")

    def halt_later(self, job_id: str, reason: StopReason) -> None:
        self._thread(self._halt, job_id, reason)

    def end_unstarted(self, job_id: str) -> None:
        self._thread(self.endings.end_unstarted, self.jobs[job_id])

    def poll_stop(self, job_ids: list[str]) -> None:
        """`cpr stop` of waiting jobs: an MLflow query each, at most every STOP_POLL_S, on another thread (the pool
        lock is held here)."""
        if time.monotonic() < self._next_stop_poll:
            return
        self._next_stop_poll = time.monotonic() + gangs.STOP_POLL_S
        self._thread(self._poll_stop, [self.jobs[j] for j in job_ids])

    def _poll_stop(self, handles: list[JobHandle]) -> None:
        for h in handles:
            if (request := gangs.stop_requested(h)) is not None:
                self._thread(self.request_stop, h.job_id, request=request)

    def notify(self, job_id: str, event: dict[str, Any]) -> None:
        """Queue a notification on the job's channels; sent on their own threads, never on this one."""
        notifier = self.notifier(self.jobs[job_id])
        if notifier is not None:
            notifier.send(event)

    def notifier(self, h: JobHandle) -> Any:
        """The job's `JobNotifier` (made once; None when it has no channel or they cannot be made)."""
        with self._notifier_lock:
            if h.notifier is None and h.job.notify.enabled:
                n = h.job.notify
                try:
                    channels = notify_channels(n)
                except Exception:  # checked at submission; a store or config changed since must not stop the job
                    traceback.print_exc()
                    return None

                def told(channel: str, delivery_id: str, result: Any) -> None:
                    ok, error = result.ok, result.error
                    self.step_job(h, Notified(h.job_id, channel, delivery_id, ok, error))

                h.notifier = JobNotifier(
                    h.job_id,
                    channels,
                    h.store.path(OUTBOX),
                    retries=n.retries,
                    backoff_s=n.backoff_s,
                    on_result=told,
                )
            return h.notifier

    def publish_blueprint(self, job_id: str, step: int) -> None:
        """A blueprint is due for this probe (the job's lock is held): `probe` builds it once it has let go."""
        self._due.add((job_id, step))

    def _publish(self, h: JobHandle, reports: list[ProbeReport]) -> None:
        """Build and publish a blueprint without the job's lock (the fits and bootstraps take a while, and the ranks'
        reports and checks must not wait behind them), one at a time per job so versions follow the probes; then
        step the outcome under the lock. One that cannot be built does not end the job."""
        general = next(r for r in reports if r.domain == "general")
        with self._publishing.setdefault(h.job_id, threading.Lock()):
            try:
                event: Event = publish_blueprint(h, reports)
            except Exception as exc:
                msg = f"step {general.step} ({general.label}): {type(exc).__name__}: {exc}"
                event = BlueprintFailed(h.job_id, general.step, msg)
            with h.lock:
                self.effects.apply(self.state.step(event, time.time()))

    # -- reports from workers (called concurrently) --------------------------------------------------------
    def sources(self, job_id: str, rank: int, statuses: list[dict[str, Any]]) -> None:
        self.step_job(self.jobs[job_id], Sources(job_id, rank, statuses))

    def initial(self, job_id: str, report: dict[str, Any]) -> None:
        self.step_job(self.jobs[job_id], Initial(job_id, report["psi"], report["val_loss"]))

    def telemetry(self, job_id: str, samples: list[dict[str, Any]]) -> None:
        self.step_job(self.jobs[job_id], Telemetry(job_id, samples))

    def train(self, job_id: str, report: dict[str, Any]) -> dict[str, Any]:
        h, r = self.jobs[job_id], TrainReport.from_dict(report)
        with h.lock:  # `logged` read under the lock the step runs under
            fx = self.state.step(Train(job_id, r, h.writer.logged("train", r.step)), time.time())
            self.effects.apply(fx)
        assert fx.answer is not None
        return fx.answer

    def eval(self, job_id: str, report: dict[str, Any]) -> dict[str, Any]:
        h, r = self.jobs[job_id], EvalReport.from_dict(report)
        with h.lock:
            fx = self.state.step(Eval(job_id, r, h.writer.logged("eval", r.step)), time.time())
            self.effects.apply(fx)
        assert fx.answer is not None
        return fx.answer

    def probe(self, job_id: str, reports: list[dict[str, Any]]) -> None:
        """One probe (general set, plus every domain at a blueprint checkpoint): metrics, then maybe a blueprint."""
        h = self.jobs[job_id]
        parsed = [ProbeReport.from_dict(r) for r in reports]
        general = next(r for r in parsed if r.domain == "general")
        with h.lock:
            logged = h.writer.logged("probe", general.step)
            nonfinite = any(r.nonfinite for r in parsed)
            metrics = (
                {}
                if logged or nonfinite
                else probe_metrics(general, h.job.probe.top_k, privacy=str(h.job.probe.privacy))
            )
            try:
                event = Probe(job_id, general.step, metrics, general.label, nonfinite, logged)
                self.effects.apply(self.state.step(event, time.time()))
            finally:
                due = (job_id, general.step) in self._due
                self._due.discard((job_id, general.step))
        if due:  # in this call still: a rank's last report returns only once its blueprint is out
            self._publish(h, parsed)

    def checkpointed(self, job_id: str, record: dict[str, Any]) -> None:
        """Rank 0: every rank's part of a periodic checkpoint is on disk; a lost gang restarts from it."""
        self.step_job(self.jobs[job_id], Checkpointed(job_id, record))

    def adapted(self, job_id: str, record: dict[str, Any]) -> None:
        """Rank 0 of an adapt job: its selection, then what its engine measured (docs/adapt.md)."""
        self.step_job(self.jobs[job_id], Adapted(job_id, record))

    # -- user requests ------------------------------------------------------------------------------------
    def request_stop(
        self, job_id: str, reason: str = StopReason.USER.value, detail: str | None = None, request: str | None = None
    ) -> dict[str, Any]:
        """A user STOP (`user`, or `interrupted` with the client's signal as `detail`): recorded now; the ranks see
        it at their next report, checkpoint and end (a WSD job cools down first). `request`: the run's stop-request
        tag that asked (a poll sees one request many times; it acts once)."""
        return self._halt(job_id, StopReason(reason), detail, request)

    def _halt(
        self, job_id: str, reason: StopReason, detail: str | None = None, request: str | None = None
    ) -> dict[str, Any]:
        h = self.jobs.get(job_id)
        if h is None:
            return {"ok": False, "error": f"no job {job_id}"}
        fx = self.step_job(h, StopRequest(job_id, reason, detail, request))
        assert fx.answer is not None
        return fx.answer

    def resume(self, state_dir: str, resume: dict[str, Any], step: int, was: str) -> dict[str, Any]:
        """`cpr submit +resume=JOB`: load an interrupted or lost job back from its store folder (same MLflow run,
        tracker as persisted) and queue it to continue from `resume`; returns its ids at once."""
        h = load_handle(Path(state_dir))
        if h.job_id in self.jobs and not self.jobs[h.job_id].done.is_set():
            raise InputError("resume", f"{h.job_id} is already live on this cluster", "follow it with `cpr status`")
        h.done.clear()
        self.jobs[h.job_id] = h
        with self.pool_lock:
            self.state.jobs[h.job_id] = h.entry
        h.writer.reopen()
        h.writer.set_tags({names.CONTROLLER: identity()})
        self.step_job(h, Resumed(h.job_id, resume, step, was))
        if self.registry is not None:
            self.registry.register(h.job_id, state_dir)
        with self.pool_lock:
            self._schedule_log = scheduler_log(state_dir)
        self._start_scheduler()
        return {"job_id": h.job_id, "run_id": h.writer.run_id}

    def view(self, job_id: str) -> dict[str, Any]:
        h = self.jobs[job_id]
        with h.lock:
            rec = h.entry.record
            return {
                **h.tracker.view(),
                "state": rec.state,
                "error": rec.error,
                "run_id": h.writer.run_id,
                "done": h.done.is_set(),
                "slots": rec.slots,
                "schedule": rec.schedule,
                "eval_step": h.tracker.last_eval.step if h.tracker.last_eval else 0,
            }

    def drain(self, job_id: str, timeout_s: float) -> int:
        """Wait up to timeout_s for the job's MLflow writes to be in the store; returns how many are still owed
        (they stay in its journal: a restarted controller, or `cpr sync`, sends them)."""
        h = self.jobs[job_id]
        h.writer.flush(timeout_s)
        return h.writer.pending()

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The job's summary once it ended, else None after timeout_s."""
        h = self.jobs[job_id]
        if not h.done.wait(timeout_s):
            return None
        rec = h.entry.record
        return {
            "state": rec.state,
            "error": rec.error,
            "input_error": rec.input_error,
            "summary": h.entry.summary,
            "run_id": h.writer.run_id,
        }


def controller_handle(namespace: str, *, detached: bool, registry: str | None = None) -> Any:
    """Get the cluster's controller, creating it if absent (num_cpus=0: it must not take a training slot).
    `registry`: the file listing its jobs' folders (default: in the Ray session's folder, see registry.py)."""
    if registry is None:
        ctx = ray.get_runtime_context()
        registry = str(default_registry(namespace, ctx.get_temp_dir(), ctx.get_session_name()))
    options: dict[str, Any] = {
        "name": CONTROLLER_NAME,
        "namespace": namespace,
        "get_if_exists": True,
        "num_cpus": 0,
        "max_concurrency": 64,
        # Restartable: Ray brings it back after its process dies (it restores its jobs), and calls made to it
        # meanwhile (the ranks' reports) are retried on the new process rather than lost.
        "max_restarts": -1,
        "max_task_retries": -1,
    }
    if detached:
        options["lifetime"] = "detached"
    return ray.remote(Controller).options(**options).remote(registry)
