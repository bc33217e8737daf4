"""The controller: one named Ray actor per cluster that runs jobs, takes reports, decides and writes MLflow.

It launches each job's worker gang, feeds worker reports and telemetry into the job's `JobTracker` (ledger and
stop rule, pure code), answers every evaluation check with CONTINUE or a halt, logs metrics/tags/artifacts to
the job's MLflow run, and persists the tracker after every check (`JobStore`). A threaded actor: reports from
many ranks are handled concurrently, each job's state behind its own lock.

Faults (docs/reliability.md): a gang that loses a rank is restarted from its last periodic checkpoint (up to
`cluster.max_restarts` times). The actor itself is restartable: Ray brings it back after its process dies, and
`__init__` rebuilds every job from its store folder (registered in Ray's internal KV), re-adopts the running gangs
(detached, named), and answers the reports the ranks retried meanwhile. A report seen before (a retry, or a step
redone after a restart) is answered but not counted or logged again.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config.compose import job_from_dict, job_to_yaml
from orchestrator.config.schema import JobConfig
from orchestrator.config.validate import slot_unit, stop_rule_config, tokens_per_step
from orchestrator.controller.metrics import ControllerMetrics, default_sink
from orchestrator.controller.store import JobStore
from orchestrator.core.decisions import StopReason
from orchestrator.core.flops import FlopsModel
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.ledger import TelemetrySample
from orchestrator.core.lifecycle import ENDED, RUNNING, WAITING, JobLifecycle
from orchestrator.core.reports import EvalReport, TrainReport
from orchestrator.errors import InputError

CONTROLLER_NAME = "cpr-controller"
KV_PREFIX = "cpr/job/"
"""Ray internal-KV keys naming each job's store folder: how a restarted controller finds its jobs."""
STOP_POLL_S = 2.0
SCHEDULER_TICK_S = 0.5
GAMMA_PREFIX = "cpr/gamma/"
"""A check's Γ-by-kind metrics (`JobTracker.on_eval`): what the live metrics take them from."""


@dataclass
class JobHandle:
    """The controller's live record of one job."""

    job_id: str
    job: JobConfig
    tracker: JobTracker
    store: JobStore
    writer: Any
    state: str = "queued"
    error: str | None = None
    input_error: dict[str, Any] | None = None
    """Set when the job failed on bad input met at run time: InputError's field, problem and fix."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    group: Any = None
    sources: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    blueprint_store: Any = None
    blueprints: list[dict[str, Any]] = field(default_factory=list)
    """Published versions: {"version", "step", "tokens", "checkpoint", "path"}."""
    submitted_t: float = 0.0
    slots: int = 0
    """Pool slots the scheduler gave this job (0 while queued, and again once its STOP is decided)."""
    launch: tuple[Any, ...] = ()
    """What `_run_job` needs once the scheduler starts the job: (prepared data, checkpoint dir)."""
    schedule: str = ""
    """The scheduler's last word on this job, as `cpr status` shows it."""
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
    """Each checkpoint-restart: {"step", "from_workers", "to_workers", "seconds"} (seconds from the decision to
    the new gang's start; 0 ranks: paused)."""
    psi_at_budget: float | None = None
    """Forecast Ψ at its token budget (grouped jobs only: what the scheduler's dominance test compares)."""
    train_s: float = 0.0
    probe_s: float = 0.0
    """Rank 0's training and probe seconds summed over its gangs."""
    checkpoint: dict[str, Any] | None = None
    """Its latest complete periodic checkpoint since its gang started: {"step", "tokens", "path", "world_size"}."""
    failures: int = 0
    """Gangs lost to a dead rank (each restarted from a checkpoint while ≤ cluster.max_restarts)."""
    telemetry_lines: int = 0
    """Samples in its telemetry.jsonl: those past what tracker.json counted are replayed after a controller restart."""
    sweep: str | None = None
    """The `cpr submit -m` it came from: the last of its jobs to end logs their comparison report."""


HANDLE_FIELDS = (
    "state",
    "submitted_t",
    "slots",
    "schedule",
    "world",
    "restart_to",
    "resume",
    "incarnation",
    "last_resize_t",
    "restarts",
    "psi_at_budget",
    "train_s",
    "probe_s",
    "checkpoint",
    "failures",
    "error",
    "input_error",
)
"""What `handle.json` keeps of a `JobHandle` (the rest is rebuilt from job.json, tracker.json and the logs)."""


class GangLost(RuntimeError):
    """A rank of the job's gang died (its process killed or crashed, its node lost)."""


