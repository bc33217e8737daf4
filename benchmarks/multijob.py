"""benchmarks/multijob: the same real jobs on one pool of 2 CPU slots under three policies, side by side.

(a) static — FIFO, every job to its token budget, one rank each;
(b) Ray Tune's ASHA — `AsyncHyperBandScheduler` (default reduction factor 4, grace period 1 check) decides at
    every evaluation check of every job; its STOPs go to the controller as user stops;
(c) ours — the four jobs form one group: each runs under its default marginal-return rule (budget-aware η,
    δ = stop.max_loss), the scheduler stops a job whose optimistic forecast at its budget is below the best Ψ
    another job reached (`dominated`), gives free slots to the queue first and then grows (by checkpoint-restart)
    the running job that pays most above its η.

Same jobs, seeds, data and budgets in each (llama-tiny at four learning rates by default). Every run is real:
Ray, DeepSpeed ZeRO-2 on CPU, MLflow, codecarbon.

For each policy it prints the best final Ψ (−validation loss) of its jobs, whether it is Ψ* (the best any policy
reached), and the Γ of the whole sweep — energy (codecarbon's estimate, the ledger's) and slot-hours (slots held,
from the scheduler's log) — against static's: what it cost to find and train the best job. Ψ is deterministic
given the seed (the data stream does not depend on the world size), so a job that reaches its budget reaches the
same Ψ under every policy.

    .venv/bin/python -m benchmarks.multijob [--workdir DIR] [--lrs 5e-3 1.5e-3 5e-4 1.5e-4] [--policies ...]
        [overrides for every job...]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.core import names

POOL = 2
JOB = [
    "+experiment=debug",
    "probe=off",
    "cluster.num_workers=1",
    "train.grad_accum=2",  # 16 sequences (1,024 tokens) per optimizer step at 1 or 2 ranks
    "train.eval_interval=16",  # 32 checks in 512 steps
    "train.report_interval=4",
]
OURS = ["group=sweep", "cluster.max_workers=2", "cluster.resize_cooldown_s=30"]
POLICIES = {
    "static": ["stop.enforce=false"],
    "asha": ["stop.enforce=false"],
    # One group: a job whose forecast Ψ at budget is below the best Ψ another reached is stopped; each job's own
    # rule is the default budget-aware one (it stops a job when the rest of its budget would buy < δ of its gain).
    "ours": [*OURS, "stop.eta_rel=null"],  # the debug experiment's relative η off: the default δ
}


def run_policy(policy: str, work: Path, jobs: list[list[str]]) -> dict[str, Any]:
    """Submit every job to a fresh controller on a 2-slot pool, drive ASHA if asked, wait for all to end."""
    import ray

    from orchestrator.config.compose import compose_job
    from orchestrator.controller.actor import controller_handle
    from orchestrator.submission import plan_of, prepare

    runs = work / policy / "cpr_runs"
    runs.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=POOL, address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        controller = controller_handle(f"cpr-multijob-{policy}", detached=False)
        subs = []
        for i, overrides in enumerate(jobs):
            sub = prepare(
                plan_of(compose_job([*overrides, *POLICIES[policy], f"name={policy}-{i}", f"runs_dir={runs}"]))
            ).submission
            sub.send(controller)
            subs.append(sub)
        interval = compose_job(jobs[0]).train.eval_interval
        asha = asha_driver(checks_at_budget(jobs[0])) if policy == "asha" else None
        if asha is not None:
            for sub in subs:
                asha.on_trial_add(None, SimpleNamespace(trial_id=sub.job_id))
        seen: dict[str, int] = {}
        result: dict[str, Any] = {}
        t0 = time.time()
        while len(result) < len(subs):
            for sub in subs:
                if sub.job_id in result:
                    continue
                if asha is not None:
                    view = ray.get(controller.view.remote(sub.job_id))
                    checks, psi = view["eval_step"] // interval, view["psi"]
                    if psi is not None and checks > seen.get(sub.job_id, 0) and not view["halted"]:
                        seen[sub.job_id] = checks
                        said = asha.on_trial_result(
                            None, SimpleNamespace(trial_id=sub.job_id), {"training_iteration": checks, "psi": psi}
                        )
                        if said == "STOP" and checks < checks_at_budget(jobs[0]):
                            ray.get(controller.request_stop.remote(sub.job_id))
                done = ray.get(controller.wait.remote(sub.job_id, 0.2))
                if done is not None:
                    result[sub.job_id] = done
        wall = time.time() - t0
    finally:
        ray.shutdown()
    return {"runs": runs, "jobs": [s.job_id for s in subs], "result": result, "wall_s": wall}


def checks_at_budget(overrides: list[str]) -> int:
    from orchestrator.config.compose import compose_job

    job = compose_job(overrides)
    return job.total_steps // job.train.eval_interval


def asha_driver(max_t: int) -> Any:
    """Ray Tune's ASHA as Tune builds it for `tune.run(scheduler=AsyncHyperBandScheduler(...))`: one bracket,
    reduction factor 4; `training_iteration` is the job's evaluation check, `psi` its −validation loss."""
    import numpy as np
    from ray.tune.schedulers import AsyncHyperBandScheduler

    np.random.seed(0)  # ASHA draws each trial's bracket at random (one bracket here: no choice, but keep it fixed)
    return AsyncHyperBandScheduler(time_attr="training_iteration", metric="psi", mode="max", max_t=max_t)


