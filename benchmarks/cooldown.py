"""benchmarks/cooldown: the default job to its whole budget, stopped cold, and stopped into a cool-down (same seed).

1. `full`: the rule in shadow mode (`stop.enforce=false`): the job trains to its token budget, the last part of it
   the WSD decay.
2. `cold`: the rule enforced, `stop.on_stop=halt`: the job stops at the rule's STOP, no cool-down.
3. `cooled`: the defaults: the rule's STOP starts a short LR decay (`cooling`), then the job ends.

One table: end reason, decision and end step, final validation loss and its change against (1), Γ (energy, tokens)
and Γ saved against (1), and for (3) the loss at the decision and the Ψ the cool-down gained. Goal: (3) within 1 % of
(1)'s final loss at ≥ 30 % less Γ (tokens and energy), and a lower final loss than (2).

`--replay` trains nothing: it reads the public curves of benchmarks/data/curves/ that have a constant-LR phase and a
decay (manifest.json: `decay_start_step`) and, per curve, compares the run stopped cold at its last check before the
decay with the same run cooled to its end. Where a run of the same script that is still at constant LR past that end
exists (`uncooled_companion`), it also gives what that uncooled run reached at the same token count; every curve also
gets the constant phase's own log-linear trend extrapolated to that token count.

    .venv/bin/python -m benchmarks.cooldown [--workdir DIR] [--reuse full cold cooled] [overrides...]
    .venv/bin/python -m benchmarks.cooldown --replay
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CURVES = Path(__file__).parent / "data" / "curves"
LEGS: dict[str, tuple[str, ...]] = {
    "full": ("stop.enforce=false",),
    "cold": ("stop.on_stop=halt",),
    "cooled": (),
}
"""Each run's own overrides, after the user's."""
LOSS_TOLERANCE = 0.01
"""(3)'s final loss may be at most this much (relative) above (1)'s."""
GAMMA_SAVED = 0.3
"""(3) must use at least this much less Γ than (1), on tokens and on energy."""
GAMMA_KINDS = ("energy_kwh", "tokens")


# --------------------------------------------------------------------------------------------------------------------
# The three runs
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Leg:
    name: str
    reason: str
    decision_step: int | None
    end_step: int
    val_loss: float
    loss_change: float
    """(val_loss − full's) / full's."""
    gamma: dict[str, float]
    gamma_saved: dict[str, float]
    """1 − Γ_run / Γ_full, per kind."""
    decision_loss: float | None = None
    psi_gained: float | None = None
    cooldown_steps: int | None = None


def _num(x: Any) -> float:
    return float(x) if x is not None else math.nan


def legs_from_summaries(summaries: Mapping[str, Mapping[str, Any]]) -> list[Leg]:
    """One row per run, in the order full, cold, cooled (those present; `full` is required), from each job's
    summary.json."""
    full = summaries["full"]
    full_loss = _num(full.get("val_loss"))
    full_gamma = {k: _num((full.get("gamma") or {}).get(k)) for k in GAMMA_KINDS}
    rows = []
    for name in LEGS:
        s = summaries.get(name)
        if s is None:
            continue
        cd = s.get("cooldown") or None
        decision = (cd or {}).get("decision") or s.get("decision") or {}
        gamma = {k: _num((s.get("gamma") or {}).get(k)) for k in GAMMA_KINDS}
        loss = _num(s.get("val_loss"))
        rows.append(
            Leg(
                name=name,
                reason=str(s.get("reason") or "—"),
                decision_step=decision.get("step"),
                end_step=int(s["step"]),
                val_loss=loss,
                loss_change=(loss - full_loss) / full_loss if full_loss else math.nan,
                gamma=gamma,
                gamma_saved={k: 1 - gamma[k] / full_gamma[k] if full_gamma[k] else math.nan for k in GAMMA_KINDS},
                decision_loss=_num(decision.get("val_loss")) if cd else None,
                psi_gained=_num(cd.get("psi_gained")) if cd else None,
                cooldown_steps=cd.get("steps") if cd else None,
            )
        )
    return rows


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


def format_legs(rows: Sequence[Leg]) -> str:
    head = (
        "run",
        "end reason",
        "decision step",
        "end step",
        "val loss",
        "Δ loss vs full",
        "Γ kWh",
        "Γ tokens",
        "saved kWh",
        "saved tokens",
        "loss at decision",
        "Ψ gained by cool-down",
    )
    body = [
        (
            f"({i}) {r.name}",
            r.reason,
            _fmt(r.decision_step, "d"),
            str(r.end_step),
            _fmt(r.val_loss, ".4f"),
            _fmt(r.loss_change, "+.2%"),
            _fmt(r.gamma["energy_kwh"], ".3g"),
            _fmt(r.gamma["tokens"], ",.0f"),
            _fmt(r.gamma_saved["energy_kwh"], ".1%"),
            _fmt(r.gamma_saved["tokens"], ".1%"),
            _fmt(r.decision_loss, ".4f"),
            _fmt(r.psi_gained, "+.4f"),
        )
        for i, r in enumerate(rows, 1)
    ]
    return _table(head, body)


def verdict(rows: Sequence[Leg]) -> tuple[bool, str]:
    """The goal line: (3) within 1 % of (1)'s final loss at ≥ 30 % less Γ (tokens and energy), and ahead of (2)."""
    by = {r.name: r for r in rows}
    cooled, cold = by.get("cooled"), by.get("cold")
    if cooled is None or cold is None:
        return False, "goal: needs the full, cold and cooled runs: NOT met (a run is missing)"
    close = cooled.loss_change <= LOSS_TOLERANCE
    saved = all(cooled.gamma_saved[k] >= GAMMA_SAVED for k in GAMMA_KINDS)
    ahead = cooled.val_loss < cold.val_loss
    met = close and saved and ahead
    line = (
        f"goal: (3) within {LOSS_TOLERANCE:.0%} of (1)'s final loss at ≥ {GAMMA_SAVED:.0%} less Γ, and ahead of (2) — "
        f"(3) loss {cooled.val_loss:.4f} vs (1) {by['full'].val_loss:.4f} ({cooled.loss_change:+.2%}: "
        f"{'ok' if close else 'too far'}); Γ saved {cooled.gamma_saved['tokens']:.1%} tokens, "
        f"{cooled.gamma_saved['energy_kwh']:.1%} energy ({'ok' if saved else 'short'}); "
        f"vs (2) {cold.val_loss:.4f} ({'ahead' if ahead else 'not ahead'}): {'met' if met else 'NOT met'}"
    )
    return met, line


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary.json of the newest job under RUN_DIR/cpr_runs/jobs, or None."""
    jobs = run_dir / "cpr_runs" / "jobs"
    found = sorted(jobs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime) if jobs.is_dir() else []
    return json.loads(found[-1].read_text()) if found else None


# --------------------------------------------------------------------------------------------------------------------
# Replay on public curves
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossCurve:
    steps: tuple[int, ...]
    loss: tuple[float, ...]
    tokens: tuple[float, ...]


def read_loss_csv(path: Path) -> LossCurve:
    with path.open(newline="") as fh:
        rows = [(int(r["step"]), float(r["loss"]), float(r["tokens"])) for r in csv.DictReader(fh)]
    return LossCurve(*(tuple(c) for c in zip(*rows, strict=True)))  # type: ignore[arg-type]


def loss_at(curve: LossCurve, tokens: float) -> tuple[float, bool]:
    """The curve's loss at `tokens`, linear between its two neighbouring checks: (loss, exact); nan outside it."""
    t = curve.tokens
    for i, x in enumerate(t):
        if x == tokens:
            return curve.loss[i], True
        if x > tokens:
            if i == 0:
                break
            w = (tokens - t[i - 1]) / (x - t[i - 1])
            return curve.loss[i - 1] + w * (curve.loss[i] - curve.loss[i - 1]), False
    return math.nan, False


def log_trend(curve: LossCurve, upto_tokens: float, at_tokens: float) -> float:
    """The constant phase's own trend: loss = a + b·ln(tokens), least squares over the checks in its second half
    (tokens in [upto/2, upto]), evaluated at `at_tokens`; nan with fewer than 3 checks there."""
    pts = [
        (math.log(t), v) for t, v in zip(curve.tokens, curve.loss, strict=True) if upto_tokens / 2 <= t <= upto_tokens
    ]
    if len(pts) < 3:
        return math.nan
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return my + b * (math.log(at_tokens) - mx)


@dataclass(frozen=True)
class ReplayRow:
    name: str
    model: str
    decay_start_step: int
    decision_step: int
    """The last check at or before the decay's start: where a stop rule would have decided."""
    decision_tokens: float
    cold_loss: float
    end_step: int
    end_tokens: float
    cooled_loss: float
    trend_loss: float
    """The constant phase's log-linear trend at the end's token count."""
    uncooled_loss: float | None = None
    """The uncooled companion run at the end's token count (None: no companion)."""
    uncooled_exact: bool = False
    uncooled_tokens_to_match: float | None = None
    """Tokens the uncooled companion needed to reach the cooled loss in its constant phase (nan: it did not)."""
    uncooled_limit_tokens: float | None = None
    """The companion's last check at constant LR (its tokens)."""

    @property
    def gained(self) -> float:
        return self.cold_loss - self.cooled_loss

    @property
    def gained_fraction(self) -> float:
        return self.gained / self.cold_loss

    @property
    def extra_tokens_fraction(self) -> float:
        return (self.end_tokens - self.decision_tokens) / self.decision_tokens


def replay_row(
    name: str,
    model: str,
    curve: LossCurve,
    decay_start_step: int,
    companion: LossCurve | None = None,
    companion_decay_start_step: int | None = None,
) -> ReplayRow:
    """Stop cold at the last check at or before `decay_start_step` vs the same run cooled to its last check; with an
    uncooled companion (same script, still at constant LR), what that one reached at the cooled end's tokens."""
    i = max(k for k, s in enumerate(curve.steps) if s <= decay_start_step)
    d_tok, end_tok = curve.tokens[i], curve.tokens[-1]
    row = dict(
        name=name,
        model=model,
        decay_start_step=decay_start_step,
        decision_step=curve.steps[i],
        decision_tokens=d_tok,
        cold_loss=curve.loss[i],
        end_step=curve.steps[-1],
        end_tokens=end_tok,
        cooled_loss=curve.loss[-1],
        trend_loss=log_trend(curve, d_tok, end_tok),
    )
    if companion is not None:
        limit = math.inf
        if companion_decay_start_step is not None:
            j = max(k for k, s in enumerate(companion.steps) if s <= companion_decay_start_step)
            limit = companion.tokens[j]
        if end_tok <= limit:
            row["uncooled_loss"], row["uncooled_exact"] = loss_at(companion, end_tok)
        reach = [t for t, v in zip(companion.tokens, companion.loss, strict=True) if t <= limit and v <= curve.loss[-1]]
        row["uncooled_tokens_to_match"] = reach[0] if reach else math.nan
        row["uncooled_limit_tokens"] = limit if limit < math.inf else companion.tokens[-1]
    return ReplayRow(**row)  # type: ignore[arg-type]


def format_replay(rows: Sequence[ReplayRow]) -> str:
    head = (
        "curve",
        "decay start",
        "decision step",
        "cold loss",
        "end step",
        "cooled loss",
        "gained",
        "gained %",
        "extra tokens",
        "uncooled at same tokens",
        "trend at same tokens",
        "uncooled tokens to match",
    )
    body = []
    for r in rows:
        if r.uncooled_loss is None:
            unc = "—"
        else:
            unc = _fmt(r.uncooled_loss, ".4f") + ("" if r.uncooled_exact else " (interp.)")
        if r.uncooled_tokens_to_match is None:
            match = "—"
        elif math.isnan(r.uncooled_tokens_to_match):
            match = f"> {(r.uncooled_limit_tokens or math.nan) / r.end_tokens:.2f}× (not before its decay)"
        else:
            match = f"{r.uncooled_tokens_to_match / r.end_tokens:.2f}× ({r.uncooled_tokens_to_match / 1e9:.2f}B)"
        body.append(
            (
                r.name,
                str(r.decay_start_step),
                f"{r.decision_step} ({r.decision_tokens / 1e9:.2f}B)",
                f"{r.cold_loss:.4f}",
                f"{r.end_step} ({r.end_tokens / 1e9:.2f}B)",
                f"{r.cooled_loss:.4f}",
                f"{r.gained:.4f}",
                f"{r.gained_fraction:.2%}",
                f"+{r.extra_tokens_fraction:.0%}",
                unc,
                _fmt(r.trend_loss, ".4f"),
                match,
            )
        )
    return _table(head, body)


def replay_corpus(curves_dir: Path = CURVES) -> tuple[list[ReplayRow], list[str]]:
    """Every loss curve of the manifest with a decay start, and the names of those not built yet."""
    manifest = json.loads((curves_dir / "manifest.json").read_text())
    by_name = {e["name"]: e for e in manifest}
    rows, missing = [], []
    for e in manifest:
        if e.get("decay_start_step") is None or e["direction"] != "loss":
            continue
        path = curves_dir / e["file"]
        comp = by_name.get(e.get("uncooled_companion") or "")
        if not path.is_file() or (comp and not (curves_dir / comp["file"]).is_file()):
            missing.append(e["name"])
            continue
        rows.append(
            replay_row(
                e["name"],
                e["model"],
                read_loss_csv(path),
                e["decay_start_step"],
                read_loss_csv(curves_dir / comp["file"]) if comp else None,
                comp["decay_start_step"] if comp else None,
            )
        )
    return rows, missing


def run_replay(curves_dir: Path = CURVES) -> int:
    rows, missing = replay_corpus(curves_dir)
    if missing:
        print(
            f"{len(missing)} public curves are not built yet ({', '.join(missing)}): clone their repositories and run "
            "`python benchmarks/data/curves/extract.py --mirror DIR` (benchmarks/data/curves/README.md)\n"
        )
    if not rows:
        print("no curve with a constant-LR phase and a decay to replay")
        return 0
    print(
        "Each public WSD run stopped cold at its last check before the LR decay starts (decision) vs the same run "
        "cooled to its end.\n'uncooled at same tokens': a run of the same script still at constant LR at that token "
        "count (same code and data order, not the same initialisation: no seed is set); 'trend': the constant "
        "phase's log-linear fit\n(second half of it) extrapolated to that token count. Loss: validation loss "
        "(nats/token). Extra tokens: the decay's tokens as a share of the tokens at the decision.\n"
    )
    print(format_replay(rows))
    print("\nmodels (manifest.json has each one's source, commit, licence and where its decay start comes from):")
    for r in rows:
        print(f"  {r.name}: {r.model}")
    pairs = [r for r in rows if r.uncooled_loss is not None]
    for r in pairs:
        print(
            f"\n{r.name}: cooled {r.cooled_loss:.4f} vs uncooled {r.uncooled_loss:.4f} at the same "
            f"{r.end_tokens / 1e9:.2f}B tokens ({r.uncooled_loss - r.cooled_loss:+.4f} for the cool-down); "
            f"the trend guessed {r.trend_loss:.4f}"
        )
    gains = [r.gained_fraction for r in rows]
    extra = [r.extra_tokens_fraction for r in rows]
    ahead = sum(r.uncooled_loss is not None and r.uncooled_loss > r.cooled_loss for r in pairs)
    print(
        f"\ncool-down gain over stopping cold: {min(gains):.2%}–{max(gains):.2%} of the cold loss, for "
        f"+{min(extra):.0%}–+{max(extra):.0%} tokens; ahead of the uncooled run at equal tokens on {ahead} of "
        f"{len(pairs)} true pairs"
    )
    return 0


# --------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--reuse",
        nargs="*",
        choices=list(LEGS),
        default=[],
        help="take these runs from WORKDIR/<run> if a finished job is there (default: run all three)",
    )
    parser.add_argument("--replay", action="store_true", help="replay the public WSD curves instead (no training)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (default: the default job)")
    args = parser.parse_args(argv)
    if args.replay:
        return run_replay()

    from benchmarks._runs import submit

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cpr-cooldown-"))
    summaries: dict[str, dict[str, Any]] = {}
    for name, own in LEGS.items():
        reused = read_summary(work / name) if name in args.reuse else None
        if reused is not None:
            print(f"({name}) reusing {work / name}", flush=True)
            summaries[name] = reused
            continue
        print(f"({name}) {' '.join([*args.overrides, *own]) or 'defaults'} in {work / name} ...", flush=True)
        done = submit(work / name, *args.overrides, *own)
        (work / name / "cpr.log").write_text(done["stdout"])  # what `cpr submit` printed, its closing summary too
        summaries[name] = done["summary"]
        print(f"      {done['summary']['step']} steps in {done['wall_s']:.0f} s", flush=True)
    rows = legs_from_summaries(summaries)
    print()
    print(format_legs(rows))
    _, line = verdict(rows)
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