class Controller:
    """Ray actor body; create it with `controller_handle()`."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobHandle] = {}
        self._pool_lock = threading.Lock()  # the queue and the pool: submissions, ticks, job endings
        self._scheduler: threading.Thread | None = None
        self._schedule_log: Path | None = None
        self._idle_notes: dict[str, str] = {}
        """Per pool, the last IDLE reason recorded (a change is recorded, not every tick)."""
        self._pools: dict[str, int] = {}
        """Slots per pool ("CPU", "GPU") at the last tick."""
        self._next_stop_poll = 0.0
        self._sweeps_reported: set[str] = set()
        """Sweeps whose comparison report was logged (by their last job to end)."""
        self.metrics = ControllerMetrics(default_sink())
        """Live Prometheus metrics (through Ray's metrics agent): one call per event, no I/O."""
        import os

        # An unreachable MLflow must fail a call at once: the run writers retry with their own backoff, and the stop
        # polls skip a round, instead of a thread blocking for minutes inside MLflow's HTTP retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._restore()

    # -- restart -----------------------------------------------------------------------------------------------
    def _restore(self) -> None:
        """After a restart of this actor: every registered job from its store, running gangs adopted again."""
        from ray.experimental import internal_kv

        keys = internal_kv._internal_kv_list(self._kv_prefix()) if internal_kv._internal_kv_initialized() else []
        for key in keys:
            root = Path(internal_kv._internal_kv_get(key).decode())
            try:
                h = self._load(root)
            except Exception:  # one broken folder must not keep the others down
                traceback.print_exc()
                continue
            self.jobs[h.job_id] = h
            self.metrics.restore(h.job_id, h.state, h.tracker.view())
            self._schedule_log = root.parent.parent / "scheduler" / "decisions.jsonl"
        live = [h for h in self.jobs.values() if not h.done.is_set()]
        for h in live:
            if h.state not in WAITING:  # its gang was running (or starting, restarting, stopping)
                threading.Thread(target=self._run_job, args=(h, True), name=f"job-{h.job_id}", daemon=True).start()
        if live:
            print(f"controller restarted: {len(live)} live jobs restored", flush=True)
            self._scheduler = threading.Thread(target=self._schedule_loop, name="scheduler", daemon=True)
            self._scheduler.start()

    @staticmethod
    def _kv_prefix() -> str:
        """This controller's keys (one controller per Ray namespace)."""
        import ray

        return f"{KV_PREFIX}{ray.get_runtime_context().namespace}/"

    @staticmethod
    def _load(root: Path) -> JobHandle:
        """A job as its store folder left it: config, tracker (plus telemetry since), handle, run writer."""
        from orchestrator.blueprints.store import LocalBlueprintStore
        from orchestrator.tracking.writer import RunWriter

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
        h = JobHandle(
            job_id=meta["job_id"],
            job=job_from_dict(meta["job"]),
            tracker=tracker,
            store=store,
            writer=writer,
            blueprint_store=LocalBlueprintStore(meta["blueprint_dir"]),
            launch=(meta["prepared"], meta["checkpoint_dir"]),
            telemetry_lines=len(samples),
            blueprints=[b for b in store.read_lines("blueprints.jsonl") if "version" in b],
            sweep=meta.get("sweep"),
        )
        for name, value in (store.load("handle.json") if store.path("handle.json").exists() else {}).items():
            setattr(h, name, value)
        if h.state in ENDED:
            h.summary = store.load("summary.json") if store.path("summary.json").exists() else None
            h.done.set()
        return h

    def _save_handle(self, h: JobHandle) -> None:
        h.store.save("handle.json", {name: getattr(h, name) for name in HANDLE_FIELDS})

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
        """Open the job's MLflow run, persist its record, launch its workers; returns the run id at once."""
        from orchestrator.tracking.writer import RunWriter

        cfg = job_from_dict(job)
        if job_id in self.jobs:
            raise ValueError(f"job {job_id} exists")
        with self._pool_lock:
            same = [h for h in self.jobs.values() if h.job.name == cfg.name and not h.done.is_set()]
        if same:
            raise InputError(
                "name",
                f"a job named {cfg.name!r} is already {same[0].state} ({same[0].job_id})",
                "give this one another name, e.g. name=" + cfg.name + "-2",
            )
        tracker = JobTracker(
            job_id=job_id,
            rule_config=stop_rule_config(cfg.stop),
            enforce=cfg.stop.enforce,
            max_tokens=cfg.train.max_tokens,
            flops_model=FlopsModel(**flops_model),
            carbon_intensity_kg_per_kwh=carbon_intensity_kg_per_kwh,
            start_t=None,  # set when its ranks start: its time in the queue is not its wall-clock Γ
        )
        writer = RunWriter.create(
            tracking_uri,
            cfg.tracking.experiment,
            job_id,
            {
                "cpr.job_id": job_id,
                "cpr.state": "queued",
                "cpr.model": cfg.model.name,
                "cpr.data": cfg.data.name,
                **({"cpr.sweep": sweep} if sweep else {}),
            },
            artifact_location=artifact_location,
            journal_dir=state_dir,
        )
        from orchestrator.blueprints.store import LocalBlueprintStore

        store = JobStore(Path(state_dir))
        handle = JobHandle(
            job_id=job_id,
            job=cfg,
            tracker=tracker,
            store=store,
            writer=writer,
            blueprint_store=LocalBlueprintStore(blueprint_dir),
            # Both before the job is registered: the scheduler thread may start it at its next tick.
            submitted_t=time.time(),
            launch=(prepared, checkpoint_dir),
            sweep=sweep,
        )
        self.jobs[job_id] = handle
        self.metrics.job_state(job_id, handle.state)
        writer.log_params(params)
        from orchestrator.tracking.secrets import mask_config

        writer.log_text(job_to_yaml(job_from_dict(mask_config(job))), "config.yaml")  # secrets masked, as the params
        store.save(
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
        self._persist(handle)
        self._save_handle(handle)
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(self._kv_prefix() + job_id, str(Path(state_dir).resolve()))
        with self._pool_lock:
            self._schedule_log = Path(state_dir).parent.parent / "scheduler" / "decisions.jsonl"
            if self._scheduler is None:
                self._scheduler = threading.Thread(target=self._schedule_loop, name="scheduler", daemon=True)
                self._scheduler.start()
        return {"job_id": job_id, "run_id": writer.run_id}

    # -- the queue and the pool ------------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        while True:
            try:
                self._tick()
            except Exception:  # a scheduler error must not stop scheduling; it is logged and the next tick retries
                traceback.print_exc()
            time.sleep(SCHEDULER_TICK_S)

    def _job_state(self, h: JobHandle) -> Any:
        from orchestrator.config.validate import world_sizes
        from orchestrator.core.scheduling import JobState

        c = h.job.cluster
        sizes = world_sizes(h.job)
        _, step = slot_unit(h.job)
        ratio, eta, tokens = self._figures(h)
        status = (
            JobLifecycle.RUNNING
            if h.state in RUNNING
            else JobLifecycle.PAUSED
            if h.state == JobLifecycle.PAUSED
            else JobLifecycle.QUEUED
        )
        return JobState(
            job_id=h.job_id,
            priority=h.job.priority,
            submitted_t=h.submitted_t,
            status=status,
            slots=h.slots,
            requested_slots=c.num_workers * step,
            min_slots=sizes[0] * step,
            max_slots=sizes[-1] * step,
            slot_step=step,
            # A restart under way counts as a resize just now: no second one until it has come back and cooled.
            last_resize_t=time.time() if h.restart_to is not None else h.last_resize_t,
            resize_cooldown_s=c.resize_cooldown_s,
            halted=h.tracker.halted,
            stop_reason=h.tracker.stop.reason.value if h.tracker.stop is not None else "",
            group=h.job.group,
            psi=h.tracker.last_eval.psi if h.tracker.last_eval else None,
            psi_at_budget=h.psi_at_budget,
            ratio=ratio,
            eta=eta,
            remaining_fraction=max(0.0, 1.0 - tokens / h.job.train.max_tokens),
        )

    @staticmethod
    def _figures(h: JobHandle) -> tuple[float | None, float | None, int]:
        """Its latest window ratio, η and tokens, read without its lock (the pool lock is held here, and an ending
        job takes its own lock before the pool's): single reads of a list's last item and of an attribute."""
        decisions = h.tracker.decisions
        last = decisions[-1] if decisions else {}
        train = h.tracker.last_train
        return last.get("ratio"), last.get("eta"), train.tokens if train else 0

    def _tick(self) -> None:
        """One scheduling round: the pure policy decides, this applies and records (README: build). Jobs whose ranks
        use GPUs share the cluster's GPUs; the others its CPUs: one policy tick per pool."""
        import ray

        with self._pool_lock:
            # Waiting jobs, and running ones still holding slots (one whose STOP was decided has given them back:
            # its ranks are checkpointing and leaving). Ended jobs are out.
            live = [
                h
                for h in self.jobs.values()
                if (h.state in WAITING and not h.done.is_set()) or (h.state in RUNNING and h.slots > 0)
            ]
            if not live:
                return
            have = ray.cluster_resources()
            for kind in ("CPU", "GPU"):
                mine = [h for h in live if slot_unit(h.job)[0] == kind]
                if mine:
                    self._tick_pool(kind, mine, int(have.get(kind, 0)))
            waiting = [h for h in live if h.state in WAITING and not h.tracker.halted]
        # `cpr stop` of a waiting job (no ranks poll for it): an MLflow query each, so outside the pool's lock.
        if waiting and time.monotonic() >= self._next_stop_poll:
            self._next_stop_poll = time.monotonic() + STOP_POLL_S
            for h in waiting:
                if _stop_requested(h):
                    threading.Thread(target=self.request_stop, args=(h.job_id,), daemon=True).start()

    def _tick_pool(self, kind: str, live: list[JobHandle], pool: int) -> None:
        """One policy tick over one pool (its lock held): decide, apply, record; notes for the jobs that wait."""
        from orchestrator.core.scheduling import PolicyConfig, SlotAction, tick

        # Nodes come and go: never tell the policy the pool is smaller than what running jobs hold, and keep a job
        # larger than today's pool waiting (with a note) instead of letting it block every tick.
        pool = self._pools[kind] = max(pool, sum(h.slots for h in live))
        if pool < 1:  # the cluster reports none right now (a node restarting): try again next tick
            return
        # Slots of a job that has ended but not yet handed them back (`_release` is on its way) are not free yet.
        ids = {h.job_id for h in live}
        ending = sum(h.slots for h in self.jobs.values() if h.job_id not in ids and slot_unit(h.job)[0] == kind)
        states = [self._job_state(h) for h in live]
        need = {st.job_id: st.requested_slots for st in states}
        too_big = {job_id: n for job_id, n in need.items() if n > pool}
        for h in live:
            if h.job_id in too_big:
                self._note(h, f"queued: needs {too_big[h.job_id]} {kind} slots, the pool has {pool}")
        live = [h for h in live if h.job_id not in too_big]
        decisions = (
            tick(
                pool - ending,
                [st for st in states if st.job_id not in too_big],
                now=time.time(),
                config=PolicyConfig(),
                ended_best=self._ended_best(),
            )
            if live
            else []
        )
        for d in decisions:
            h = self.jobs[d.job_id] if d.job_id is not None else None
            if d.action is SlotAction.IDLE:
                if d.reason != self._idle_notes.get(kind):
                    self._idle_notes[kind] = d.reason
                    self._record(d, None, pool)
                continue
            assert h is not None
            if d.action is SlotAction.START:
                h.slots = d.to_slots
                self._set_state(h, "starting")
                threading.Thread(target=self._run_job, args=(h,), name=f"job-{h.job_id}", daemon=True).start()
            elif d.action is SlotAction.STOP:
                h.slots = 0
                if not h.tracker.halted:  # the scheduler's own STOP (a dominated job): halt it as a user would
                    threading.Thread(target=self._halt, args=(h.job_id, StopReason.DOMINATED), daemon=True).start()
                # Stopped while waiting (only a tick moves a job out of WAITING, so the test is safe while
                # its own thread may be finishing it): it ends without starting.
                if h.state in WAITING:
                    self._set_state(h, "stopping")
                    threading.Thread(target=self._end_unstarted, args=(h,), daemon=True).start()
            elif d.action in (SlotAction.RESIZE, SlotAction.PAUSE):
                # The ranks see it in their next report's answer, checkpoint and return; `_run_job` restarts the
                # job at the new size (or leaves it paused). The slots count as moved from now on.
                h.slots = d.to_slots
                h.restart_to = d.to_slots // slot_unit(h.job)[1]
                h.last_resize_t = time.time()
            # Applied and persisted before it is recorded: a controller restarted in between must not decide it again.
            self._save_handle(h)
            self._record(d, h, pool)
        free = pool - sum(h.slots for h in self.jobs.values() if slot_unit(h.job)[0] == kind)
        for h in live:
            if h.state in WAITING and not h.tracker.halted:
                self._note(h, f"queued: needs {need[h.job_id]} {kind} slots, {free} of {pool} free")

    @staticmethod
    def _note(h: JobHandle, note: str) -> None:
        """The scheduler's word on a waiting job, on its run when it changes."""
        if h.schedule != note:
            h.schedule = note
            h.writer.set_tags({"cpr.schedule": note})

    def _ended_best(self) -> dict[str, tuple[float, str]]:
        """Per group, the best Ψ (and whose) among its jobs that have ended."""
        best: dict[str, tuple[float, str]] = {}
        for h in self.jobs.values():
            last = h.tracker.last_eval
            if h.job.group is None or not h.done.is_set() or last is None:
                continue
            if h.job.group not in best or last.psi > best[h.job.group][0]:
                best[h.job.group] = (last.psi, h.job_id)
        return best

    def _record(self, d: Any, h: JobHandle | None, pool: int) -> None:
        """A decision with its figures: the cluster's scheduler log, the job's own log, tags on its run."""
        import json

        from orchestrator.core.numbers import json_safe

        entry = {"t_s": time.time(), "pool": pool, **d.to_dict()}
        if self._schedule_log is not None:
            self._schedule_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self._schedule_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(json_safe(entry)) + "\n")
        if h is not None:
            h.schedule = f"{d.action.value}: {d.reason}"
            h.store.append("schedule.jsonl", [entry])
            h.writer.set_tags({"cpr.schedule": h.schedule, "cpr.slots": str(d.to_slots)})
            # The slots over the run's steps: MLflow draws start, resizes, pauses and the STOP as one line.
            last = h.tracker.last_train  # one attribute read: the tracker's own lock is not held here
            h.writer.log_metrics({"scheduler/slots": float(d.to_slots)}, step=last.step if last else 0)

    def _release(self, h: JobHandle) -> None:
        """A job that ended without a STOP from the scheduler (its budget, a failure) gives its slots back."""
        from orchestrator.core.scheduling import SlotAction, SlotDecision

        with self._pool_lock:
            if not h.slots:
                return
            ratio, eta, _ = self._figures(h)
            why = (h.summary or {}).get("reason") or h.error or "unknown"
            d = SlotDecision(
                action=SlotAction.STOP,
                job_id=h.job_id,
                from_slots=h.slots,
                to_slots=0,
                reason=f"ended ({h.state}: {why})"[:500],
                ratio=ratio,
                eta=eta,
            )
            self._record(d, h, self._pools.get(slot_unit(h.job)[0], 0))
            h.slots = 0

    def _end_unstarted(self, h: JobHandle) -> None:
        try:
            self._finish(h)
        finally:
            h.done.set()

    def _run_job(self, h: JobHandle, adopt: bool = False) -> None:
        """Run the job's gangs until it ends: a decided resize restarts it from its checkpoint at the new size, a
        pause leaves it waiting for slots (the scheduler's START runs this again, from that checkpoint), a lost rank
        restarts the gang from its last checkpoint. `adopt`: a restarted controller takes over the running gang."""
        import ray

        from orchestrator.config.compose import job_to_dict
        from orchestrator.config.validate import resized
        from orchestrator.worker.group import WorkerGroup

        prepared, checkpoint_dir = h.launch
        me = ray.get_runtime_context().current_actor
        paused, group = False, None
        try:
            while True:
                # Adopting: the size it runs at (or was starting at, if it died before saying so).
                world = (h.world if adopt else 0) or h.slots // slot_unit(h.job)[1]
                job = resized(h.job, world)
                h.group = group = WorkerGroup(
                    job_id=h.job_id,
                    job=job,
                    job_dict=job_to_dict(job),
                    prepared=prepared,
                    checkpoint_dir=checkpoint_dir,
                    controller=me,
                    resume=h.resume,
                    incarnation=h.incarnation,
                )
                if adopt:
                    adopt, refs, lost = False, group.adopt(), None
                    if refs is None:  # gone (it was starting or restarting, or died meanwhile): not its fault
                        self._recover(h, "its gang was gone when the controller restarted", failure=False)
                        continue
                else:
                    refs, lost = group.start(), None
                    with h.lock:
                        h.tracker.started(time.time())
                    if h.restarts and "seconds" not in h.restarts[-1]:  # from its decision to this start
                        h.restarts[-1]["seconds"] = time.time() - h.restarts[-1].pop("since")
                    h.world = world
                    h.checkpoint = None  # the gang's own periodic checkpoints come after `resume`
                    self._set_state(h, "running")
                if refs is not None:
                    lost = self._await(h, refs)
                group.shutdown()
                h.group = group = None
                if lost is not None:
                    self._recover(h, lost)  # raises GangLost past cluster.max_restarts
                    continue
                rank0 = min(h.results, key=lambda r: r["rank"])
                h.train_s += rank0["train_s"]
                h.probe_s += rank0["probe_s"]
                if not self._restarting(h):
                    self._finish(h)
                    return
                paused = self._restart(h, rank0)
                if paused:
                    return
        except Exception as exc:  # a rank raised, or its gang was lost too often: the job fails with the reason
            cause = getattr(exc, "cause", None)  # a rank's own exception inside Ray's RayTaskError
            if isinstance(cause, InputError):  # bad input met at run time (e.g. a histogram range): one line
                h.error, h.input_error = (
                    cause.one_line(),
                    {"field": cause.field, "problem": cause.problem, "fix": cause.fix},
                )
            else:
                h.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
            self._fail(h)
        finally:
            if group is not None:  # this thread's gang only: after a pause, a START may already run the next one
                group.shutdown()
                if h.group is group:
                    h.group = None
            if not paused:
                self._release(h)
                h.done.set()

    def _await(self, h: JobHandle, refs: list[Any]) -> str | None:
        """Wait for the gang's results (into `h.results`), polling `cpr stop`; returns why the gang was lost (a rank
        died), or None when every rank returned. A rank's own exception is raised."""
        import ray
        from ray.exceptions import RayActorError

        h.results = []
        pending = list(refs)
        next_poll = time.monotonic() + STOP_POLL_S
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for ref in done:
                try:
                    result = ray.get(ref)
                except RayActorError as exc:
                    return f"a rank died: {' '.join(str(exc).split())[:300]}"
                except Exception:
                    # A peer's death often reaches the survivors first, as a gloo/NCCL error in a collective: if a
                    # rank of the gang died, the gang was lost; otherwise the rank's error is the job's.
                    try:
                        ray.get(pending, timeout=10)
                    except RayActorError as exc:
                        return f"a rank died: {' '.join(str(exc).split())[:300]}"
                    except Exception:
                        pass
                    raise
                if result is None:  # adopted, but its `run` never ran (the controller died starting it)
                    return "its ranks never ran"
                h.results.append(result)
            if pending and time.monotonic() >= next_poll and not h.tracker.halted:
                next_poll = time.monotonic() + STOP_POLL_S
                if _stop_requested(h):
                    self.request_stop(h.job_id)
        return None

    def _recover(self, h: JobHandle, why: str, *, failure: bool = True) -> None:
        """The gang was lost: point the job at its latest checkpoint for a new gang of the same size, or raise
        `GangLost` once it has been lost more than cluster.max_restarts times. Steps redone after the checkpoint
        are not counted or logged again (the reports' steps say so); their energy, really spent again, is."""
        with h.lock:
            h.failures += failure
            step = h.tracker.last_train.step if h.tracker.last_train else 0
            if h.failures > h.job.cluster.max_restarts:
                raise GangLost(f"{why} (lost {h.failures} times; cluster.max_restarts={h.job.cluster.max_restarts})")
            if h.checkpoint is not None:  # else: the checkpoint it started from, or from scratch
                ckpt = Path(h.checkpoint["path"])
                h.resume = {"dir": str(ckpt.parent), "tag": ckpt.name, "universal": False}
            h.incarnation += 1
            h.restarts.append(
                {
                    "step": step,
                    "from_workers": h.world,
                    "to_workers": h.world,
                    "reason": why,
                    "resumed_from": h.checkpoint["step"] if h.checkpoint else None,
                    "since": time.time(),
                }
            )
            h.writer.set_tags({"cpr.restarts": str(len(h.restarts)), "cpr.last_restart": why[:500]})
            print(f"{h.job_id}: {why}; restarting from {h.resume and h.resume['tag']}", flush=True)
        self._set_state(h, "restarting")

    def _restarting(self, h: JobHandle) -> bool:
        """The gang returned for a decided resize or pause (not for a STOP, nor at the end of its budget)."""
        with self._pool_lock:
            if h.restart_to is None:
                return False
            if h.tracker.halted or any(r["ended_by"] != "restart" for r in h.results):
                h.restart_to = None  # it ended meanwhile: its slots go back through `_release`
                return False
            return True

    def _restart(self, h: JobHandle, rank0: dict[str, Any]) -> bool:
        """Point the job at its checkpoint for the next gang; True when it was a pause (it now waits for slots).

        ZeRO 1–3 shard optimizer state by world size, so a checkpoint to be loaded at another size is first
        converted with DeepSpeed's `ds_to_universal` and loaded with `checkpoint.load_universal` (ZeRO-0's loads at
        any size as it is)."""
        with self._pool_lock:
            target = h.restart_to
            assert target is not None
            # A paused job comes back at the size it asked for (the scheduler's START gives it that many slots).
            next_world = target or h.job.cluster.num_workers
        self._set_state(h, "restarting" if target else "pausing")
        ckpt = Path(rank0["checkpoint"])
        h.resume = {"dir": str(ckpt.parent), "tag": ckpt.name, "universal": False}
        if next_world != h.world and h.job.deepspeed.zero_stage > 0:
            h.resume = to_universal(ckpt)
        h.incarnation += 1
        h.restarts.append(
            {
                "step": rank0["step"],
                "from_workers": h.world,
                "to_workers": target,
                "since": h.last_resize_t or time.time(),
            }
        )
        with self._pool_lock:
            h.restart_to = None
            if target:
                return False
            h.restarts[-1]["seconds"] = time.time() - h.restarts[-1].pop("since")  # a pause: until it is paused
            self._set_state(h, "paused")
            h.schedule = f"paused at step {rank0['step']}: waits for {h.job.cluster.num_workers} ranks' slots"
            h.writer.set_tags({"cpr.schedule": h.schedule})
            return True

    # -- reports from workers (called concurrently) --------------------------------------------------------
    def sources(self, job_id: str, rank: int, statuses: list[dict[str, Any]]) -> None:
        h = self.jobs[job_id]
        with h.lock:
            h.sources[rank] = statuses
            absent = sorted(
                {s["name"] + ": " + s["detail"] for st in h.sources.values() for s in st if not s["present"]}
            )
            fallbacks = sorted(
                {
                    s["name"] + ": " + s["detail"]
                    for st in h.sources.values()
                    for s in st
                    if s["present"] and s["method"] != "counter"
                }
            )
            h.writer.set_tags(
                {"cpr.absent_sources": "; ".join(absent) or "none", "cpr.fallbacks": "; ".join(fallbacks) or "none"}
            )

    def telemetry(self, job_id: str, samples: list[dict[str, Any]]) -> None:
        h = self.jobs[job_id]
        parsed = [TelemetrySample.from_dict(s) for s in samples]
        with h.lock:
            h.tracker.on_telemetry(parsed)
            h.store.append("telemetry.jsonl", samples)
            h.telemetry_lines += len(samples)

    def train(self, job_id: str, report: dict[str, Any]) -> dict[str, Any]:
        h = self.jobs[job_id]
        r = TrainReport.from_dict(report)
        with h.lock:
            metrics = h.tracker.on_train(r)
            if not h.writer.logged("train", r.step):  # else a retried report, or a step redone after a restart
                metrics.update(h.tracker.resource_metrics(r.t_s))
                h.writer.log_metrics(metrics, step=r.step, mark="train")
                self.metrics.train(job_id, r.tokens_per_s, metrics)
            if (d := h.tracker.train_diverged()) is not None:
                self._persist(h)
                h.store.append("decisions.jsonl", [h.tracker.decisions[-1]])
                self.metrics.decision(job_id, d.action.value, StopReason.DIVERGED.value)
                h.writer.set_tags({"cpr.decision": d.action.value, "cpr.reason": StopReason.DIVERGED.value})
            return self._answer(h)

    def eval(self, job_id: str, report: dict[str, Any]) -> dict[str, Any]:
        h = self.jobs[job_id]
        r = EvalReport.from_dict(report)
        with h.lock:
            if h.tracker.last_eval is not None and r.step <= h.tracker.last_eval.step:
                return {**self._answer(h), "decision": None}  # checked before: a retry, or a step redone
            outcome = h.tracker.on_eval(r)
            if h.job.group is not None:
                h.psi_at_budget = h.tracker.psi_bound_at(h.job.train.max_tokens // tokens_per_step(h.job))
                if h.psi_at_budget is not None:
                    outcome.metrics["cpr/psi_at_budget"] = h.psi_at_budget
            if not h.writer.logged("eval", r.step):  # else logged before the controller restarted
                h.writer.log_metrics(outcome.metrics, step=r.step, mark="eval")
            self._persist(h)
            d = outcome.decision
            gamma = {k[len(GAMMA_PREFIX) :]: v for k, v in outcome.metrics.items() if k.startswith(GAMMA_PREFIX)}
            self.metrics.check(job_id, gamma, d.ratio if d else None, d.eta if d else None)
            if d is not None:
                h.store.append("decisions.jsonl", [h.tracker.decisions[-1]])
                self.metrics.decision(job_id, d.action.value, d.reason.value if d.reason else None)
                h.writer.set_tags(
                    {
                        "cpr.decision": d.action.value,
                        "cpr.reason": d.reason.value if d.reason else "",
                        "cpr.check": str(d.check),
                    }
                )
            answer = self._answer(h, halt=outcome.halt)
            answer["decision"] = outcome.decision.to_dict() if outcome.decision else None
            return answer

    @staticmethod
    def _answer(h: JobHandle, *, halt: bool = False) -> dict[str, Any]:
        """What the ranks do next: go on, stop (the job ends) or restart (checkpoint for a resize or a pause)."""
        halt = halt or h.tracker.halted
        restart = h.restart_to is not None and not halt
        return {"halt": halt or restart, "restart": restart}

    def probe(self, job_id: str, reports: list[dict[str, Any]]) -> None:
        """One probe (general set, plus every domain at a blueprint checkpoint): metrics, then maybe a blueprint."""
        from orchestrator.blueprints.publish import probe_metrics
        from orchestrator.core.reports import ProbeReport

        h = self.jobs[job_id]
        parsed = [ProbeReport.from_dict(r) for r in reports]
        general = next(r for r in parsed if r.domain == "general")
        with h.lock:
            if h.writer.logged("probe", general.step):  # a retry, or a step redone after a restart
                return
            if any(r.nonfinite for r in parsed):
                h.writer.set_tags({"cpr.probe_warning": f"non-finite gradients at step {general.step}; no blueprint"})
                return
            h.writer.log_metrics(probe_metrics(general, h.job.probe.top_k), step=general.step, mark="probe")
            if general.label is not None:
                try:
                    self._publish(h, parsed)
                except Exception as exc:  # a blueprint that cannot be built must not end the training job
                    msg = f"step {general.step} ({general.label}): {type(exc).__name__}: {exc}"
                    h.writer.set_tags({"cpr.blueprint_error": msg[:5000]})
                    h.store.append("blueprints.jsonl", [{"error": msg, "step": general.step}])

    def checkpointed(self, job_id: str, record: dict[str, Any]) -> None:
        """Rank 0: every rank's part of a periodic checkpoint is on disk; a lost gang restarts from it."""
        h = self.jobs[job_id]
        with h.lock:
            if h.checkpoint is not None and record["step"] < h.checkpoint["step"]:
                return  # retried after a controller restart, after a newer one (the retries run concurrently)
            h.checkpoint = record
            self._save_handle(h)
            h.writer.set_tags({"cpr.checkpoint": record["path"]})

    def _publish(self, h: JobHandle, reports: list[Any]) -> None:
        """Build, validate and publish one blueprint version: local store first (immutable), then MLflow."""
        import hashlib

        from orchestrator.blueprints.publish import (
            BlueprintSettings,
            blueprint_from_probes,
            publish_once,
        )
        from orchestrator.config.validate import job_resource_model, resized
        from orchestrator.tracking.published import record_version

        job = h.job
        general = next(r for r in reports if r.domain == "general")
        n_params = sum(int(g["n_params"]) for g in general.groups.values())
        p = job.probe
        settings = BlueprintSettings(
            model_id=p.model_id or h.job_id,
            max_tokens=job.train.max_tokens,
            statistic=p.statistic,
            ci_level=p.ci_level,
            n_resamples=p.n_resamples,
            fit_method=p.fit_method,
            seed=job.seed,
            noise_multiplier=p.noise_multiplier,
            noise_clip=p.noise_clip,
        )
        resource = job_resource_model(resized(job, h.world or job.cluster.num_workers), n_params)
        bp = blueprint_from_probes(
            reports,
            settings,
            resource=resource,
            run_id=h.writer.run_id,
            provenance={
                "job_id": h.job_id,
                "config_sha256": hashlib.sha256(job_to_yaml(job).encode()).hexdigest(),
                "model": job.model.name,
                "data": job.data.name,
                "zero_stage": job.deepspeed.zero_stage,
                "world_size": h.world or job.cluster.num_workers,
                "probe_batches": len(next(iter(general.batch_norms.values()))),
            },
        )
        version, path, fresh = publish_once(h.blueprint_store, bp)
        record = {
            "version": version,
            "step": general.step,
            "tokens": general.tokens,
            "checkpoint": general.label,
            "path": str(path),
        }
        if fresh:
            h.store.append("blueprints.jsonl", [record])
        h.blueprints = sorted(
            [b for b in h.blueprints if b["version"] != version] + [record], key=lambda b: b["version"]
        )
        # Byte for byte the file in the local store, so `cpr blueprint get` returns exactly what was published.
        record_version(
            h.writer,
            model_id=settings.model_id,
            version=version,
            text=path.read_text(encoding="utf-8"),
            versions=[b["version"] for b in h.blueprints],
        )

    # -- user requests ------------------------------------------------------------------------------------
    def request_stop(self, job_id: str) -> dict[str, Any]:
        """A user STOP: recorded now; the ranks see it at their next report, checkpoint and end."""
        return self._halt(job_id, StopReason.USER)

    def _halt(self, job_id: str, reason: StopReason) -> dict[str, Any]:
        h = self.jobs.get(job_id)
        if h is None:
            return {"ok": False, "error": f"no job {job_id}"}
        with h.lock:
            if h.done.is_set():
                return {"ok": False, "error": f"job {job_id} already ended ({h.state})"}
            step = h.tracker.last_train.step if h.tracker.last_train else 0
            fresh = not h.tracker.halted
            d = h.tracker.user_stop(step=step, t_s=time.time(), reason=reason)
            self._persist(h)
            if fresh:
                h.store.append("decisions.jsonl", [h.tracker.decisions[-1]])
                self.metrics.decision(job_id, d.action.value, d.reason.value if d.reason else None)
                h.writer.set_tags({"cpr.decision": d.action.value, "cpr.reason": d.reason.value if d.reason else ""})
            return {"ok": True, "decision": d.to_dict()}

    def view(self, job_id: str) -> dict[str, Any]:
        h = self.jobs[job_id]
        with h.lock:
            return {
                **h.tracker.view(),
                "state": h.state,
                "error": h.error,
                "run_id": h.writer.run_id,
                "done": h.done.is_set(),
                "slots": h.slots,
                "schedule": h.schedule,
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
        return {
            "state": h.state,
            "error": h.error,
            "input_error": h.input_error,
            "summary": h.summary,
            "run_id": h.writer.run_id,
        }

    # -- endings -------------------------------------------------------------------------------------------
    def _set_state(self, h: JobHandle, state: str) -> None:
        h.state = state
        self.metrics.job_state(h.job_id, state)
        self._save_handle(h)
        h.writer.set_tags({"cpr.state": state})

    def _persist(self, h: JobHandle) -> None:
        h.store.save("tracker.json", {**h.tracker.to_dict(), "telemetry_lines": h.telemetry_lines})

    def _finish(self, h: JobHandle) -> None:
        with h.lock:
            t = h.tracker
            last_step = max((r["step"] for r in h.results), default=0)
            if not t.halted:
                d = t.budget_reached(step=last_step, t_s=time.time())
                self._persist(h)
                h.store.append("decisions.jsonl", [t.decisions[-1]])
                self.metrics.decision(h.job_id, d.action.value, d.reason.value if d.reason else None)
            summary = t.summary()
            summary.update(
                run_id=h.writer.run_id,
                checkpoint=h.results[0]["checkpoint"] if h.results else None,
                diverged_state_not_saved=any(not r.get("finite", True) for r in h.results),
                absent_sources=sorted({s["name"] for st in h.sources.values() for s in st if not s["present"]}),
                telemetry_errors=[e for r in h.results for e in r.get("telemetry_errors", [])],
                workers=sorted(h.results, key=lambda r: r["rank"]),
                train_s=h.train_s,
                probe_s=h.probe_s,
                restarts=list(h.restarts),
                blueprints=list(h.blueprints),
            )
            h.summary = summary
            reason = summary["reason"] or "budget"
            h.writer.set_tags({"cpr.decision": "stop", "cpr.reason": reason})
            self._artifacts(h)
            self._persist(h)
            h.store.save("summary.json", summary)
            self._set_state(h, "finished" if reason == "budget" else "stopped")
            self._release(h)  # before the run closes: its tags record the STOP
            self._log_schedule(h)
            self._reports(h)
            h.writer.close("FINISHED")

    def _fail(self, h: JobHandle) -> None:
        with h.lock:
            h.summary = {**h.tracker.summary(), "error": h.error, "run_id": h.writer.run_id}
            h.writer.set_tags({"cpr.error": (h.error or "")[:5000]})
            try:
                self._artifacts(h)
                self._persist(h)
                h.store.save("summary.json", h.summary)
            finally:
                self._set_state(h, "failed")
                self._release(h)
                self._log_schedule(h)
                self._reports(h)  # what it did before it failed is worth a look too
                h.writer.close("FAILED")

    def _reports(self, h: JobHandle) -> None:
        """The run's CPR report (figures and one offline HTML page) under `report/`, drawn from what the store holds
        once the run's writes are in (its slots are already handed back); and when it is the last of its sweep to
        end, the sweep's comparison under `sweep_report/`. Never raises: the job's outcome stands."""
        from orchestrator.report import log_run_report, log_sweep_report

        try:
            uri, experiment = h.store.load("job.json")["tracking_uri"], h.job.tracking.experiment
        except Exception:  # its record unreadable: nothing to draw from, and the run must still be closed
            traceback.print_exc()
            return
        log_run_report(h.writer, uri, h.store.path("report"), experiment=experiment)
        if h.sweep is None:
            return
        with self._pool_lock:
            jobs = [j for j in list(self.jobs.values()) if j.sweep == h.sweep]
            if any(j.state not in ENDED for j in jobs) or h.sweep in self._sweeps_reported:
                return
            self._sweeps_reported.add(h.sweep)
        log_sweep_report(h.writer, uri, h.sweep, h.store.path("sweep_report"), experiment=experiment)

    @staticmethod
    def _log_schedule(h: JobHandle) -> None:
        """The scheduler's decisions on the job, its STOP included, as an artifact of its run."""
        path = h.store.path("schedule.jsonl")
        if path.exists():
            h.writer.log_file(str(path))

    def _artifacts(self, h: JobHandle) -> None:
        import json

        from orchestrator.core.numbers import json_safe

        h.writer.log_text(h.tracker.curve_csv(), "curve.csv")
        # Every decision of the job: the store's append-only log (the tracker keeps only the latest in memory).
        decisions = h.store.path("decisions.jsonl")
        if decisions.exists():
            h.writer.log_file(str(decisions))
        if h.summary is not None:
            h.writer.log_text(json.dumps(json_safe(h.summary), indent=2), "summary.json")
        telemetry = h.store.path("telemetry.jsonl")
        if telemetry.exists():
            h.writer.log_file(str(telemetry))


def _stop_requested(h: JobHandle) -> bool:
    """`cpr stop` asked for this job (its run's tag); False while MLflow cannot be reached (asked again later)."""
    from orchestrator.tracking.runs import is_stop_requested

    try:
        return is_stop_requested(h.writer.client, h.writer.run_id)
    except Exception:
        return False


def to_universal(ckpt: Path) -> dict[str, Any]:
    """Convert a DeepSpeed ZeRO checkpoint (`<dir>/<tag>`) to a universal one (`<dir>/universal/<tag>`), loadable at
    any world size; returns it as a resume point."""
    import subprocess
    import sys

    out = ckpt.parent / "universal" / ckpt.name
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(ckpt),
        "--output_folder",
        str(out),
        "--num_extract_workers",
        "1",
        "--num_merge_workers",
        "1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise RuntimeError(f"ds_to_universal could not convert {ckpt} (exit {done.returncode}): {tail}")
    return {"dir": str(out.parent), "tag": ckpt.name, "universal": True}


def controller_handle(namespace: str, *, detached: bool) -> Any:
    """Get the cluster's controller, creating it if absent (num_cpus=0: it must not take a training slot)."""
    import ray

    actor_cls = ray.remote(Controller)
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
    return actor_cls.options(**options).remote()