def measure(out: dict[str, Any]) -> dict[str, Any]:
    """Per job: its Ψ and cumulative energy at every check (MLflow, with timestamps); its slots over time
    (the scheduler's log)."""
    from mlflow.tracking import MlflowClient

    runs = out["runs"]
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    log = [json.loads(x) for x in (runs / "scheduler" / "decisions.jsonl").read_text().splitlines()]
    jobs = {}
    for job_id in out["jobs"]:
        done = out["result"][job_id]
        run_id = done["run_id"]
        loss = {m.step: (m.timestamp / 1000, -m.value) for m in client.get_metric_history(run_id, names.VAL_LOSS)}
        by_step = {m.step: m.value for m in client.get_metric_history(run_id, names.gamma("energy_kwh"))}
        energy = sorted((t, by_step[step]) for step, (t, _) in loss.items() if step in by_step)
        slots = [(d["t_s"], d["to_slots"]) for d in log if d["job_id"] == job_id]
        s = done["summary"] or {}
        jobs[job_id] = {
            "psi": sorted(loss.values()),  # (t, Ψ) per check
            "checks": [  # (step, t, Ψ, cumulative kWh): what benchmarks/cluster_replay replays
                (step, t, psi, by_step[step]) for step, (t, psi) in sorted(loss.items()) if step in by_step
            ],
            "energy": energy,
            "slots": slots,
            "final_psi": s.get("psi"),
            "final_energy": (s.get("gamma") or {}).get("energy_kwh", 0.0),
            "reason": s.get("reason"),
            "step": s.get("step"),
            "restarts": s.get("restarts") or [],
            "state": done["state"],
            "error": done["error"],
        }
    return jobs


def slot_hours(slots: list[tuple[float, int]], until: float) -> float:
    total, held, since = 0.0, 0, None
    for t, n in slots:
        if since is not None:
            total += held * (min(t, until) - since) if t > since else 0.0
        if t >= until:
            return total / 3600
        held, since = n, t
    if since is not None and held and until > since:
        total += held * (until - since)
    return total / 3600


def energy_at(series: list[tuple[float, float]], final: float, until: float) -> float:
    before = [v for t, v in series if t <= until]
    if series and until >= series[-1][0]:
        return final
    return before[-1] if before else 0.0


