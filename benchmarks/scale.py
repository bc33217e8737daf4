"""benchmarks/scale: one controller decision round at cluster scale, and the controller's memory over many rounds.

The controller is one actor for the whole cluster. This drives its pure code (no Ray, no MLflow) with simulated
reports from a cluster of `--jobs` × `--ranks-per-job` ranks (default 64 × 16 = 1,024), each model with
`--submodules` probed submodules (default 200). One decision round is what the controller does per report
interval, for every job:
- telemetry: one sample per rank per metric (energy counters of its CPU, RAM and GPU), parsed from the dicts that
  cross Ray (`TelemetrySample.from_dict`) and fed to the job's tracker, one call per rank as the workers send them;
- one TrainReport (`on_train`, `resource_metrics`) and one EvalReport (`on_eval`: Γ totals, the default stop rule's
  decision, the curve row; for grouped jobs the optimistic Ψ at budget the actor computes from the curve);
- gradient statistics of one probe report of `--probe-ranks` ranks (default: all of them) × `--probe-batches`
  batches × the submodules, with a magnitude histogram per submodule: `ProbeReport.from_dict`, `probe_metrics`,
  `report_groups`, as the actor runs them;
- one scheduling tick over every job (`scheduling.tick`, `PolicyConfig()`: grow, shrink and preempt on), with
  `--queued` higher-priority jobs waiting and `--free-slots` idle slots. The tick's decisions are computed, not
  applied, so every round sees the same cluster.
Round inputs are generated between the timed parts. Printed: median and p99 round time (and per part) against the
100 ms goal; the controller state's size (all trackers, measured by walking their objects) and what the actor
persists per check (`tracker.json` of every job) at 10 %, 25 %, 50 %, 75 % and 100 % of the rounds; and, apart
from the round, a probe burst (every job's own probe landing in the same round).

    .venv/bin/python -m benchmarks.scale [--jobs 64] [--ranks-per-job 16] [--submodules 200] [--rounds 1200]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.blueprints.publish import probe_metrics, report_groups
from orchestrator.core.flops import FlopsModel
from orchestrator.core.gradmass import HistogramSpec
from orchestrator.core.job_tracker import CURVE_MAX, DECISIONS_KEPT, JobTracker
from orchestrator.core.ledger import TAIL_POINTS, Metric, TelemetrySample
from orchestrator.core.numbers import json_safe
from orchestrator.core.reports import EvalReport, ProbeReport, TrainReport
from orchestrator.core.resources import ResourceKind
from orchestrator.core.scheduling import JobState, JobStatus, PolicyConfig, tick
from orchestrator.core.stop_rule import HISTORY_MAX, StopRuleConfig

GOAL_MS = 100.0
REPORT_S = 10.0
"""Simulated seconds between two rounds (one report interval)."""
STEPS_PER_ROUND = 5
TOKENS_PER_STEP = 65_536
TOTAL_STEPS = 100_000
"""Each job's token budget in steps: far beyond the rounds run, so no job reaches it."""
WATTS = {"cpu": 60.0, "ram": 10.0, "gpu": 300.0}
PARTS = ("telemetry", "train", "eval", "probe", "tick")
"""The round's parts, as the controller runs them."""
SUBMODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "norm")


@dataclass
class SimJob:
    """One simulated job: its tracker (the controller's state) and what its ranks would report."""

    job_id: str
    tracker: JobTracker
    ranks: int
    slope: float
    """Its validation loss falls by this much per round."""
    priority: int
    group: str
    sources: list[list[tuple[str, str, float]]] = field(default_factory=list)
    """Per rank, per meter: (source, sample-id prefix, watts)."""
    counters: list[list[float]] = field(default_factory=list)
    """Per rank, per meter: the energy counter's reading, J."""
    psi_at_budget: float | None = None


def make_job(i: int, ranks: int, rng: random.Random) -> SimJob:
    slope = rng.uniform(5e-4, 1.5e-3)
    # The default budget-aware η: every check bounds what the rest of the budget would buy (slope and power-law fit,
    # the rule's costliest path). Ψ rises steadily towards a far budget, so no job stops, and merits differ.
    config = StopRuleConfig(resource=ResourceKind.ENERGY_KWH)
    job_id = f"job{i:03d}"
    tracker = JobTracker(
        job_id=job_id,
        rule_config=config,
        enforce=True,
        max_tokens=TOTAL_STEPS * TOKENS_PER_STEP,
        flops_model=FlopsModel(n_matmul_params=125_000_000, n_layers=12, d_model=768, seq_len=1024),
        carbon_intensity_kg_per_kwh=0.4,
        start_t=0.0,
    )
    sources = [
        [(f"{job_id}/rank{r}/{k}", f"{job_id}/rank{r}/{k}/energy_j/", w) for k, w in WATTS.items()]
        for r in range(ranks)
    ]
    counters = [[rng.uniform(0, 1e6) for _ in WATTS] for _ in range(ranks)]  # NVML counts from driver load
    return SimJob(job_id, tracker, ranks, slope, i % 5, f"sweep{i // 8}", sources, counters)


