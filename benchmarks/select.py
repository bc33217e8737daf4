"""benchmarks/select: gradient-predicted data selection (`cpr select`, the paper's Algorithm 2) against all data,
a random fraction and the highest-loss fraction, at equal tokens, in pretraining and in adaptation; then parameter ×
data selection together against each alone.

A base is pretrained a little way in (`cpr submit +experiment=debug`, a quarter of its budget). Per setting, one
`cpr select` pass scores the corpus under the base (f_φ's Spearman ρ against the true per-example gradient norm J is
printed); the manifests of every score and fraction come from that pass (`SelectionManifest.rescored`: what
`cpr select select.score=… select.fraction=…` writes from the same scores). Every run then continues from the base
with `cpr adapt`, the same seed and token budget, the stop rule in shadow mode:
- pretraining: all parameters (adapt=full) on the base's own corpus (the standard library's sources), Ψ = −loss
  on its held-out files;
- adaptation: all parameters on a shifted domain (the standard library's test suite), Ψ = −loss on its held-out files.
Rows: all data; random, loss-based, predicted J raw and length-corrected at each q, and length-corrected after
passing over the top --skip-top share (select.skip_top); a second random draw at the largest q (the spread two
random draws give is the noise to read the table against).
Combination (adaptation): adapt=blueprint at --param-fraction of the parameters, on all data and on the
length-corrected predicted selection at the smallest q (Ḡ from the cross-influence map of the kept blocks, and
without it: adapt.joint=false); Ψ kept = (Ψ − Ψ₀)/(Ψ_full − Ψ₀), Ψ₀ the base's, against the product of the two
resource fractions and of the two Ψ shares alone.

    .venv/bin/python -m benchmarks.select [--fractions 0.3 0.5] [--settings pretrain adapt] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._runs import CPR, submit
from benchmarks.adapt import TARGET, curve, evaluate

BASE = ("+experiment=debug", "stop=shadow", "train.max_tokens=262144")  # 256 of debug's 1,024 steps
SELECT: dict[str, tuple[str, ...]] = {
    # setting -> `cpr select`'s own overrides: the test suite is one folder, so its blocks are k-means clusters
    "pretrain": ("select.blocks=folder",),
    "adapt": ("select.blocks=cluster",),
}
SETTINGS: dict[str, tuple[tuple[str, ...], int]] = {
    # setting -> (data and training overrides of every run, tokens per run)
    "pretrain": (("+experiment=debug", "stop=shadow", "train.warmup_steps=5"), 131072),
    "adapt": (TARGET, 81920),  # benchmarks/adapt's target domain and training settings
}
SCORES = (("random", False), ("loss", False), ("predicted", False), ("predicted", True))


def label(score: str, corrected: bool) -> str:
    return f"{score}{' +len' if corrected else ''}"


@dataclass
class Row:
    name: str
    q: float | None
    kept_token_share: float
    psi: float
    kwh: float
    trainable_share: float
    job_id: str


def select(work: Path, base_id: str, over: tuple[str, ...]) -> Path:
    done = subprocess.run(
        [CPR, "select", base_id, *over, "select.fraction=0.5"], cwd=work, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"cpr select failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print("   " + "\n   ".join(done.stdout.strip().splitlines()[-9:]), flush=True)
    return Path(re.search(r"^  manifest: (\S+)", done.stdout, re.M).group(1))  # type: ignore[union-attr]


def train(work: Path, base_id: str, over: tuple[str, ...], tokens: int, name: str, q: float | None, *extra: str) -> Row:
    r = submit(work, base_id, *over, f"train.max_tokens={tokens}", *extra, verb="adapt")
    c = curve(r["run_id"], f"sqlite:///{work / 'cpr_runs' / 'mlflow.db'}")
    a = r["summary"]["adapt"]
    share = 1.0
    for e in extra:
        if e.startswith("data.selection="):
            from orchestrator.select import load_manifest

            share = float(load_manifest(e.split("=", 1)[1]).summary()["kept_token_share"])
    row = Row(name, q, share, c[-1][2], c[-1][1], a["trainable_params"] / a["total_params"], r["job_id"])
    print(f"   {name:<24} q={'all' if q is None else q:<4} Ψ {row.psi:.4f} ({r['wall_s']:.0f} s)", flush=True)
    return row


def table(rows: list[Row], psi0: float) -> str:
    head = f"{'selection':<24} {'q':>4} {'tokens kept':>11} {'val loss':>9} {'Ψ gain':>8} {'vs all':>8} {'kWh':>9}"
    all_ = rows[0]
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<24} {'all' if r.q is None else format(r.q, '.1f'):>4} {r.kept_token_share:>11.1%} "
            f"{-r.psi:>9.4f} {r.psi - psi0:>8.4f} {r.psi - all_.psi:>+8.4f} {r.kwh:>9.3g}"
        )
    lines.append(f"(the base before this training: val loss {-psi0:.4f})")
    return "\n".join(lines)


def verdicts(rows: list[Row], fractions: list[float]) -> list[tuple[bool, str]]:
    """Per q: does each predicted-J selection (raw, length-corrected, with an offset) beat random and loss-based at
    equal tokens?"""
    out = []
    by = {(r.name, r.q): r for r in rows}
    predicted = [name for name, _ in by if name.startswith("predicted")]
    for q in fractions:
        rnd, los = by[(label("random", False), q)], by[(label("loss", False), q)]
        for name in dict.fromkeys(predicted):
            p = by[(name, q)]
            ok = p.psi > rnd.psi and p.psi > los.psi
            out.append(
                (
                    ok,
                    f"q={q}: {p.name} {'beats' if ok else 'does NOT beat'} random and loss-based "
                    f"(val loss {-p.psi:.4f} vs {-rnd.psi:.4f} random, {-los.psi:.4f} loss)",
                )
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.3, 0.5])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--param-fraction", type=float, default=0.2)
    parser.add_argument(
        "--skip-top",
        type=float,
        default=0.1,
        help="also predicted +len after passing over this top share (select.skip_top; 0: no such rows)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--base", default=None, help="a base job already in --workdir (default: pretrain one)")
    args = parser.parse_args()
    from orchestrator.select import load_manifest

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cpr-select-"))
    fractions = sorted(args.fractions)
    if args.base:
        base_id = args.base
    else:
        print(f"== pretraining the base in {work} …", flush=True)
        b = submit(work, *BASE)
        base_id = b["job_id"]
        print(f"   {base_id}: {b['summary']['step']} steps in {b['wall_s']:.0f} s", flush=True)
    results: dict[str, Any] = {"base": base_id, "settings": {}}
    met_any = False
    spearman: dict[str, float] = {}
    for setting in args.settings:
        over, tokens = SETTINGS[setting]
        print(f"\n== {setting}: cpr select on the base …", flush=True)
        made = select(work, base_id, (*over, *SELECT[setting]))
        m = load_manifest(made)
        spearman[setting] = float((m.predictor or {}).get("spearman", float("nan")))
        manifests: dict[tuple[str, float], Path] = {}
        for q in fractions:
            for score, corrected in SCORES:
                path = work / "manifests" / f"{setting}-{score}{'-len' if corrected else ''}-{q}.json"
                m.rescored(score, length_correction=corrected, fraction=q).write(path)
                manifests[(label(score, corrected), q)] = path
            if args.skip_top:
                path = work / "manifests" / f"{setting}-predicted-len-skip{args.skip_top}-{q}.json"
                m.rescored("predicted", length_correction=True, fraction=q, skip_top=args.skip_top).write(path)
                manifests[(f"predicted +len skip {args.skip_top:.0%}", q)] = path
        print(f"   training {tokens:,} tokens per run from the base …", flush=True)
        rows = [train(work, base_id, over, tokens, "all data", None, "adapt=full")]
        for (name, q), path in manifests.items():
            rows.append(train(work, base_id, over, tokens, name, q, "adapt=full", f"data.selection={path}"))
        redraw = work / "manifests" / f"{setting}-random-seed1-{fractions[-1]}.json"
        second = dataclasses.replace(m, seed=m.seed + 1)
        second.rescored("random", length_correction=False, fraction=fractions[-1]).write(redraw)
        rows.append(train(work, base_id, over, tokens, "random (2nd draw)", fractions[-1], "adapt=full",
                          f"data.selection={redraw}"))  # fmt: skip
        psi0 = base_psi(work, rows[0].job_id)
        print(f"\n{setting}: {tokens:,} tokens per run, f_φ Spearman ρ {spearman[setting]:.3f} "
              f"(held-out D_small: {(m.predictor or {}).get('n_holdout')} windows)")  # fmt: skip
        print(table(rows, psi0))
        lb = m.length_bias or {}
        print(f"  length bias of the prediction: ρ(log Ĵ, length) {lb.get('rho_before', float('nan')):.3f} before, "
              f"{lb.get('rho_after', float('nan')):.3f} after the correction")  # fmt: skip
        for ok, line in verdicts(rows, fractions):
            met_any |= ok
            print("  " + line)
        entry: dict[str, Any] = {"rows": [r.__dict__ for r in rows], "psi0": psi0, "spearman": spearman[setting]}
        if setting == "adapt":
            entry["combination"] = combination(work, base_id, over, tokens, rows, manifests, fractions[0], psi0, args)
        results["settings"][setting] = entry
    print("\n== goals")
    print(f"  predicted-J selection beats random and loss-based at equal tokens in at least one setting: "
          f"{'met' if met_any else 'NOT met'}")  # fmt: skip
    for setting, rho in spearman.items():
        print(f"  predictor Spearman ≥ 0.7 ({setting}): {'met' if rho >= 0.7 else 'NOT met'} (ρ = {rho:.3f})")
    combo = results["settings"].get("adapt", {}).get("combination")
    if combo:
        print(f"  combination keeps ≥ the product of the two Ψ shares: {'met' if combo['met'] else 'NOT met'} "
              f"({combo['joint_share']:.1%} kept vs {combo['product_share']:.1%})")  # fmt: skip
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {work / 'results.json'}")
    return 0


def base_psi(work: Path, job_id: str) -> float:
    """Ψ₀: the base itself on the validation split of the run `job_id` (the setting's data, before any step)."""
    from orchestrator.job_files import find_job

    target = find_job(work / "cpr_runs", job_id)
    s = json.loads((work / "cpr_runs" / "jobs" / job_id / "summary.json").read_text())
    return evaluate(Path(s["adapt"]["base"]), {}, None, target.job, target.prepared())


def combination(
    work: Path,
    base_id: str,
    over: tuple[str, ...],
    tokens: int,
    rows: list[Row],
    manifests: dict[tuple[str, float], Path],
    q: float,
    psi0: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    full = rows[0]
    data_only = next(r for r in rows if r.name == label("predicted", True) and r.q == q)
    path = manifests[(label("predicted", True), q)]
    p = args.param_fraction
    budget = ("adapt=blueprint", f"adapt.max_fraction={p}")
    params_only = train(work, base_id, over, tokens, f"blueprint {p:.0%}, all data", None, *budget)
    joint = train(work, base_id, over, tokens, f"blueprint {p:.0%} × data", q, *budget, f"data.selection={path}")
    apart = train(work, base_id, over, tokens, "… adapt.joint=false", q, *budget, f"data.selection={path}",
                  "adapt.joint=false")  # fmt: skip

    def share(r: Row) -> float:
        return (r.psi - psi0) / (full.psi - psi0) if full.psi != psi0 else float("nan")

    cost = {r.name: r.trainable_share * r.kept_token_share for r in (full, data_only, params_only, joint, apart)}
    print("\ncombination (adaptation), Ψ kept = (Ψ − Ψ₀)/(Ψ_full − Ψ₀), cost = trained share × data share:")
    head = f"{'run':<28} {'params':>7} {'data':>7} {'cost':>7} {'Ψ kept':>8}"
    print(head + "\n" + "-" * len(head))
    for r in (full, data_only, params_only, joint, apart):
        print(
            f"{r.name:<28} {r.trainable_share:>7.1%} {r.kept_token_share:>7.1%} {cost[r.name]:>7.1%} {share(r):>8.1%}"
        )
    product = share(params_only) * share(data_only)
    return {
        "joint_share": share(joint),
        "apart_share": share(apart),
        "product_share": product,
        "joint_cost": cost[joint.name],
        "met": share(joint) >= product,
    }


if __name__ == "__main__":
    raise SystemExit(main())