def spent_to_reach(jobs: dict[str, Any], target: float) -> tuple[float | None, float, float]:
    """(the time one of the policy's jobs first reached Ψ ≥ target, or None; energy kWh and slot-hours of all its
    jobs by then — at the end when never reached)."""
    hits = [t for j in jobs.values() for t, psi in j["psi"] if psi >= target]
    end = max(t for j in jobs.values() for t, _ in j["slots"])
    when = min(hits) if hits else None
    until = when if when is not None else end
    energy = sum(energy_at(j["energy"], j["final_energy"], until) for j in jobs.values())
    hours = sum(slot_hours(j["slots"], until) for j in jobs.values())
    return when, energy, hours


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-3, 1.5e-3, 5e-4, 1.5e-4])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--max-tokens", type=int, default=524288, help="each job's budget (default: 512 steps)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the other policies already measured in WORKDIR/multijob.json"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cpr-multijob-"))
    jobs = [[*JOB, f"train.max_tokens={args.max_tokens}", f"train.lr={lr:g}", *args.overrides] for lr in args.lrs]
    saved = work / "multijob.json"
    measured = json.loads(saved.read_text()) if args.keep and saved.exists() else {}
    for policy in args.policies:
        print(f"{policy}: {len(jobs)} jobs on {POOL} slots in {work / policy} ...", flush=True)
        out = run_policy(policy, work, jobs)
        measured[policy] = {"wall_s": out["wall_s"], "jobs": measure(out)}
        for job_id, j in measured[policy]["jobs"].items():
            moves = ", ".join(f"{r['from_workers']}→{r['to_workers']} at step {r['step']}" for r in j["restarts"])
            print(
                f"    {job_id}: {j['state']}, {j['reason']} at step {j['step']}, Ψ {j['final_psi']:.4f}, "
                f"{j['final_energy'] * 1000:.3f} Wh" + (f", resized {moves}" if moves else "")
            )
        print(f"    {out['wall_s']:.0f} s wall", flush=True)
    (work / "multijob.json").write_text(json.dumps(measured, indent=1))
    report(measured)
    return 0


def report(measured: dict[str, Any]) -> None:
    """Best Ψ per policy; the whole sweep's Γ (what it cost to find and train the best job) against static's; and
    the Γ spent by the time one job first reached Ψ*."""
    best = {
        p: max(j["final_psi"] for j in m["jobs"].values() if j["final_psi"] is not None) for p, m in measured.items()
    }
    target = max(best.values())
    print(f"\nΨ* (best final Ψ of any policy) = {target:.4f}  (validation loss {-target:.4f})")
    totals = {
        p: (
            sum(j["final_energy"] for j in m["jobs"].values()),
            sum(slot_hours(j["slots"], math.inf) for j in m["jobs"].values()),
        )
        for p, m in measured.items()
    }
    first = {p: spent_to_reach(m["jobs"], target) for p, m in measured.items()}
    base = totals.get("static")
    head = ("policy", "best Ψ", "at Ψ*", "energy Wh", "slot-h", "× static E / h", "Wh at Ψ*", "wall s")
    print("{:16} {:>8} {:>6} {:>10} {:>8} {:>15} {:>9} {:>7}".format(*head))
    for p, (energy, hours) in totals.items():
        ratio = f"{energy / base[0]:.2f} / {hours / base[1]:.2f}" if base else ""
        when, e_first, _ = first[p]
        print(
            f"{p:16} {best[p]:8.4f} {'yes' if best[p] >= target else 'no':>6} {energy * 1000:10.3f} {hours:8.4f} "
            f"{ratio:>15} {e_first * 1000 if when is not None else float('nan'):9.3f} {measured[p]['wall_s']:7.0f}"
        )
    a = totals.get("asha")
    for p, o in totals.items():
        if p.startswith("ours") and a is not None:
            print(f"{p} / ASHA: energy {o[0] / a[0]:.2f}, slot-hours {o[1] / a[1]:.2f}")
    print("goal: ours ≤ 0.5× static's Γ and ≤ ASHA's, at equal or better best Ψ")


if __name__ == "__main__":
    raise SystemExit(main())
