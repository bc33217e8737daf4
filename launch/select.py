"""`cpr select [BASE] [overrides…]`: score the corpus's training windows by their predicted gradient norm under a base
model, keep the top fraction, and write a selection manifest that `cpr submit` and `cpr adapt` train on with
`data.selection=…` (the paper's Algorithm 2; docs/select.md). Ranks score in parallel on Ray; the run is logged to
MLflow; the cross-influence map of submodules × data blocks is published with the base's blueprint."""

from __future__ import annotations

import argparse
import sys

from launch.output import console, fmt
from orchestrator.config.compose import job_to_yaml

SELECT_DEFAULTS = ("probe=off", "telemetry=off", "name=select")
"""A select job trains nothing: no probe, no energy samplers; its ids read select-…."""


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "select",
        help="keep the training data a base model's gradients say pays (a manifest for data.selection)",
        description="Score every training window of the job's data under BASE (a cpr job id or a save_pretrained "
        "folder): the true per-example gradient norm J on select.sample windows, a predictor of J from one forward "
        "pass fitted on them and checked by Spearman ρ on a held-out share, the prediction for every window "
        "(length-corrected), and the top select.fraction kept. select.score=loss|random give the baselines. "
        "Other arguments are Hydra overrides, e.g. `cpr select my-job select.fraction=0.3 data.max_files=300`; "
        "train on the result with `cpr submit data.selection=MANIFEST`.",
    )
    p.add_argument("--cfg", action="store_true", help="print the composed config, base resolved, and exit")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="BASE first (or select.base=…), then Hydra overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ray.exceptions import RayError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from launch.adapt import base_overrides
    from orchestrator.submission import plan_job
    from orchestrator.submission.preflight import preflight
    from orchestrator.submission.ray_cluster import disconnect
    from orchestrator.submission.select import plan_select, run_select

    overrides, cfg_only = base_overrides(
        args, "select.base", "select sweeps are not supported", "run one `cpr select` per setting"
    )
    plan = plan_job([*SELECT_DEFAULTS, *overrides])
    preflight(plan.job)
    out = console(stderr=cfg_only)
    sp = plan_select(plan, log=lambda line: out.print(f"[dim]select:[/dim] {line}"))
    if cfg_only:
        sys.stdout.write(job_to_yaml(sp.plan.job))
        return 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=out, transient=False) as bar:
            tasks: dict[str, int] = {}

            def tick(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done)

            result = run_select(sp, log=lambda line: out.print(f"[dim]select:[/dim] {line}"), progress=tick)
    except RayError as exc:  # a rank failed (out of memory, killed): one line, the rank's log has the rest
        print(f"cpr: select failed: {' '.join(str(exc).split())[-400:]}", file=sys.stderr)
        return 1
    finally:
        disconnect()
    m = result.manifest
    s = m.summary()
    p = m.predictor or {}
    lb = m.length_bias or {}
    jb = result.j_length_bias
    out.print(f"[bold]selection {m.id}[/bold] (job {result.job_id}, run {result.run_id})")
    out.print(
        f"  kept {s['kept']:,} of {s['windows']:,} windows ({m.score}"
        f"{', length-corrected' if m.score == 'predicted' and m.length_correction else ''}"
        f"{f', after the top {m.skip_top:.0%}' if m.skip_top else ''}), "
        f"{s['kept_tokens']:,} of {s['tokens']:,} tokens ({s['kept_token_share']:.1%})"
    )
    out.print(
        f"  predictor f_φ: Spearman ρ {fmt(p.get('spearman'), 3)} against the true J on {p.get('n_holdout')} held-out "
        f"windows (fitted on {p.get('n_fit')})"
    )
    out.print(
        f"  length bias ρ(score, length): {fmt(lb.get('rho_before'), 3)} before, {fmt(lb.get('rho_after'), 3)} after "
        f"correction; true J on D_small: ρ(J, length) {fmt(jb.get('rho_before'), 3)}"
    )
    ci = m.cross_influence or {}
    if ci:
        top = ", ".join(f"{b} {w:.0%}" for b, w in sorted(m.kept_blocks().items(), key=lambda kv: -kv[1])[:5])
        out.print(
            f"  cross-influence: {len(ci['groups'])} groups × {len(ci['blocks'])} {ci['block_kind']} blocks, rank "
            f"{ci['rank']} holds {ci['energy']:.2%} of the energy; kept blocks: {top}"
        )
    if result.blueprint:
        out.print(
            f"  blueprint {result.blueprint} carries the map (`cpr blueprint show FILE`, `cpr report {result.job_id}`)"
        )
    secs = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in result.seconds.items())
    out.print(f"  time: {secs}")
    out.print(f"  manifest: {result.manifest_path}")
    out.print(f"  train on it: cpr submit data.selection={result.manifest_path}")
    return 0
