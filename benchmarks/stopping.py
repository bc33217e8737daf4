"""benchmarks/stopping: the stop rule at its default over real pretraining curves, against the hindsight oracle and
the stoppers users pick today (Ray Tune's TrialPlateauStopper, HF's EarlyStoppingCallback).

The corpus: the public curves of benchmarks/data/curves/ (manifest.json names each one's source, licence and
schedule; they are not redistributed here: extract.py builds them from clones of their repositories) and runs
recorded here (the shipped example curve, the multijob sweep, the
default job's full run). Γ = tokens on every curve (each has a tokens column), the budget is the curve's end. For
each curve: the rule's stop, Γ saved, the share of the run's gain it gave up (gain = Ψ_final − Ψ at the first check
after step 0), the oracle's saving at τ, the ratio of the two savings, and the anchors at their defaults and at
their best setting with Ψ lost ≤ ours. Goal, with one default on every curve: gain lost ≤ τ, ≥ 80 % of the
oracle's saving, no stop in the first 12 % of the run.

    .venv/bin/python -m benchmarks.stopping [--tau 0.02] [--max-loss D] [--csv OUT] [--detail NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.compare_stoppers import (
    PATIENCE_DEFAULTS,
    PATIENCE_GRID,
    PLATEAU_DEFAULTS,
    PLATEAU_GRID,
    StopperOutcome,
    best_at_equal_loss,
    oracle,
    ours,
    patience,
    plateau,
)
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.replay import Curve, read_curve

CURVES = Path(__file__).parent / "data" / "curves"
MULTIJOB = Path(__file__).parent / "data" / "multijob_curves.json"
EXAMPLE = Path(__file__).parent.parent / "orchestrator" / "examples" / "tiny_llama_stdlib.csv"
EARLY = 0.12
"""No stop before this share of the run's Γ (the steep start)."""
SAVING_SHARE = 0.8
"""The rule should save at least this share of what the oracle saves."""


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    ours: StopperOutcome
    oracle: StopperOutcome
    anchors: dict[str, StopperOutcome]

    @property
    def saving_ratio(self) -> float:
        o = self.oracle.gamma_saved_fraction
        return self.ours.gamma_saved_fraction / o if o > 0 else math.nan

    def misses(self, tau: float) -> list[str]:
        why = []
        if self.ours.gain_lost_fraction > tau:
            why.append(f"lost {self.ours.gain_lost_fraction:.1%} > τ")
        if self.ours.gamma_saved_fraction < SAVING_SHARE * self.oracle.gamma_saved_fraction:
            why.append(f"saved {self.saving_ratio:.2f}× the oracle's")
        if self.ours.stopped and self.ours.stop_fraction < EARLY:
            why.append(f"stopped at {self.ours.stop_fraction:.0%} of the run")
        return why


def corpus(tmp: Path) -> list[tuple[str, str, Curve]]:
    """(name, kind of curve, curve) for the public curves and the runs recorded here."""
    out: list[tuple[str, str, Curve]] = []
    missing = []
    for entry in json.loads((CURVES / "manifest.json").read_text()):
        path = CURVES / entry["file"]
        if path.is_file():
            out.append((entry["name"], "public", read_curve(path)))
        else:
            missing.append(entry["name"])
    if missing:
        print(
            f"{len(missing)} public curves are not built yet ({', '.join(missing[:3])}, …): clone their repositories "
            "and run `python benchmarks/data/curves/extract.py --mirror DIR` (benchmarks/data/curves/README.md)\n"
        )
    out.append(("cpr_example_tiny_llama_cosine", "ours", read_curve(EXAMPLE)))
    for own in sorted(CURVES.glob("cpr_*.csv")):
        out.append((own.stem, "ours", read_curve(own)))
    data = json.loads(MULTIJOB.read_text())
    for job in data["jobs"]:
        # [step, unix time, Ψ, kWh]; 1,024 tokens per step (the file's `source` line).
        path = tmp / f"{job['job_id']}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "psi", "tokens", "energy_kwh"])
            for step, _, psi, kwh in job["checks"]:
                w.writerow([step, psi, step * 1024, kwh])
        out.append((f"cpr_multijob_{job['job_id']}", "ours", read_curve(path)))
    return out