def telemetry_batches(job: SimJob, k: int, rng: random.Random) -> list[list[dict[str, Any]]]:
    """Round k's telemetry of one job: per rank, one energy-counter sample of each of CPU, RAM and GPU."""
    out = []
    metric, uniform = Metric.ENERGY_J.value, rng.uniform
    for meters, counter in zip(job.sources, job.counters, strict=True):
        t = k * REPORT_S + uniform(0.0, 0.5)
        batch = []
        for m, (source, prefix, watts) in enumerate(meters):
            counter[m] += watts * REPORT_S * uniform(0.9, 1.1)
            batch.append(
                {
                    "sample_id": f"{prefix}{k}",
                    "source": source,
                    "metric": metric,
                    "t_s": t,
                    "value": counter[m],
                    "counter_wrap": None,
                }
            )
        out.append(batch)
    return out


def probe_payload(rng: np.random.Generator, ranks: int, batches: int, n_groups: int, step: int) -> dict[str, Any]:
    """A ProbeReport as it crosses Ray: per submodule ranks × batches gradient norms and a merged histogram."""
    spec = HistogramSpec()  # the default probe.histogram: 1e-12..1e4, 8 bins per decade (130 bins)
    edges = spec.edges()
    centers = np.concatenate(([spec.lo / 2], np.sqrt(edges[:-1] * edges[1:]), [spec.hi]))
    log_c = np.log10(centers)
    ids = [f"model.layers.{i // len(SUBMODULES)}.{SUBMODULES[i % len(SUBMODULES)]}" for i in range(n_groups)]
    n_params = rng.integers(500_000, 5_000_000, size=n_groups)
    norms = rng.lognormal(mean=-2.0, sigma=0.5, size=(n_groups, ranks * batches))
    histograms, groups = {}, {}
    for i, gid in enumerate(ids):
        # |g| log-normal around 1e-5..1e-3 (what a probe of a pretraining model sees); no underflow or overflow.
        pdf = np.exp(-0.5 * ((log_c - rng.uniform(-5, -3)) / 1.2) ** 2)
        pdf[0] = pdf[-1] = 0.0
        counts = np.floor(n_params[i] * ranks * batches * pdf / pdf.sum()).astype(np.int64)
        histograms[gid] = {
            "spec": spec.to_dict(),
            "counts": counts.tolist(),
            "sums": (counts * centers).tolist(),
            "sumsq": float((counts * centers**2).sum()),
        }
        groups[gid] = {"prefixes": [gid], "n_params": int(n_params[i])}
    report = ProbeReport(
        step=step,
        tokens=step * TOKENS_PER_STEP,
        domain="general",
        label=None,
        ids=ids,
        groups=groups,
        batch_norms={gid: norms[i].tolist() for i, gid in enumerate(ids)},
        histograms=histograms,
    )
    return report.to_dict()


def controller_probe(payload: dict[str, Any]) -> int:
    """What the actor does with a periodic probe: parse, metrics per submodule (and the model), its groups."""
    report = ProbeReport.from_dict(payload)
    metrics = probe_metrics(report, 0.1)  # conf/probe/default.yaml top_k
    return len(metrics) + len(report_groups(report))


