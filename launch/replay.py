"""`cpr replay CURVE.csv`: run the stop rule over a recorded curve and say where it would have stopped."""

from __future__ import annotations

import argparse
import json

import numpy as np
from rich.console import Console

from launch.output import console, fmt
from orchestrator.core import stop_rule
from orchestrator.core.gain_left import explain
from orchestrator.core.numbers import json_safe
from orchestrator.core.resources import ResourceKind
from orchestrator.core.slopes import SlopeEstimator
from orchestrator.core.stop_rule import StopRuleConfig
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
    eta.add_argument(
        "--max-loss",
        type=float,
        metavar="DELTA",
        help="budget-aware threshold (the default, δ = "
        f"{stop_rule.DEFAULT_MAX_LOSS:g}): stop when the rest of the budget would buy less than δ of the run's gain",
    )
    eta.add_argument("--eta", type=float, metavar="X", help="absolute threshold η in Ψ per unit of Γ")
    eta.add_argument(
        "--eta-rel",
        type=float,
        metavar="RHO",
        help="relative threshold: η = ρ·r_ref, r_ref the first window ratio after warm-up",
    )
    p.add_argument(
        "--window",
        type=int,
        default=stop_rule.DEFAULT_WINDOW,
        metavar="W",
        help=f"checks in the moving window (default {stop_rule.DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=stop_rule.DEFAULT_PATIENCE,
        metavar="P",
        help=f"successive checks below η before stopping (default {stop_rule.DEFAULT_PATIENCE})",
    )
    p.add_argument(
        "--min-checks",
        type=int,
        default=stop_rule.DEFAULT_MIN_CHECKS,
        metavar="N",
        help=f"warm-up: checks before any decision (default {stop_rule.DEFAULT_MIN_CHECKS})",
    )
    p.add_argument(
        "--min-fraction", type=float, default=0.0, metavar="F", help="warm-up: fraction of --budget before any decision"
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="GAMMA",
        help="cap on Γ (reaching it stops the run) and the budget-aware rule's horizon; default horizon: the "
        "curve's end, projected from its tokens column as the controller does when there is one",
    )
    p.add_argument(
        "--max-tokens",
        type=float,
        metavar="N",
        help="the run's token budget, for a curve that stopped before it (default: the curve's last tokens)",
    )
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
        max_loss=args.max_loss,
        eta=args.eta,
        eta_rel=args.eta_rel,
        min_checks=args.min_checks,
        min_fraction=args.min_fraction,
        budget=args.budget,
        estimator=SlopeEstimator(args.estimator),
        max_nonfinite=args.max_nonfinite,
    )
    with np.errstate(all="ignore"):  # an extreme curve's overflow is the rule's to judge, not a warning to print
        result = replay(curve, config, max_tokens=args.max_tokens)
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
    if c.max_loss is not None:
        eta_text = f"budget-aware η (δ = {c.max_loss:g} of the run's gain), at the last check {fmt(r.eta)} Ψ/{unit}"
    elif c.eta is not None:
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
    ratio_name = "most the rest would pay, ΔΨ/ΔΓ" if c.max_loss is not None else "window ratio"
    console.print(
        f"[bold red]STOP[/bold red] at step {r.stop_step} (check {last.check} of {r.n_checks}): "
        f"{r.reason}; {ratio_name} {fmt(r.ratio_at_stop)} vs η {fmt(r.eta)}"
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
    if last.evidence is not None and c.max_loss is not None:
        loss = -last.psi if r.psi_from_loss else None
        console.print(f"  why: {explain(last.evidence, max_loss=c.max_loss, loss=loss)}")
    console.print(f"  the curve itself: the rest of the run bought ΔΨ = {fmt(r.psi_lost, 3)}")
    f = r.forecast
    if f is None:
        return
    if not f.ok:
        console.print(f"  forecast: none ({f.reason})")
        return
    cross = f"ratio reaches η at Γ ≈ {fmt(f.gamma_cross)} {unit}; " if f.gamma_cross is not None else ""
    console.print(
        f"  forecast: Ψ(Γ) = {fmt(f.psi_inf)} − {fmt(f.scale_a)}·Γ^−{fmt(f.exponent_b, 3)} "
        f"(R² {f.r2:.4f}, {f.n_points} points); {cross}"
        f"continuing to Γ = {fmt(f.budget)} would buy ΔΨ ≈ {fmt(f.psi_gain_to_budget, 3)}"
    )
