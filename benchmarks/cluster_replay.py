"""benchmarks/cluster_replay: static vs Ray Tune's ASHA vs ours at cluster scale — 64 jobs on 256 slots — by
replaying recorded curves through the same pure code the controller runs (scheduling.tick, the stop rule, the
forecast) in simulated time.

The curves are the real ones `benchmarks/multijob` recorded (Ψ and cumulative energy at every check of four
learning rates, one rank each; `benchmarks/data/multijob_curves.json`). The cluster holds 16 sweeps of those four
jobs; each sweep's copies are shifted in Ψ and scaled in time and energy (a model size) by a fixed random draw,
so sweeps differ. Every job asks for 8 slots and may run on 4 to 16 (ours only); its speed is proportional to its
slots, and a resize costs `--restart` (2 %) of its whole run's duration on its new slots doing nothing. Each sweep
is one ASHA experiment (its own `AsyncHyperBandScheduler`) and one group for ours.

It prints, per policy: the sweeps whose best job reached their Ψ* (the best final Ψ any policy reached in that
sweep), the energy and slot-hours of all jobs together and against static's, the makespan, and the time one
scheduling round over the 64 jobs takes.

    .venv/bin/python -m benchmarks.cluster_replay [--curves FILE] [--sweeps 16] [--slots 256] [--max-loss D]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from orchestrator.core.forecast import optimistic_psi_at
from orchestrator.core.resources import projected_to_budget
from orchestrator.core.scheduling import JobState, JobStatus, PolicyConfig, SlotAction, tick
from orchestrator.core.stop_rule import StopRule, StopRuleConfig

CURVES = Path(__file__).with_name("data") / "multijob_curves.json"
DT = 0.1  # simulated seconds per round (a tenth of a check of the recorded jobs)


@dataclass
class Curve:
    psi: list[float]
    energy: list[float]
    """Cumulative kWh at each check."""
    check_s: float
    """Seconds per check at its requested size."""


@dataclass
class SimJob:
    job_id: str
    group: str
    curve: Curve
    want: int
    submitted_t: float
    status: JobStatus = JobStatus.QUEUED
    slots: int = 0
    progress: float = 0.0
    """Checks done (fractional)."""
    checks: int = 0
    stall_s: float = 0.0
    """Seconds left of a restart (no progress)."""
    rule: Any = None
    halted: bool = False
    ended: bool = False
    psi: float | None = None
    ratio: float | None = None
    psi_at_budget: float | None = None
    last_resize_t: float | None = None
    slot_s: float = 0.0

    @property
    def duration_s(self) -> float:
        """Its whole run at its requested size."""
        return len(self.curve.psi) * self.curve.check_s


def load_curves(path: Path) -> list[Curve]:
    """The recorded jobs of one multijob static run, in learning-rate order."""
    data = json.loads(path.read_text())
    out = []
    for job in data["jobs"]:
        checks = job["checks"]
        t = [c[1] for c in checks]
        out.append(
            Curve(
                psi=[c[2] for c in checks],
                energy=[c[3] for c in checks],
                check_s=(t[-1] - t[0]) / max(1, len(t) - 1),
            )
        )
    return out


def make_cluster(curves: list[Curve], sweeps: int, want: int, seed: int) -> list[SimJob]:
    rng = np.random.default_rng(seed)
    jobs = []
    for g in range(sweeps):
        shift, size = rng.normal(0.0, 0.3), float(np.exp(rng.uniform(-0.5, 0.5)))
        for i, c in enumerate(curves):
            curve = Curve(psi=[p + shift for p in c.psi], energy=[e * size for e in c.energy], check_s=c.check_s * size)
            jobs.append(SimJob(job_id=f"s{g}-lr{i}", group=f"s{g}", curve=curve, want=want, submitted_t=g + i / 10))
    return jobs


def rule_config(max_loss: float | None) -> StopRuleConfig:
    """The rule the multijob jobs ran under (its debug experiment), with Γ = energy and the default η or a given δ."""
    from orchestrator.config.compose import compose_job

    delta = [] if max_loss is None else [f"stop.max_loss={max_loss}"]
    job = compose_job(["+experiment=debug", "stop.resource=energy_kwh", "stop.eta_rel=null", *delta])
    return job.stop.rule_config()


def simulate(policy: str, jobs: list[SimJob], slots: int, max_loss: float | None, restart: float) -> dict[str, Any]:
    """Run every job to its end under `policy`; returns per-job outcomes and the tick latencies."""
    jobs = [replace(j) for j in jobs]  # fresh per-policy state
    by_id = {j.job_id: j for j in jobs}
    ours = policy == "ours"
    config = (
        PolicyConfig(resize_cooldown_s=3.0)  # about two checks
        if ours
        else PolicyConfig(grow=False, shrink=False, preempt=False, dominance=False)
    )
    asha: dict[str, Any] = {}
    if policy == "asha":
        from ray.tune.schedulers import AsyncHyperBandScheduler

        np.random.seed(0)
        for j in jobs:
            if j.group not in asha:
                n = len(j.curve.psi)
                asha[j.group] = AsyncHyperBandScheduler(
                    time_attr="training_iteration", metric="psi", mode="max", max_t=n
                )
            asha[j.group].on_trial_add(None, SimpleNamespace(trial_id=j.job_id))
    rule = rule_config(max_loss)
    for j in jobs:
        j.rule = StopRule(rule) if ours else None
    now, tick_ms = 0.0, []
    ended_best: dict[str, tuple[float, str]] = {}
    while not all(j.ended for j in jobs):
        # -- progress: each running job advances by its share of its requested speed
        for j in jobs:
            if j.status is not JobStatus.RUNNING or j.ended:
                continue
            j.slot_s += j.slots * DT
            if j.stall_s > 0:
                j.stall_s = max(0.0, j.stall_s - DT)
                continue
            j.progress += DT * j.slots / j.want / j.curve.check_s
            n = len(j.curve.psi)
            while j.checks < min(int(j.progress), n) and not j.halted:
                k = j.checks
                j.checks += 1
                j.psi = j.curve.psi[k]
                if ours:
                    # as the controller does: Γ at the budget projected from the job's own rate (checks ∝ tokens)
                    horizon = projected_to_budget(j.curve.energy[k], j.checks, n)
                    d = j.rule.observe(psi=j.psi, gamma=j.curve.energy[k], step=j.checks, horizon=horizon)
                    j.halted, j.ratio = j.halted or d.stopped, d.ratio
                    # as the controller does: in checks (steps), not in Γ
                    j.psi_at_budget = optimistic_psi_at(range(1, j.checks + 1), j.curve.psi[: j.checks], float(n))
                elif policy == "asha" and j.checks < n:
                    said = asha[j.group].on_trial_result(
                        None, SimpleNamespace(trial_id=j.job_id), {"training_iteration": j.checks, "psi": j.psi}
                    )
                    j.halted = said == "STOP"
            if j.checks >= n:
                j.halted = True
        # -- one scheduling round
        live = [j for j in jobs if not j.ended]
        states = [
            JobState(
                job_id=j.job_id,
                priority=5,
                submitted_t=j.submitted_t,
                status=j.status,
                slots=j.slots,
                requested_slots=j.want,
                min_slots=j.want // 2 if ours else j.want,
                max_slots=j.want * 2 if ours else j.want,
                slot_step=1,
                halted=j.halted,
                ratio=j.ratio,
                eta=j.rule.state.eta if ours else None,
                remaining_fraction=1.0 - j.checks / len(j.curve.psi),
                last_resize_t=j.last_resize_t,
                group=j.group if ours else None,
                psi=j.psi,
                psi_at_budget=j.psi_at_budget,
            )
            for j in live
        ]
        t0 = time.perf_counter()
        decisions = tick(slots, states, now=now, config=config, ended_best=ended_best)
        tick_ms.append((time.perf_counter() - t0) * 1000)
        for d in decisions:
            if d.job_id is None:
                continue
            j = by_id[d.job_id]
            if d.action is SlotAction.STOP:
                j.ended, j.slots, j.status = True, 0, JobStatus.QUEUED
                if j.psi is not None and (j.group not in ended_best or j.psi > ended_best[j.group][0]):
                    ended_best[j.group] = (j.psi, j.job_id)
            elif d.action is SlotAction.START:
                j.status, j.slots = JobStatus.RUNNING, d.to_slots
            elif d.action is SlotAction.RESIZE:
                j.slots, j.stall_s, j.last_resize_t = d.to_slots, restart * j.duration_s, now
            elif d.action is SlotAction.PAUSE:
                j.status, j.slots, j.stall_s = JobStatus.PAUSED, 0, restart * j.duration_s
        now += DT
    return {"jobs": jobs, "makespan_s": now, "tick_ms": tick_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=CURVES)
    parser.add_argument("--sweeps", type=int, default=16)
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--want", type=int, default=8, help="slots each job asks for (8: half the jobs wait)")
    parser.add_argument("--max-loss", type=float, default=None, help="ours: δ of each job's rule (default: the core's)")
    parser.add_argument("--restart", type=float, default=0.02, help="a resize's cost, as a share of the job's run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    curves = load_curves(args.curves)
    cluster = make_cluster(curves, args.sweeps, args.want, args.seed)
    print(f"{len(cluster)} jobs ({args.sweeps} sweeps × {len(curves)}) on {args.slots} slots", flush=True)
    runs = {p: simulate(p, cluster, args.slots, args.max_loss, args.restart) for p in ("static", "asha", "ours")}
    groups = sorted({j.group for j in cluster})
    final = {
        p: {g: max((j.psi for j in r["jobs"] if j.group == g and j.psi is not None), default=None) for g in groups}
        for p, r in runs.items()
    }
    target = {g: max(final[p][g] for p in runs if final[p][g] is not None) for g in groups}
    head = ("policy", "sweeps at Ψ*", "energy kWh", "slot-h", "× static E / h", "makespan s", "tick ms p50/p99")
    print("{:8} {:>12} {:>11} {:>9} {:>15} {:>11} {:>16}".format(*head))
    base = None
    for p, r in runs.items():
        at_target = sum(1 for g in groups if final[p][g] is not None and final[p][g] >= target[g])
        # Energy of the checks each job did; slot-hours it held (restarts included).
        energy = sum(j.curve.energy[j.checks - 1] for j in r["jobs"] if j.checks)
        hours = sum(j.slot_s for j in r["jobs"]) / 3600
        base = base or (energy, hours)
        ms = sorted(r["tick_ms"])
        p50, p99 = statistics.median(ms), ms[int(0.99 * (len(ms) - 1))]
        print(
            f"{p:8} {at_target:>5} of {len(groups):<4} {energy:11.4f} {hours:9.3f} "
            f"{energy / base[0]:7.2f} / {hours / base[1]:5.2f} {r['makespan_s']:11.0f} {p50:7.2f}/{p99:<7.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