def job_state(job: SimJob) -> JobState:
    """The scheduler's view of a job, read from its tracker as the actor's `_job_state` does."""
    t = job.tracker
    last = t.decisions[-1] if t.decisions else {}
    tokens = t.last_train.tokens if t.last_train else 0
    return JobState(
        job_id=job.job_id,
        priority=job.priority,
        submitted_t=0.0,
        status=JobStatus.RUNNING,
        slots=job.ranks,
        requested_slots=job.ranks,
        min_slots=max(1, job.ranks // 2),
        max_slots=2 * job.ranks,
        halted=t.halted,
        stop_reason=t.stop.reason.value if t.stop is not None and t.stop.reason else "",
        group=job.group,
        psi=t.last_eval.psi if t.last_eval else None,
        psi_at_budget=job.psi_at_budget,
        ratio=last.get("ratio"),
        eta=last.get("eta"),
        remaining_fraction=max(0.0, 1.0 - tokens / t.max_tokens),
    )


def deep_size(roots: list[Any]) -> int:
    """Bytes of every object reachable from `roots`, each counted once (classes, modules and functions excluded)."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def state_figures(jobs: list[SimJob]) -> dict[str, float]:
    """Size of the controller's per-job state, and what the actor persists per check (tracker.json) for all jobs."""
    t0 = time.perf_counter()
    persisted = sum(len(json.dumps(json_safe(j.tracker.to_dict()), allow_nan=False)) for j in jobs)
    persist_ms = (time.perf_counter() - t0) * 1e3
    trackers = [j.tracker for j in jobs]
    return {
        "state_mb": deep_size(trackers) / 2**20,
        "ledger_mb": deep_size([t.ledger for t in trackers]) / 2**20,
        "persist_mb": persisted / 2**20,
        "persist_ms": persist_ms,
        "points": sum(len(s.points) for t in trackers for s in t.ledger._series.values()),
        "curve": max(len(t.curve) for t in trackers),
        "decisions": max(len(t.decisions) for t in trackers),
        "history": max(len(t.rule.state.history_gamma) for t in trackers),
    }


def rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return math.nan


def run_round(
    k: int, jobs: list[SimJob], queued: list[JobState], pool: int, probe: dict[str, Any], rng: random.Random
) -> dict[str, float]:
    """One decision round; returns seconds per part (input generation is not timed)."""
    tel = [telemetry_batches(j, k, rng) for j in jobs]
    step = k * STEPS_PER_ROUND
    t_s = k * REPORT_S + 0.6
    train = [
        TrainReport(
            step=step, tokens=step * TOKENS_PER_STEP, loss=6.1 - j.slope * k, lr=3e-4, tokens_per_s=1e5, t_s=t_s
        ).to_dict()
        for j in jobs
    ]
    evals = [
        EvalReport(
            step=step, tokens=step * TOKENS_PER_STEP, val_loss=6.0 - j.slope * k + rng.gauss(0, 1e-4), t_s=t_s
        ).to_dict()
        for j in jobs
    ]
    payload = {**probe, "step": step, "tokens": step * TOKENS_PER_STEP}
    out: dict[str, float] = {}

    c = time.perf_counter()
    for j, batches in zip(jobs, tel, strict=True):
        for batch in batches:  # one actor call per rank and interval
            j.tracker.on_telemetry([TelemetrySample.from_dict(s) for s in batch])
    out["telemetry"] = time.perf_counter() - c

    c = time.perf_counter()
    for j, r in zip(jobs, train, strict=True):
        report = TrainReport.from_dict(r)
        j.tracker.on_train(report)
        j.tracker.resource_metrics(report.t_s)
    out["train"] = time.perf_counter() - c

    c = time.perf_counter()
    for j, r in zip(jobs, evals, strict=True):
        outcome = j.tracker.on_eval(EvalReport.from_dict(r))
        if outcome.halt:
            raise RuntimeError(f"{j.job_id} stopped at round {k}: the simulation keeps every job running")
        j.psi_at_budget = j.tracker.psi_bound_at(TOTAL_STEPS)  # as the actor does for a grouped job
    out["eval"] = time.perf_counter() - c

    c = time.perf_counter()
    controller_probe(payload)
    out["probe"] = time.perf_counter() - c

    c = time.perf_counter()
    tick(pool, [*(job_state(j) for j in jobs), *queued], now=t_s, config=PolicyConfig())
    out["tick"] = time.perf_counter() - c
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=64)
    ap.add_argument("--ranks-per-job", type=int, default=16)
    ap.add_argument("--submodules", type=int, default=200)
    ap.add_argument("--probe-ranks", type=int, default=None, help="ranks in the round's probe report (default: all)")
    ap.add_argument("--probe-batches", type=int, default=4, help="probe.batches: validation batches per rank")
    # > CURVE_MAX checks, so the run includes the curve's thinning; ~2 minutes on 2 slow cores.
    ap.add_argument("--rounds", type=int, default=1200)
    ap.add_argument("--queued", type=int, default=4, help="higher-priority jobs waiting for slots")
    ap.add_argument("--free-slots", type=int, default=32)
    ap.add_argument("--burst-rounds", type=int, default=3, help="rounds of the every-job probe burst (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    rng = random.Random(args.seed)
    nrng = np.random.default_rng(args.seed)
    ranks = args.jobs * args.ranks_per_job
    probe_ranks = args.probe_ranks or ranks
    # A few distinct probe payloads, built once (building 1,024 × 200 × 4 norms each round would dominate the run),
    # and the jobs' own smaller ones for the burst. They are the benchmark's inputs, not controller state (a real
    # report lives for one call): frozen out of the collector's reach before any tracker exists, so a full
    # collection does not walk their millions of list entries, while the trackers are collected as in the actor.
    probes = [probe_payload(nrng, probe_ranks, args.probe_batches, args.submodules, 0) for _ in range(4)]
    own = [probe_payload(nrng, args.ranks_per_job, args.probe_batches, args.submodules, 0) for _ in range(4)]
    gc.collect()
    gc.freeze()
    jobs = [make_job(i, args.ranks_per_job, rng) for i in range(args.jobs)]
    queued = [
        JobState(
            job_id=f"queued{i}",
            priority=5,
            submitted_t=float(i),
            status=JobStatus.QUEUED,
            slots=0,
            requested_slots=args.ranks_per_job,
            min_slots=max(1, args.ranks_per_job // 2),
            max_slots=2 * args.ranks_per_job,
        )
        for i in range(args.queued)
    ]
    pool = ranks + args.free_slots
    print(
        f"{args.jobs} jobs × {args.ranks_per_job} ranks = {ranks} ranks, {3 * ranks} telemetry samples per round; "
        f"probe report: {probe_ranks} ranks × {args.probe_batches} batches × {args.submodules} submodules "
        f"({probe_ranks * args.probe_batches * args.submodules:,} norms, {args.submodules} histograms of "
        f"{HistogramSpec().n_bins} bins); tick: {args.jobs} running + {args.queued} queued on {pool} slots",
        flush=True,
    )

    marks = sorted({max(1, round(args.rounds * f)) for f in (0.1, 0.25, 0.5, 0.75, 1.0)})
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    rounds: list[float] = []
    snapshots: list[tuple[int, dict[str, float], float]] = []
    for k in range(1, args.rounds + 1):
        parts = run_round(k, jobs, queued, pool, probes[k % len(probes)], rng)
        for p, s in parts.items():
            times[p].append(s * 1e3)
        rounds.append(sum(parts[p] for p in PARTS) * 1e3)
        if k in marks:
            snapshots.append((k, state_figures(jobs), rss_mb()))
            f = snapshots[-1][1]
            print(
                f"  round {k:>6}: median round {statistics.median(rounds):7.2f} ms, state {f['state_mb']:7.2f} MiB",
                flush=True,
            )

    burst: list[float] = []
    for b in range(args.burst_rounds):
        c = time.perf_counter()
        for i in range(args.jobs):
            controller_probe(own[(b + i) % len(own)])
        burst.append((time.perf_counter() - c) * 1e3)

    print()
    med, p99 = statistics.median(rounds), pct(rounds, 99)
    print(f"{'part':<12}{'median ms':>11}{'p99 ms':>10}{'max ms':>10}")
    for p in PARTS:
        print(f"{p:<12}{statistics.median(times[p]):>11.2f}{pct(times[p], 99):>10.2f}{max(times[p]):>10.2f}")
    print(f"{'round':<12}{med:>11.2f}{p99:>10.2f}{max(rounds):>10.2f}")
    verdict = "met" if p99 < GOAL_MS else "NOT met"
    print(f"goal: a decision round < {GOAL_MS:.0f} ms at p99 — {verdict} (median {med:.1f} ms, p99 {p99:.1f} ms)")
    if burst:
        print(
            f"probe burst (not in the round): every job's own probe ({args.ranks_per_job} ranks) in one round: "
            f"median {statistics.median(burst):.0f} ms for {args.jobs} reports"
        )
    print()
    print(
        f"{'after round':>11}{'state MiB':>11}{'ledger MiB':>12}{'RSS MiB':>9}{'points':>9}{'curve':>7}"
        f"{'decisions':>11}{'history':>9}{'persist MiB':>13}{'persist ms':>12}"
    )
    for k, f, rss in snapshots:
        print(
            f"{k:>11}{f['state_mb']:>11.2f}{f['ledger_mb']:>12.2f}{rss:>9.0f}{f['points']:>9}{f['curve']:>7}"
            f"{f['decisions']:>11}"
            f"{f['history']:>9}{f['persist_mb']:>13.2f}{f['persist_ms']:>12.0f}"
        )
    print(
        f"bounds per job: {TAIL_POINTS} points per ledger series ({3 * args.ranks_per_job + 1} series here), "
        f"{CURVE_MAX} curve rows, {DECISIONS_KEPT} + 1 decisions, {HISTORY_MAX} rule-history points"
    )
    print(
        "\nstate: every tracker's objects (ledger tails, rule state, decisions, curve); points: ledger points kept, "
        "all series;\ncurve/decisions/history: the largest of any job; persist: tracker.json of every job, "
        "what the actor writes after each job's check\n(json_safe + json.dumps, no disk), not part of the round."
        f"\ntotal run {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
