"""benchmarks/savings: the default job to its full budget and under the rule (same seed), then the anchors.

1. Run the default job with the rule in shadow mode (`stop.enforce=false`): it trains to its token budget and
   records its curve (and where the rule would have stopped).
2. Run the same job (same seed) with the rule enforced, once per Γ kind in --resources: it stops live.
3. Replay the full run's curve with the same rule: the live stop must match it. Ψ is deterministic across runs
   (same seed, same data order); tokens are too, but measured energy is not: two runs on a shared machine draw
   different energy per step, so with Γ = energy the two stops can differ by the measurement's noise.
4. Replay the full curve under the anchors users pick today — Ray Tune's TrialPlateauStopper and HF's
   EarlyStoppingCallback, the real classes (defaults, and each one's best setting at Ψ lost ≤ ours) — and the
   hindsight oracle at τ = 1 %, and print Γ saved, the share of the gain and of the final loss given up.
5. The same curve under other δ (stop.max_loss).

    .venv/bin/python -m benchmarks.savings [--workdir DIR] [--resources energy_kwh tokens] [--reuse-full] [overrides...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks._runs import submit
from benchmarks.compare_stoppers import compare_stoppers, format_table, ours
from orchestrator.config.compose import compose_job
from orchestrator.replay import read_curve, replay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--resources",
        nargs="+",
        default=["energy_kwh", "tokens"],
        help="one live run per Γ kind the rule divides by (default: energy_kwh tokens)",
    )
    parser.add_argument("--reuse-full", action="store_true", help="take the full run from WORKDIR/full if it is there")
    parser.add_argument(
        "--keep-curve", type=Path, help="copy the full run's curve.csv here (benchmarks.stopping reads it)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (default: the default job)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cpr-savings-"))

    print(f"full budget (shadow rule) in {work}/full ...", flush=True)
    if args.reuse_full and (work / "full" / "cpr_runs" / "jobs").is_dir():
        job = next((work / "full" / "cpr_runs" / "jobs").iterdir())
        curve_path = job / "curve.csv"
        print(f"      reusing {job.name}")
    else:
        full = submit(work / "full", *args.overrides, "stop.enforce=false")
        curve_path = full["curve"]
        print(f"      {full['summary']['step']} steps in {full['wall_s']:.0f} s")
    curve = read_curve(curve_path)
    for resource in args.resources:
        overrides = [*args.overrides, f"stop.resource={resource}"]
        rule = compose_job(overrides).stop.rule_config()
        print(f"\nunder the rule (Γ = {resource}) in {work}/live-{resource} ...", flush=True)
        live = submit(work / f"live-{resource}", *overrides)
        s = live["summary"]
        live_step = s["decision"]["step"]
        again = replay(curve, rule)
        same_step = dict(zip(curve.steps, curve.psi, strict=True)).get(live_step, float("nan"))
        print(
            f"      live: {s['reason']} at step {live_step} in {live['wall_s']:.0f} s; replay of the full run's "
            f"curve: step {again.stop_step}; match: {live_step == again.stop_step}"
        )
        print(f"      Ψ at the live stop {s['psi']:.4f}; the full run's Ψ at that step {same_step:.4f}")
        rows = compare_stoppers(curve, rule, tau=0.01)
        print(f"\nOn the full run's curve ({len(curve)} checks), Γ = {resource}:")
        print(format_table(rows))
        mine = next(r for r in rows if r.name.startswith("cpr"))
        met = mine.gamma_saved_fraction >= 0.3 and mine.loss_increase_fraction <= 0.01
        anchors = [r for r in rows if "best at" in r.name]
        ahead = all(mine.gamma_saved_fraction >= r.gamma_saved_fraction for r in anchors)
        print(
            f"goal: Γ saved ≥ 30% at ≤ 1% higher final validation loss, ahead of both anchors at equal loss — ours: "
            f"{mine.gamma_saved_fraction:.1%} saved, {mine.loss_increase_fraction:+.2%} loss: "
            f"{'met' if met else 'NOT met'}; ahead of the anchors' best at Ψ lost ≤ ours: {'yes' if ahead else 'no'}"
            + ("" if len(anchors) == 2 else f" (only {len(anchors)} anchor(s) have a setting at Ψ lost ≤ ours)")
        )
    print("\nδ (stop.max_loss) against what it saves and costs on the full run's curve:")
    for resource in args.resources:
        for delta in (0.005, 0.01, 0.02, 0.05):
            job = compose_job([*args.overrides, f"stop.resource={resource}", f"stop.max_loss={delta}"])
            rule = job.stop.rule_config()
            o = ours(curve, rule)
            step = o.stop_step if o.stopped else "none"
            print(
                f"  Γ={resource:10s} δ={delta:<6g} stop step {step!s:>5}  Γ saved {o.gamma_saved_fraction:6.1%}  "
                f"gain lost {o.gain_lost_fraction:6.2%}  loss {o.loss_increase_fraction:+.2%}"
            )
    if args.keep_curve:
        shutil.copyfile(curve_path, args.keep_curve)
        print(f"\nthe full run's curve: {args.keep_curve}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