def evaluate(name: str, kind: str, curve: Curve, rule: StopRuleConfig, tau: float) -> Row:
    res = ResourceKind.TOKENS
    mine = ours(curve, rule)
    anchors = {
        "plateau": plateau(curve, res, **PLATEAU_DEFAULTS),
        "plateau_best": best_at_equal_loss([plateau(curve, res, **c) for c in PLATEAU_GRID], mine.psi_lost),
        "patience": patience(curve, res, **PATIENCE_DEFAULTS),
        "patience_best": best_at_equal_loss([patience(curve, res, **c) for c in PATIENCE_GRID], mine.psi_lost),
    }
    return Row(name, kind, mine, oracle(curve, res, tau), anchors)  # type: ignore[arg-type]


def _cell(o: StopperOutcome | None, oracle: StopperOutcome | None = None) -> str:
    """Γ saved / share of the gain lost (and, against the oracle, the ratio of the savings)."""
    if o is None:
        return "–"
    text = f"{o.gamma_saved_fraction:5.1%} / {o.gain_lost_fraction:5.2%}"
    if oracle is not None and oracle.gamma_saved_fraction > 0:
        text += f" ({o.gamma_saved_fraction / oracle.gamma_saved_fraction:.2f}×)"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tau", type=float, default=0.02, help="the oracle's tolerance and the goal (default 0.02)")
    parser.add_argument("--max-loss", type=float, default=None, help="δ of the rule (default: the core's default)")
    parser.add_argument("--csv", type=Path, help="also write the per-curve table here")
    args = parser.parse_args()
    rule = StopRuleConfig(resource=ResourceKind.TOKENS, max_loss=args.max_loss)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [evaluate(n, k, c, rule, args.tau) for n, k, c in corpus(Path(tmp))]

    print(
        f"stop rule: δ = {rule.max_loss:g}, window {rule.window}, patience {rule.patience}; "
        f"Γ = tokens; τ = {args.tau:g}"
    )
    print("cells: Γ saved / share of the run's gain given up (an anchor's saving as a multiple of the oracle's)\n")
    head = (
        "curve",
        "stop at",
        "ours",
        f"oracle τ={args.tau:g}",
        "ours/oracle",
        "plateau dflt",
        "plateau best",
        "patience dflt",
        "patience best",
        "goal",
    )
    table = []
    for r in rows:
        misses = r.misses(args.tau)
        table.append(
            (
                r.name,
                f"{r.ours.stop_fraction:4.0%}" if r.ours.stopped else "end",
                _cell(r.ours),
                _cell(r.oracle),
                "–" if math.isnan(r.saving_ratio) else f"{r.saving_ratio:.2f}",
                _cell(r.anchors["plateau"], r.oracle),
                _cell(r.anchors["plateau_best"], r.oracle),
                _cell(r.anchors["patience"], r.oracle),
                _cell(r.anchors["patience_best"], r.oracle),
                "met" if not misses else "; ".join(misses),
            )
        )
    widths = [max(len(str(t[i])) for t in [head, *table]) for i in range(len(head))]
    for t in [head, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(t, widths, strict=True)))
    met = sum(not r.misses(args.tau) for r in rows)
    lost_ok = sum(r.ours.gain_lost_fraction <= args.tau for r in rows)
    early = sum(r.ours.stopped and r.ours.stop_fraction < EARLY for r in rows)
    print(
        f"\n{met} of {len(rows)} curves meet the whole goal; {lost_ok} of {len(rows)} give up ≤ τ of the gain; "
        f"{early} stop in the first {EARLY:.0%}."
    )
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(head)
            w.writerows(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
