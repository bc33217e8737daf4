"""The controller's decisions as a pure state machine: every event in, the effects to apply out.

`ControllerState.step(event, now)` takes one event (a rank's report, a scheduler tick, a lost rank, an ending, …),
updates the jobs' records, trackers and the pools, and returns `Effects`: what the Ray shell must do (write MLflow,
append to a job's store logs, persist, start a gang, …) and the answer a rank or a user gets. No Ray, MLflow or
torch here: it is tested on its own, and its whole state has a JSON round trip (`to_dict`/`from_dict`).

Locks are the shell's: a job's own events are stepped under that job's lock; ticks, releases and a returned gang's
restart decision under the pool lock. A tick reads other jobs' latest figures without their locks (single reads).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from orchestrator.adapt.record import chosen_tag, measured_metrics, selection_metrics, summary_of
from orchestrator.controller.events import (
    Adapted,
    AppendLog,
    BlueprintFailed,
    BlueprintPublished,
    Checkpointed,
    ConvertCheckpoint,
    Effects,
    Ended,
    EndUnstarted,
    Eval,
    Event,
    Fail,
    Finish,
    GangReturned,
    GangStarted,
    HaltLater,
    Initial,
    LiveMetric,
    LogMetrics,
    LogStoreFile,
    LogText,
    Notified,
    Notify,
    PollStop,
    Print,
    Probe,
    PublishBlueprint,
    RankLost,
    RecordBlueprint,
    Release,
    RestartReady,
    Resumed,
    SaveHandle,
    SaveSummary,
    SaveTracker,
    ScheduleEntry,
    SetDone,
    SetTags,
    Sources,
    StartGang,
    StopRequest,
    Submitted,
    Telemetry,
    Tick,
    Train,
    decision_tags,
)
from orchestrator.controller.records import JobEntry
from orchestrator.core import names
from orchestrator.core.decisions import StopReason
from orchestrator.core.ledger import TelemetrySample
from orchestrator.core.lifecycle import ENDED, RUNNING, WAITING, JobLifecycle
from orchestrator.core.numbers import json_safe
from orchestrator.core.scheduling import JobState, PolicyConfig, SlotAction, SlotDecision, tick
from orchestrator.notify import events as notify

POOLS = ("CPU", "GPU")


# -- the state machine --------------------------------------------------------------------------------------------
class ControllerState:
    """Every job's record and tracker, and the pools' memory; `step` is the only way they change."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobEntry] = {}
        self.idle_notes: dict[str, str] = {}
        """Per pool, the last IDLE reason recorded (a change is recorded, not every tick)."""
        self.pools: dict[str, int] = {}
        """Slots per pool at the last tick."""
        self.sweeps_reported: set[str] = set()
        """Sweeps whose comparison report was logged (by their last job to end)."""

    # -- persistence ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "jobs": {k: e.to_dict() for k, e in self.jobs.items()},
                "idle_notes": dict(self.idle_notes),
                "pools": dict(self.pools),
                "sweeps_reported": sorted(self.sweeps_reported),
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControllerState:
        s = cls()
        s.jobs = {k: JobEntry.from_dict(e) for k, e in data["jobs"].items()}
        s.idle_notes = dict(data["idle_notes"])
        s.pools = {k: int(v) for k, v in data["pools"].items()}
        s.sweeps_reported = set(data["sweeps_reported"])
        return s

    # -- queries ----------------------------------------------------------------------------------------------
    def answer(self, job_id: str, *, halt: bool = False) -> dict[str, Any]:
        """What the ranks do next: go on, stop (the job ends) or restart (checkpoint for a resize or a pause)."""
        e = self.jobs[job_id]
        halt = halt or e.tracker.halted
        restart = e.record.restart_to is not None and not halt
        answer: dict[str, Any] = {"halt": halt or restart, "restart": restart}
        cooldown = e.tracker.cooldown_answer()
        if cooldown is not None and not halt:  # its STOP cools the LR down first: [start step, steps]
            answer["cooldown"] = cooldown
        return answer

    def gang_world(self, job_id: str, *, adopt: bool) -> int:
        """The size of its next gang; adopting: the size it runs at (or was starting at, if it died before saying)."""
        e = self.jobs[job_id]
        return (e.record.world if adopt else 0) or e.record.slots // e.facts.slot_step

    def live_same_name(self, name: str) -> JobEntry | None:
        return next((e for e in self.jobs.values() if e.facts.name == name and not e.done), None)

    def claim_sweep_report(self, job_id: str) -> bool:
        """True once per sweep: when this job's sweep has every job ended (its last job draws the comparison)."""
        sweep = self.jobs[job_id].sweep
        if sweep is None:
            return False
        jobs = [e for e in list(self.jobs.values()) if e.sweep == sweep]
        if any(e.state not in ENDED for e in jobs) or sweep in self.sweeps_reported:
            return False
        self.sweeps_reported.add(sweep)
        return True

    # -- the one entry point ------------------------------------------------------------------------------------
    def step(self, event: Event, now: float) -> Effects:
        """Apply one event; returns the effects for the shell to apply, in order."""
        handler = getattr(self, "_on_" + type(event).__name__)
        out = Effects()
        handler(event, now, out)
        return out

    # -- job events -----------------------------------------------------------------------------------------------
    def _on_Submitted(self, ev: Submitted, now: float, out: Effects) -> None:
        e = ev.entry
        self.jobs[e.job_id] = e
        out.add(LiveMetric("job_state", (e.job_id, e.state)), SaveTracker(e.job_id), SaveHandle(e.job_id))

    def _set_state(self, e: JobEntry, state: JobLifecycle, out: Effects) -> None:
        e.record.state = state
        out.add(
            LiveMetric("job_state", (e.job_id, state)), SaveHandle(e.job_id), SetTags(e.job_id, {names.STATE: state})
        )

    def _decided(self, e: JobEntry, out: Effects, reason: str | None) -> None:
        """Its newest decision: into its append-only log and the live counter."""
        d = e.tracker.decisions[-1]
        out.add(AppendLog(e.job_id, "decisions.jsonl", [d]), LiveMetric("decision", (e.job_id, d["action"], reason)))

    @staticmethod
    def _notify(e: JobEntry, event: dict[str, Any], out: Effects) -> None:
        """Send it when the job's `notify.on` names it (nothing is sent on this thread: the shell enqueues it)."""
        if event["event"] in e.facts.notify_on:
            out.add(Notify(e.job_id, event))

    @staticmethod
    def _ref(e: JobEntry) -> dict[str, Any]:
        return notify.job_ref(e.job_id, e.facts.name, e.run_id)

    def _on_Train(self, ev: Train, now: float, out: Effects) -> None:
        e, r = self.jobs[ev.job_id], ev.report
        metrics = e.tracker.on_train(r)
        if not ev.logged:
            metrics.update(e.tracker.resource_metrics(r.t_s))
            out.add(
                LogMetrics(e.job_id, metrics, r.step, "train"), LiveMetric("train", (e.job_id, r.tokens_per_s, metrics))
            )
        fresh, before = e.tracker.stop is None, self._cooling(e)
        if (d := e.tracker.train_diverged()) is not None:
            out.add(SaveTracker(e.job_id))
            self._cooldown_news(e, before, out)  # diverged while cooling: the cool-down is cut
            if fresh:
                self._decided(e, out, StopReason.DIVERGED.value)
                out.add(SetTags(e.job_id, decision_tags(d.action.value, StopReason.DIVERGED)))
            self._notify(e, notify.diverged_event(self._ref(e), d.to_dict(), t_s=now), out)
        out.answer = self.answer(e.job_id)

    def _on_Eval(self, ev: Eval, now: float, out: Effects) -> None:
        e, r = self.jobs[ev.job_id], ev.report
        t = e.tracker
        if t.last_eval is not None and r.step <= t.last_eval.step:
            out.answer = {**self.answer(e.job_id), "decision": None}  # checked before: a retry, or a step redone
            return
        before = self._cooling(e)
        outcome = t.on_eval(r)
        if e.facts.group is not None:
            e.record.psi_at_budget = t.psi_bound_at(e.facts.max_tokens // e.facts.tokens_per_step)
            if e.record.psi_at_budget is not None:
                outcome.metrics[names.PSI_AT_BUDGET] = e.record.psi_at_budget
        if not ev.logged:  # else logged before the controller restarted
            out.add(LogMetrics(e.job_id, outcome.metrics, r.step, "eval"))
        out.add(SaveTracker(e.job_id))
        d = outcome.decision
        gamma = names.gamma_kinds(outcome.metrics)
        out.add(LiveMetric("check", (e.job_id, gamma, d.ratio if d else None, d.eta if d else None)))
        if d is not None:
            self._decided(e, out, d.reason.value if d.reason else None)
            out.add(SetTags(e.job_id, {**decision_tags(d.action.value, d.reason), names.CHECK: str(d.check)}))
            if d.stopped and d.reason is StopReason.DIVERGED:
                self._notify(e, notify.diverged_event(self._ref(e), d.to_dict(), t_s=now), out)
            elif d.stopped and not outcome.halt and not t.cooling:  # shadow mode: the rule would stop it
                self._notify(e, notify.shadow_event(self._ref(e), d.to_dict(), gamma, t_s=now), out)
        self._cooldown_news(e, before, out)
        out.answer = {**self.answer(e.job_id, halt=outcome.halt), "decision": d.to_dict() if d else None}

    @staticmethod
    def _cooling(e: JobEntry) -> tuple[bool, bool]:
        """(its cool-down has started, it is cooling): compared before and after an event by `_cooldown_news`."""
        c = e.tracker.cooldown
        return c is not None and c.start_step is not None, e.tracker.cooling

    def _cooldown_news(self, e: JobEntry, before: tuple[bool, bool], out: Effects) -> None:
        """Its STOP's cool-down began (state `cooling`, a tag, a line), or ended (its gain, logged at its last step)."""
        c = e.tracker.cooldown
        (started, active), (was_started, was_active) = self._cooling(e), before
        if c is None:
            return
        if active and e.state is not JobLifecycle.COOLING and e.state in RUNNING:
            self._set_state(e, JobLifecycle.COOLING, out)
        if c.start_step is None:
            return
        shape = f"steps {c.start_step}→{c.end_step} ({c.shape})"
        if started and not was_started:
            out.add(
                SetTags(e.job_id, {names.COOLDOWN: shape}),
                Print(
                    f"{e.job_id}: STOP ({c.reason}) at step {c.start_step}; cooling the LR down to step {c.end_step}"
                ),
            )
        if was_active and not active:
            gained = c.psi_gained()
            figures = {
                names.PSI_DECISION: c.decision["psi"],
                names.VAL_LOSS_DECISION: c.decision["val_loss"],
                names.PSI_GAINED: gained,
            }
            metrics = {k: float(v) for k, v in figures.items() if v is not None and math.isfinite(v)}
            cut = f", cut at step {c.end['step']} ({c.cut})" if c.cut else ""
            gain = f": Ψ {gained:+.4g}" if gained is not None else ""
            out.add(
                LogMetrics(e.job_id, metrics, int(c.end["step"])),
                SetTags(e.job_id, {names.COOLDOWN: shape + cut + gain}),
            )

    def _on_Initial(self, ev: Initial, now: float, out: Effects) -> None:
        """Ψ at step 0, logged once (a gang restarted before its first checkpoint measures it again)."""
        rec = self.jobs[ev.job_id].record
        if rec.psi_initial is not None or not math.isfinite(ev.psi):
            return
        rec.psi_initial = ev.psi
        metrics = {names.PSI_INITIAL: ev.psi}
        if math.isfinite(ev.val_loss):
            metrics[names.VAL_LOSS_INITIAL] = ev.val_loss
        out.add(SaveHandle(ev.job_id), LogMetrics(ev.job_id, metrics, 0))

    def _on_Telemetry(self, ev: Telemetry, now: float, out: Effects) -> None:
        e = self.jobs[ev.job_id]
        e.tracker.on_telemetry([TelemetrySample.from_dict(s) for s in ev.samples])
        out.add(AppendLog(e.job_id, "telemetry.jsonl", ev.samples))
        e.telemetry_lines += len(ev.samples)

    def _on_Probe(self, ev: Probe, now: float, out: Effects) -> None:
        if ev.logged:  # a retry, or a step redone after a restart: not logged twice
            if ev.label is not None and not ev.nonfinite:
                # Its blueprint is built after the lock is let go: a controller killed meanwhile owes it. Publishing
                # is idempotent (the store finds a version it already wrote), so a retry publishes it, once.
                out.add(PublishBlueprint(ev.job_id, ev.step))
            return
        if ev.nonfinite:
            warning = f"non-finite gradients at step {ev.step}; no blueprint"
            out.add(SetTags(ev.job_id, {names.PROBE_WARNING: warning}))
            return
        out.add(LogMetrics(ev.job_id, ev.metrics, ev.step, "probe"))
        if ev.label is not None:
            out.add(PublishBlueprint(ev.job_id, ev.step))

    def _on_BlueprintPublished(self, ev: BlueprintPublished, now: float, out: Effects) -> None:
        e, record = self.jobs[ev.job_id], ev.record
        if ev.fresh:
            out.add(AppendLog(e.job_id, "blueprints.jsonl", [record]))
            self._notify(e, notify.blueprint_event(self._ref(e), ev.model_id, record, t_s=now), out)
        kept = [b for b in e.blueprints if b["version"] != record["version"]]
        e.blueprints = sorted([*kept, record], key=lambda b: b["version"])
        versions = [b["version"] for b in e.blueprints]
        out.add(RecordBlueprint(e.job_id, ev.model_id, record["version"], record["path"], versions))

    def _on_BlueprintFailed(self, ev: BlueprintFailed, now: float, out: Effects) -> None:
        out.add(
            SetTags(ev.job_id, {names.BLUEPRINT_ERROR: ev.message[:5000]}),
            AppendLog(ev.job_id, "blueprints.jsonl", [{"error": ev.message, "step": ev.step}]),
        )

    def _on_Checkpointed(self, ev: Checkpointed, now: float, out: Effects) -> None:
        rec = self.jobs[ev.job_id].record
        if rec.checkpoint is not None and ev.record["step"] < rec.checkpoint["step"]:
            return  # retried after a controller restart, after a newer one (the retries run concurrently)
        rec.checkpoint = ev.record
        out.add(SaveHandle(ev.job_id), SetTags(ev.job_id, {names.CHECKPOINT: ev.record["path"]}))

    def _on_Adapted(self, ev: Adapted, now: float, out: Effects) -> None:
        """An adapt job's selection (logged once: a restarted gang selects again, the same set) or its measured
        memory: metrics, tags, the record as an artifact and in its summary."""
        e = self.jobs[ev.job_id]
        before = e.adapt or {}
        rec = ev.record
        if "selection" in rec and "selection" not in before:
            sel = rec["selection"]
            out.add(
                LogMetrics(e.job_id, selection_metrics(sel), 0),
                SetTags(e.job_id, {names.ADAPT_STRATEGY: str(sel["strategy"]), names.ADAPT_CHOSEN: chosen_tag(sel)}),
            )
        if "measured" in rec and "measured" not in before:
            out.add(LogMetrics(e.job_id, measured_metrics(rec["measured"]), int(rec["measured"].get("step", 1))))
        e.adapt = {**rec, **before}  # the first of each part stays
        out.add(LogText(e.job_id, json.dumps(json_safe(e.adapt), indent=2), "adapt/selection.json"))

    def _on_Sources(self, ev: Sources, now: float, out: Effects) -> None:
        e = self.jobs[ev.job_id]
        e.sources[ev.rank] = ev.statuses
        every = [s for st in e.sources.values() for s in st]
        absent = sorted({s["name"] + ": " + s["detail"] for s in every if not s["present"]})
        fallbacks = sorted({s["name"] + ": " + s["detail"] for s in every if s["present"] and s["method"] != "counter"})
        tags = {names.ABSENT_SOURCES: "; ".join(absent) or "none", names.FALLBACKS: "; ".join(fallbacks) or "none"}
        tags[names.HARDWARE] = " | ".join(sorted({f"{s['kind']}: {s['detail']}" for s in every if s["present"]}))[:4000]
        out.add(SetTags(e.job_id, tags))

    def _on_StopRequest(self, ev: StopRequest, now: float, out: Effects) -> None:
        e = self.jobs.get(ev.job_id)
        if e is None:
            out.answer = {"ok": False, "error": f"no job {ev.job_id}"}
            return
        if e.done:
            out.answer = {"ok": False, "error": f"job {ev.job_id} already ended ({e.state})"}
            return
        if ev.request is not None:
            if ev.request == e.record.stop_request:  # a poll found the request it acted on before
                out.answer = {"ok": True, "decision": None, "cooling": e.tracker.cooling}
                return
            e.record.stop_request = ev.request
            out.add(SaveHandle(e.job_id))
        t = e.tracker
        step = t.last_train.step if t.last_train else 0
        fresh, before = t.stop is None, self._cooling(e)
        # A job waiting in the queue (never started, or paused) has no ranks to cool down: it ends as it is.
        d = t.user_stop(step=step, t_s=now, reason=ev.reason, cool=e.state not in WAITING)
        out.add(SaveTracker(e.job_id))
        self._cooldown_news(e, before, out)  # it cools from its next check, or a stop while it cools cuts it short
        if fresh:
            self._decided(e, out, d.reason.value if d.reason else None)
            out.add(SetTags(e.job_id, decision_tags(d.action.value, d.reason)))
            if ev.detail is not None and ev.reason is StopReason.INTERRUPTED:
                e.record.interrupted_by = ev.detail
                out.add(SaveHandle(e.job_id), SetTags(e.job_id, {names.INTERRUPTED_BY: ev.detail}))
        out.answer = {"ok": True, "decision": d.to_dict(), "cooling": t.cooling}

    # -- the queue and the pool (pool lock) -----------------------------------------------------------------------
    @staticmethod
    def _figures(e: JobEntry) -> tuple[float | None, float | None, int]:
        """Its latest window ratio, η and tokens, read without its lock: single reads of a list's last item and of
        an attribute."""
        decisions = e.tracker.decisions
        last = decisions[-1] if decisions else {}
        train = e.tracker.last_train
        return last.get("ratio"), last.get("eta"), train.tokens if train else 0

    def _policy_view(self, e: JobEntry, now: float) -> JobState:
        f, rec, t = e.facts, e.record, e.tracker
        ratio, eta, tokens = self._figures(e)
        if rec.state in RUNNING:
            status = JobLifecycle.RUNNING
        elif rec.state == JobLifecycle.PAUSED:
            status = JobLifecycle.PAUSED
        else:
            status = JobLifecycle.QUEUED
        return JobState(
            job_id=e.job_id,
            priority=f.priority,
            submitted_t=rec.submitted_t,
            status=status,
            slots=rec.slots,
            requested_slots=f.num_workers * f.slot_step,
            min_slots=f.min_world * f.slot_step,
            max_slots=f.max_world * f.slot_step,
            slot_step=f.slot_step,
            # A restart under way counts as a resize just now: no second one until it has come back and cooled.
            last_resize_t=now if rec.restart_to is not None else rec.last_resize_t,
            resize_cooldown_s=f.resize_cooldown_s,
            halted=t.halted,
            cooling=t.cooling,
            stop_reason=t.stop.reason.value if t.stop is not None and t.stop.reason else "",
            group=f.group,
            psi=t.last_eval.psi if t.last_eval else None,
            psi_at_budget=rec.psi_at_budget,
            ratio=ratio,
            eta=eta,
            remaining_fraction=max(0.0, 1.0 - tokens / f.max_tokens),
        )

    def _on_Tick(self, ev: Tick, now: float, out: Effects) -> None:
        """One scheduling round: the pure policy decides, this applies and records. Jobs whose ranks use GPUs share
        the cluster's GPUs; the others its CPUs: one policy tick per pool."""
        # Waiting jobs, and running ones still holding slots (one whose STOP was decided has given them back: its
        # ranks are checkpointing and leaving). Ended jobs are out.
        live = [
            e
            for e in self.jobs.values()
            if (e.state in WAITING and not e.done) or (e.state in RUNNING and e.record.slots > 0)
        ]
        if not live:
            return
        for kind in POOLS:
            mine = [e for e in live if e.facts.slot_kind == kind]
            if mine:
                self._tick_pool(kind, mine, int(ev.cluster.get(kind, 0)), now, out)
        waiting = [e.job_id for e in live if e.state in WAITING and not e.tracker.halted]
        if waiting:  # `cpr stop` of a waiting job: no ranks poll for it
            out.add(PollStop(waiting))

    def _tick_pool(self, kind: str, live: list[JobEntry], pool: int, now: float, out: Effects) -> None:
        # Nodes come and go: never tell the policy the pool is smaller than what running jobs hold, and keep a job
        # larger than today's pool waiting (with a note) instead of letting it block every tick.
        pool = self.pools[kind] = max(pool, sum(e.record.slots for e in live))
        if pool < 1:  # the cluster reports none right now (a node restarting): try again next tick
            return
        # Slots of a job that has ended but not yet handed them back (its release is on its way) are not free yet.
        ids = {e.job_id for e in live}
        ending = sum(e.record.slots for e in self.jobs.values() if e.job_id not in ids and e.facts.slot_kind == kind)
        views = [self._policy_view(e, now) for e in live]
        need = {v.job_id: v.requested_slots for v in views}
        too_big = {job_id: n for job_id, n in need.items() if n > pool}
        for e in live:
            if e.job_id in too_big:
                self._note(e, f"queued: needs {too_big[e.job_id]} {kind} slots, the pool has {pool}", out)
        live = [e for e in live if e.job_id not in too_big]
        decisions = (
            tick(
                pool - ending,
                [v for v in views if v.job_id not in too_big],
                now=now,
                config=PolicyConfig(),
                ended_best=self._ended_best(),
            )
            if live
            else []
        )
        for d in decisions:
            if d.action is SlotAction.IDLE:
                if d.reason != self.idle_notes.get(kind):
                    self.idle_notes[kind] = d.reason
                    self._record(d, None, pool, now, out)
                continue
            assert d.job_id is not None
            e = self.jobs[d.job_id]
            rec = e.record
            was_paused = e.state is JobLifecycle.PAUSED
            if d.action is SlotAction.START:
                rec.slots = d.to_slots
                self._set_state(e, JobLifecycle.STARTING, out)
                out.add(StartGang(e.job_id))
            elif d.action is SlotAction.STOP:
                rec.slots = 0
                if not e.tracker.halted:  # the scheduler's own STOP (a dominated job): halt it as a user would
                    out.add(HaltLater(e.job_id, StopReason.DOMINATED))
                # Stopped while waiting (only a tick moves a job out of WAITING, so the test is safe while its own
                # thread may be finishing it): it ends without starting.
                if e.state in WAITING:
                    self._set_state(e, JobLifecycle.STOPPING, out)
                    out.add(EndUnstarted(e.job_id))
            elif d.action in (SlotAction.RESIZE, SlotAction.PAUSE):
                # The ranks see it in their next report's answer, checkpoint and return; its runner restarts the
                # job at the new size (or leaves it paused). The slots count as moved from now on.
                rec.slots = d.to_slots
                rec.restart_to = d.to_slots // e.facts.slot_step
                rec.last_resize_t = now
            # Applied and persisted before it is recorded: a controller restarted in between must not decide it again.
            out.add(SaveHandle(e.job_id))
            self._record(d, e, pool, now, out)
            change = notify.reallocation_kind(d.action.value, d.from_slots, d.to_slots, d.reason, was_paused)
            if change is not None:
                self._notify(e, notify.reallocation_event(self._ref(e), change, d.to_dict(), t_s=now), out)
        free = pool - sum(e.record.slots for e in self.jobs.values() if e.facts.slot_kind == kind)
        for e in live:
            if e.state in WAITING and not e.tracker.halted:
                self._note(e, f"queued: needs {need[e.job_id]} {kind} slots, {free} of {pool} free", out)

    @staticmethod
    def _note(e: JobEntry, note: str, out: Effects) -> None:
        """The scheduler's word on a waiting job, on its run when it changes."""
        if e.record.schedule != note:
            e.record.schedule = note
            out.add(SetTags(e.job_id, {names.SCHEDULE: note}))

    def _ended_best(self) -> dict[str, tuple[float, str]]:
        """Per group, the best Ψ (and whose) among its jobs that have ended."""
        best: dict[str, tuple[float, str]] = {}
        for e in self.jobs.values():
            last, group = e.tracker.last_eval, e.facts.group
            if group is None or not e.done or last is None:
                continue
            if group not in best or last.psi > best[group][0]:
                best[group] = (last.psi, e.job_id)
        return best

    def _record(self, d: SlotDecision, e: JobEntry | None, pool: int, now: float, out: Effects) -> None:
        """A decision with its figures: the cluster's scheduler log, the job's own log, tags on its run."""
        entry = {"t_s": now, "pool": pool, **d.to_dict()}
        out.add(ScheduleEntry(entry))
        if e is None:
            return
        e.record.schedule = f"{d.action.value}: {d.reason}"
        last = e.tracker.last_train  # one attribute read: its lock is not held here
        out.add(
            AppendLog(e.job_id, "schedule.jsonl", [entry]),
            SetTags(e.job_id, {names.SCHEDULE: e.record.schedule, names.SLOTS: str(d.to_slots)}),
            # The slots over the run's steps: MLflow draws start, resizes, pauses and the STOP as one line.
            LogMetrics(e.job_id, {names.SCHEDULER_SLOTS: float(d.to_slots)}, last.step if last else 0),
        )

    def _on_Release(self, ev: Release, now: float, out: Effects) -> None:
        """A job that ended without a STOP from the scheduler (its budget, a failure) gives its slots back."""
        e = self.jobs[ev.job_id]
        if not e.record.slots:
            return
        ratio, eta, _ = self._figures(e)
        why = (e.summary or {}).get("reason") or e.record.error or "unknown"
        d = SlotDecision(
            action=SlotAction.STOP,
            job_id=e.job_id,
            from_slots=e.record.slots,
            to_slots=0,
            reason=f"ended ({e.state}: {why})"[:500],
            ratio=ratio,
            eta=eta,
        )
        self._record(d, e, self.pools.get(e.facts.slot_kind, 0), now, out)
        e.record.slots = 0

    # -- its gangs ----------------------------------------------------------------------------------------------
    def _on_GangStarted(self, ev: GangStarted, now: float, out: Effects) -> None:
        e = self.jobs[ev.job_id]
        rec = e.record
        e.tracker.started(now)
        if rec.restarts and "seconds" not in rec.restarts[-1]:  # from its decision to this start
            rec.restarts[-1]["seconds"] = now - rec.restarts[-1].pop("since")
        rec.world = ev.world
        rec.checkpoint = None  # the gang's own periodic checkpoints come after `resume`
        self._set_state(e, JobLifecycle.COOLING if e.tracker.cooling else JobLifecycle.RUNNING, out)

    def _on_RankLost(self, ev: RankLost, now: float, out: Effects) -> None:
        """Point the job at its latest checkpoint for a new gang of the same size, or fail it once its gang was lost
        more than cluster.max_restarts times. Steps redone after the checkpoint are not counted or logged again (the
        reports' steps say so); their energy, really spent again, is."""
        e = self.jobs[ev.job_id]
        rec = e.record
        rec.failures += ev.failure
        step = e.tracker.last_train.step if e.tracker.last_train else 0
        if rec.failures > e.facts.max_restarts:
            out.next = "fail"
            out.error = f"{ev.why} (lost {rec.failures} times; cluster.max_restarts={e.facts.max_restarts})"
            return
        if rec.checkpoint is not None:  # else: the checkpoint it started from, or from scratch
            rec.resume = _plain_resume(rec.checkpoint["path"])
        rec.incarnation += 1
        rec.restarts.append(
            {
                "step": step,
                "from_workers": rec.world,
                "to_workers": rec.world,
                "reason": ev.why,
                "resumed_from": rec.checkpoint["step"] if rec.checkpoint else None,
                "since": now,
            }
        )
        tags = {names.RESTARTS: str(len(rec.restarts)), names.LAST_RESTART: ev.why[:500]}
        out.add(SetTags(e.job_id, tags))
        out.add(Print(f"{e.job_id}: {ev.why}; restarting from {rec.resume and rec.resume['tag']}"))
        self._set_state(e, JobLifecycle.RESTARTING, out)
        out.next = "restart"

    def _on_GangReturned(self, ev: GangReturned, now: float, out: Effects) -> None:
        """Its gang returned: the job ends (a STOP, its budget) or restarts for a decided resize or pause. ZeRO 1–3
        shard optimizer state by world size, so a checkpoint to be loaded at another size is first converted."""
        e = self.jobs[ev.job_id]
        rec = e.record
        e.results = list(ev.results)
        rank0 = min(e.results, key=lambda r: r["rank"])
        rec.train_s += rank0["train_s"]
        rec.probe_s += rank0["probe_s"]
        if rec.restart_to is None:
            out.next = "finish"
            return
        if e.tracker.halted or any(r["ended_by"] != "restart" for r in e.results):
            rec.restart_to = None  # it ended meanwhile: its slots go back through its release
            out.next = "finish"
            return
        target = rec.restart_to
        # A paused job comes back at the size it asked for (the scheduler's START gives it that many slots).
        next_world = target or e.facts.num_workers
        self._set_state(e, JobLifecycle.RESTARTING if target else JobLifecycle.PAUSING, out)
        rec.resume = _plain_resume(rank0["checkpoint"])
        if next_world != rec.world and e.facts.zero_stage > 0:
            out.add(ConvertCheckpoint(e.job_id, rank0["checkpoint"]))
        out.next = "restart"

    def _on_RestartReady(self, ev: RestartReady, now: float, out: Effects) -> None:
        e = self.jobs[ev.job_id]
        rec = e.record
        target = rec.restart_to
        assert target is not None
        rec.resume = ev.resume
        rec.incarnation += 1
        since = rec.last_resize_t or now
        rec.restarts.append({"step": ev.step, "from_workers": rec.world, "to_workers": target, "since": since})
        rec.restart_to = None
        if target:
            out.next = "restart"
            return
        rec.restarts[-1]["seconds"] = now - rec.restarts[-1].pop("since")  # a pause: until it is paused
        self._set_state(e, JobLifecycle.PAUSED, out)
        rec.schedule = f"paused at step {ev.step}: waits for {e.facts.num_workers} ranks' slots"
        out.add(SetTags(e.job_id, {names.SCHEDULE: rec.schedule}))
        out.next = "pause"

    # -- endings ------------------------------------------------------------------------------------------------
    def _artifacts(self, e: JobEntry, out: Effects) -> None:
        out.add(LogText(e.job_id, e.tracker.curve_csv(), "curve.csv"))
        # Every decision of the job: the store's append-only log (the tracker keeps only the latest in memory).
        out.add(LogStoreFile(e.job_id, "decisions.jsonl"))
        if e.summary is not None:
            out.add(LogText(e.job_id, json.dumps(json_safe(e.summary), indent=2), "summary.json"))
        out.add(LogStoreFile(e.job_id, "telemetry.jsonl"))

    def _on_Finish(self, ev: Finish, now: float, out: Effects) -> None:
        e = self.jobs[ev.job_id]
        t = e.tracker
        if not t.halted:
            last_step = max((r["step"] for r in e.results), default=0)
            d = t.budget_reached(step=last_step, t_s=now)
            out.add(SaveTracker(e.job_id))
            self._decided(e, out, d.reason.value if d.reason else None)
        summary = t.summary()
        summary.update(
            run_id=e.run_id,
            checkpoint=e.results[0]["checkpoint"] if e.results else None,
            diverged_state_not_saved=any(not r.get("finite", True) for r in e.results),
            absent_sources=sorted({s["name"] for st in e.sources.values() for s in st if not s["present"]}),
            telemetry_errors=[x for r in e.results for x in r.get("telemetry_errors", [])],
            workers=sorted(e.results, key=lambda r: r["rank"]),
            train_s=e.record.train_s,
            probe_s=e.record.probe_s,
            restarts=list(e.record.restarts),
            blueprints=list(e.blueprints),
            psi_initial=e.record.psi_initial,
        )
        if e.adapt is not None:
            summary["adapt"] = summary_of(e.adapt)
        reason = summary["reason"] or "budget"
        if reason == StopReason.INTERRUPTED.value:
            summary["interrupted_by"] = e.record.interrupted_by
            if e.results:  # its final checkpoint: where `cpr submit +resume` continues it
                rank0 = min(e.results, key=lambda r: r["rank"])
                e.record.checkpoint = {"step": rank0["step"], "path": rank0["checkpoint"], "world_size": e.record.world}
        e.summary = summary
        out.add(SetTags(e.job_id, {names.DECISION: "stop", names.REASON: reason}))
        self._artifacts(e, out)
        out.add(SaveTracker(e.job_id), SaveSummary(e.job_id))
        self._set_state(e, _ENDED_BY.get(reason, JobLifecycle.STOPPED), out)
        self._notify(e, notify.stop_event(self._ref(e), summary, incarnation=e.record.incarnation, t_s=now), out)

    def _on_Fail(self, ev: Fail, now: float, out: Effects) -> None:
        e = self.jobs[ev.job_id]
        e.record.error, e.record.input_error = ev.error, ev.input_error
        e.summary = {**e.tracker.summary(), "error": ev.error, "run_id": e.run_id}
        out.add(SetTags(e.job_id, {names.ERROR: ev.error[:5000]}))
        self._artifacts(e, out)
        out.add(SaveTracker(e.job_id), SaveSummary(e.job_id))
        final = Effects()
        self._set_state(e, JobLifecycle.FAILED, final)
        self._notify(e, notify.failed_event(self._ref(e), ev.error, incarnation=e.record.incarnation, t_s=now), final)
        out.final = final.items

    def _on_Notified(self, ev: Notified, now: float, out: Effects) -> None:
        """A delivery ended: counted on its record and its run's tag (`cpr status` shows failures)."""
        e = self.jobs.get(ev.job_id)
        if e is None:
            return
        rec = e.record
        if ev.ok:
            rec.notify_sent += 1
        else:
            rec.notify_failed += 1
            rec.notify_error = f"{ev.channel}: {ev.error or 'failed'}"[:300]
        tag = f"{rec.notify_sent} sent, {rec.notify_failed} failed"
        if rec.notify_failed:
            tag += f" (last: {rec.notify_error})"
        out.add(SaveHandle(e.job_id), SetTags(e.job_id, {names.NOTIFY: tag}))

    def _on_Ended(self, ev: Ended, now: float, out: Effects) -> None:
        self.jobs[ev.job_id].done = True
        out.add(SetDone(ev.job_id))

    def _on_Resumed(self, ev: Resumed, now: float, out: Effects) -> None:
        """Back in the queue from its checkpoint as a new incarnation (its ranks' telemetry sources are new ones, so
        no counter spans the time it was gone); its tracker goes on from what it persisted."""
        e = self.jobs[ev.job_id]
        rec = e.record
        e.tracker.resume(now)
        e.done, e.summary, e.results = False, None, []
        rec.resume = ev.resume
        rec.incarnation += 1
        rec.slots, rec.restart_to, rec.checkpoint = 0, None, None
        rec.error, rec.input_error, rec.interrupted_by = None, None, None
        rec.restarts.append(
            {
                "step": ev.step,
                "from_workers": rec.world,
                "to_workers": rec.world,
                "reason": f"resumed ({ev.was})",
                "since": now,
            }
        )
        tags = {names.RESUMED: f"from step {ev.step} ({ev.was})", names.DECISION: "", names.REASON: ""}
        out.add(SaveTracker(e.job_id), SaveHandle(e.job_id), SetTags(e.job_id, tags))
        self._set_state(e, JobLifecycle.QUEUED, out)


_ENDED_BY = {StopReason.BUDGET.value: JobLifecycle.FINISHED, StopReason.INTERRUPTED.value: JobLifecycle.INTERRUPTED}
"""The state a STOP's reason ends a job in (any other reason: `stopped`)."""


def _plain_resume(path: str) -> dict[str, Any]:
    """A DeepSpeed checkpoint `<dir>/<tag>` as a resume point, loaded at the size it was saved at."""
    ckpt = Path(path)
    return {"dir": str(ckpt.parent), "tag": ckpt.name, "universal": False}
