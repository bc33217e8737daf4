"""`cpr replay CURVE.csv`: run the stop rule over a recorded curve and say where it would have stopped."""

from __future__ import annotations

import argparse
import json

import numpy as np
from rich.console import Console

from launch.output import console, fmt
from orchestrator.core.numbers import json_safe
from orchestrator.core.resources import ResourceKind
from orchestrator.core.slopes import SlopeEstimator
from orchestrator.core.stop_rule import DEFAULT_ETA_REL, StopRuleConfig
from orchestrator.replay import ReplayResult, read_curve, replay

EPILOG = """\
CSV columns: step, then psi or loss (Ψ = −loss), then one cumulative column per resource kind
(energy_kwh, gpu_hours, vram_gb_hours, flops, co2_kg, tokens, wall_hours).
Example: cpr replay orchestrator/examples/tiny_llama_stdlib.csv --resource energy_kwh --eta-rel 0.05
"""


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "replay",
        help="run the stop rule over a recorded curve",
        description="Replay the marginal-return stop rule (ΔΨ/ΔΓ < η for P checks) over a recorded curve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("curve", metavar="CURVE.csv", help="the recorded curve")
    kinds = [k.value for k in ResourceKind]
    p.add_argument(
        "--resource",
        choices=kinds,
        metavar="KIND",
        help="Γ the rule divides by (default: energy_kwh if present, else gpu_hours, flops, tokens)",
    )
    eta = p.add_mutually_exclusive_group()
    eta.add_argument("--eta", type=float, metavar="X", help="absolute threshold η in Ψ per unit of Γ")
    eta.add_argument(
        "--eta-rel",
        type=float,
        metavar="RHO",
        help=f"relative threshold: η = ρ·r_ref, r_ref the first window ratio after warm-up "
        f"(default ρ = {DEFAULT_ETA_REL})",
    )
    p.add_argument("--window", type=int, default=5, metavar="W", help="checks in the moving window (default 5)")
    p.add_argument(
        "--patience", type=int, default=3, metavar="P", help="successive checks below η before stopping (default 3)"
    )
    p.add_argument("--min-checks", type=int, default=0, metavar="N", help="warm-up: checks before any decision")
    p.add_argument(
        "--min-fraction", type=float, default=0.0, metavar="F", help="warm-up: fraction of --budget before any decision"
    )
    p.add_argument("--budget", type=float, metavar="GAMMA", help="cap on Γ; reaching it stops the run")
    p.add_argument(
        "--estimator",
        choices=[e.value for e in SlopeEstimator],
        default=SlopeEstimator.LSTSQ.value,
        help="window slope estimator (default lstsq)",
    )
    p.add_argument(
        "--max-nonfinite",
        type=int,
        default=3,
        metavar="N",
        help="successive non-finite Ψ that stop the run as diverged (default 3)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    curve = read_curve(args.curve)
    resource = ResourceKind(args.resource) if args.resource else curve.default_resource()
    config = StopRuleConfig(
        resource=resource,
        window=args.window,
        patience=args.patience,
        eta=args.eta,
        eta_rel=args.eta_rel,
        min_checks=args.min_checks,
        min_fraction=args.min_fraction,
        budget=args.budget,
        estimator=SlopeEstimator(args.estimator),
        max_nonfinite=args.max_nonfinite,
    )
    with np.errstate(all="ignore"):  # an extreme curve's overflow is the rule's to judge, not a warning to print
        result = replay(curve, config)
    if args.json:
        print(json.dumps(json_safe(result.to_dict()), indent=2, allow_nan=False))
    else:
        print_summary(result, console())
    return 0


def print_summary(r: ReplayResult, console: Console) -> None:
    c = r.config
    unit = r.resource.value
    psi_name = "Ψ = −validation loss" if r.psi_from_loss else "Ψ"
    console.print(f"[bold]cpr replay[/bold] {r.source}: {r.n_checks} checks, {psi_name}, Γ = {unit}")
    if c.eta is not None:
        eta_text = f"η = {fmt(r.eta)} Ψ/{unit}"
    else:
        eta_text = f"η = {c.eta_rel} × r_ref = {fmt(r.eta)} Ψ/{unit}"
    console.print(
        f"rule: window {c.window} ({c.estimator.value}), patience {c.patience}, {eta_text}"
        + (f", budget {fmt(c.budget)} {unit}" if c.budget else "")
    )
    if not r.stopped:
        console.print(f"[green]CONTINUE[/green] to the end: the ratio never stayed below η for {c.patience} checks.")
        console.print(
            f"  final Ψ {fmt(r.psi_final, 6)} at Γ {fmt(r.gamma_final)} {unit}; last window ratio {fmt(r.last.ratio)}"
        )
        return
    last = r.last
    console.print(
        f"[bold red]STOP[/bold red] at step {r.stop_step} (check {last.check} of {r.n_checks}): "
        f"{r.reason}; window ratio {fmt(r.ratio_at_stop)} vs η {fmt(r.eta)}"
    )
    console.print(
        f"  Ψ at stop {fmt(r.psi_at_stop, 6)}, at the end {fmt(r.psi_final, 6)}: stopping gives up {fmt(r.psi_lost, 3)}"
    )
    console.print(
        f"  Γ at stop {fmt(r.gamma_at_stop)} {unit}, at the end {fmt(r.gamma_final)} {unit}: "
        f"stopping saves {100 * r.gamma_saved_fraction:.1f} %"
    )
    others = ", ".join(f"{k} {100 * v:.1f} %" for k, v in r.saved_fraction_by_kind.items())
    console.print(f"  saved by kind: {others}")
    f = r.forecast
    if f is None:
        return
    if not f.ok:
        console.print(f"  forecast: none ({f.reason})")
        return
    console.print(
        f"  forecast: Ψ(Γ) = {fmt(f.psi_inf)} − {fmt(f.scale_a)}·Γ^−{fmt(f.exponent_b, 3)} "
        f"(R² {f.r2:.4f}, {f.n_points} points); ratio reaches η at Γ ≈ {fmt(f.gamma_cross)} {unit}; "
        f"continuing to Γ = {fmt(f.budget)} would buy ΔΨ ≈ {fmt(f.psi_gain_to_budget, 3)}"
    )
