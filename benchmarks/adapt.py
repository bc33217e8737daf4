"""benchmarks/adapt: blueprint-guided adaptation (`cpr adapt`, the paper's Algorithm 1) against full fine-tuning,
LISA, LoRA, last-k, the local sample alone and the inverse selection, side by side in one run.

Per model: a base is pretrained with `cpr submit +experiment=debug` (the standard library's sources; its blueprint
published at the end), then adapted with every strategy by `cpr adapt` to a shifted domain, the standard library's
test suite: the same seed, the same tokens, the stop rule in shadow mode (every run goes to the same Γ in tokens),
and the same trainable-parameter budget (`adapt.max_fraction`, 20 % and 40 %) where the strategy has one. Printed per
model and budget:
- target Ψ (−validation loss on the test suite's held-out files) at 25/50/75/100 % of the tokens, and Γ in kWh;
- the share of full fine-tuning's gain on the target (Ψ_final − Ψ_base) each strategy reached;
- Ψ on the base's own validation split after adapting (forgetting: the base scores Ψ₀ there);
- optimizer-state + gradient bytes per rank as the engine held them at its first step (rank 0), against full's;
- tokens/s (the ranks' mean).
Then the goals (blueprint ahead of lisa, last_k, local and inverse on target Ψ at equal Γ; ≥ 95 % of full's gain at
≤ 40 % of its optimizer + gradient memory; blueprint against lora at matched memory), met or not, with the figures,
and `cpr report --sweep` draws every strategy's Ψ–Γ curve on one page.

    .venv/bin/python -m benchmarks.adapt [--models llama-tiny llama-20m] [--budgets 0.2 0.4] [--workdir DIR]

LISA runs under ZeRO 0 (re-freezing between steps needs it; its memory is measured there); every other strategy
under the default ZeRO 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._runs import CPR, submit

STRATEGIES = ("blueprint", "local", "last_k", "lisa", "inverse", "lora")
BASES = {
    # model -> (base pretraining overrides, adaptation tokens)
    "llama-tiny": (("+experiment=debug", "stop=shadow", "train.max_tokens=262144"), 81920),
    "llama-20m": (("+experiment=debug", "model=llama-20m", "stop=shadow", "train.max_tokens=163840"), 30720),
}
TARGET = (
    "data.glob=test/test_*.py",
    "data.max_files=120",
    "train.seq_len=64",
    "train.micro_batch=8",
    "train.eval_interval=5",
    "train.lr=2e-3",
    "train.warmup_steps=5",
    "stop=shadow",
)
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass
class Result:
    strategy: str
    budget: float | None
    job_id: str
    run_id: str
    curve: list[tuple[float, float, float]]  # (tokens, kWh, Ψ) at each check
    trainable: int
    total: int
    memory: int  # optimizer state + gradients, bytes, rank 0
    tokens_per_s: float
    base_psi: float  # Ψ on the base's validation split after adapting
    summary: dict[str, Any]

    @property
    def final(self) -> float:
        return self.curve[-1][2]

    def psi_at(self, fraction: float) -> float:
        """Ψ at the last check at or below `fraction` of the tokens."""
        limit = fraction * self.curve[-1][0]
        return [p for t, _, p in self.curve if t <= limit + 1e-9][-1]


def curve(run_id: str, store: str) -> list[tuple[float, float, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    psi = {m.step: m.value for m in client.get_metric_history(run_id, "cpr/psi")}
    tok = {m.step: m.value for m in client.get_metric_history(run_id, "cpr/gamma/tokens")}
    kwh = {m.step: m.value for m in client.get_metric_history(run_id, "cpr/gamma/energy_kwh")}
    return [(tok[s], kwh.get(s, float("nan")), psi[s]) for s in sorted(psi) if s in tok]


def evaluate(base_folder: Path, state: dict[str, Any], lora: dict[str, Any] | None, job: Any, prepared: Any) -> float:
    """Ψ (−validation loss) of a model with these weights on `job`'s validation split (`prepared`)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from orchestrator.adapt import LoraDescriptor
    from orchestrator.export import validation_loss

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(base_folder), torch_dtype=torch.float32)
    if lora is not None:
        from orchestrator.worker.lora import apply_lora

        model = apply_lora(model, LoraDescriptor(**{**lora, "targets": tuple(lora["targets"])}))
    if state:
        model.load_state_dict(state, strict=True)
    return -validation_loss(model.eval(), job, prepared)


def run_strategy(work: Path, base: dict[str, Any], strategy: str, budget: float | None, tokens: int) -> Result:
    from orchestrator.export import consolidate
    from orchestrator.job_files import find_job

    over = [base["job_id"], *TARGET, f"train.max_tokens={tokens}", f"adapt={strategy}"]
    if budget is not None:
        over.append(f"adapt.max_fraction={budget}")
    if strategy == "lisa":
        over += ["deepspeed=zero0", f"adapt.lisa_interval={max(1, tokens // 1024 // 4)}"]
    r = submit(work, *over, verb="adapt")
    s, store = r["summary"], f"sqlite:///{work / 'cpr_runs' / 'mlflow.db'}"
    a = s["adapt"]
    m = a["measured"]
    base_job = find_job(work / "cpr_runs", base["job_id"])
    ckpt = Path(s["checkpoint"])
    state = consolidate(ckpt, 0 if strategy == "lisa" else 2).state_dict
    speeds = [w["tokens_per_s"] for w in s["workers"] if w.get("tokens_per_s")]
    return Result(
        strategy=strategy,
        budget=budget,
        job_id=r["job_id"],
        run_id=r["run_id"],
        curve=curve(r["run_id"], store),
        trainable=a["trainable_params"],
        total=a["total_params"],
        memory=int(m["optimizer_state_bytes"] + m["gradient_bytes"]),
        tokens_per_s=sum(speeds) / len(speeds),
        base_psi=evaluate(Path(a["base"]), state, a.get("lora"), base_job.job, base_job.prepared()),
        summary=s,
    )


def table(rows: list[Result], full: Result, psi0: float, base_psi0: float) -> str:
    head = (
        f"{'strategy':<10} {'budget':>6} {'trained':>8} "
        + " ".join(f"{'Ψ@' + format(f, '.0%'):>8}" for f in FRACTIONS)
        + f" {'kWh':>9} {'gain/full':>9} {'Ψ base':>8} {'opt+grad B':>11} {'/full':>6} {'tok/s':>7}"
    )
    lines = [head, "-" * len(head)]
    full_gain = full.final - psi0
    for r in rows:
        gain = (r.final - psi0) / full_gain if full_gain else float("nan")
        lines.append(
            f"{r.strategy:<10} {'' if r.budget is None else format(r.budget, '.0%'):>6} {r.trainable / r.total:>8.1%} "
            + " ".join(f"{r.psi_at(f):>8.4f}" for f in FRACTIONS)
            + f" {r.curve[-1][1]:>9.3g} {gain:>9.1%} {r.base_psi:>8.4f} {r.memory:>11,} "
            f"{r.memory / full.memory:>6.1%} {r.tokens_per_s:>7.0f}"
        )
    lines.append(f"(before adapting: target Ψ {psi0:.4f}, base-domain Ψ {base_psi0:.4f})")
    return "\n".join(lines)


def goals(rows: list[Result], full: Result, psi0: float) -> list[str]:
    by = {r.strategy: r for r in rows}
    bp = by.get("blueprint")
    if bp is None:
        return []
    out = []
    for other in ("lisa", "last_k", "local", "inverse"):
        if other in by:
            ahead = bp.final > by[other].final
            out.append(
                f"blueprint ahead of {other} at equal Γ: {'met' if ahead else 'NOT met'} "
                f"(final Ψ {bp.final:.4f} vs {by[other].final:.4f})"
            )
    share = (bp.final - psi0) / (full.final - psi0) if full.final != psi0 else float("nan")
    mem = bp.memory / full.memory
    ok = share >= 0.95 and mem <= 0.40
    out.append(
        f"≥ 95 % of full's gain at ≤ 40 % of its optimizer + gradient memory: {'met' if ok else 'NOT met'} "
        f"({share:.1%} of the gain at {mem:.1%} of the memory)"
    )
    if "lora" in by:
        lo = by["lora"]
        winner = "blueprint" if bp.final > lo.final else "lora"
        out.append(
            f"against lora at the same parameter budget: {winner} is ahead (Ψ {bp.final:.4f} vs {lo.final:.4f}; "
            f"memory {bp.memory:,} vs {lo.memory:,} B; {bp.tokens_per_s:.0f} vs {lo.tokens_per_s:.0f} tokens/s)"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BASES), choices=list(BASES))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.2, 0.4])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="cpr-adapt-"))
    for model in args.models:
        base_over, tokens = BASES[model]
        work = root / model
        print(f"\n== {model}: pretraining the base in {work} …", flush=True)
        b = submit(work, *base_over)
        base = {"job_id": b["job_id"]}
        print(f"   {b['job_id']}: {b['summary']['step']} steps in {b['wall_s']:.0f} s", flush=True)
        print(f"   full fine-tuning ({tokens:,} tokens) …", flush=True)
        full = run_strategy(work, base, "full", None, tokens)
        from orchestrator.job_files import find_job

        target = find_job(work / "cpr_runs", full.job_id)
        base_job = find_job(work / "cpr_runs", base["job_id"])
        folder = Path(full.summary["adapt"]["base"])
        psi0 = evaluate(folder, {}, None, target.job, target.prepared())
        base_psi0 = evaluate(folder, {}, None, base_job.job, base_job.prepared())
        ids = [full.job_id]
        for budget in args.budgets:
            rows = [full]
            for strategy in args.strategies:
                print(f"   {strategy} at {budget:.0%} …", flush=True)
                try:
                    rows.append(run_strategy(work, base, strategy, budget, tokens))
                    ids.append(rows[-1].job_id)
                except RuntimeError as exc:  # a strategy the budget cannot hold (e.g. LISA's always-on part)
                    print("     refused: " + str(exc).strip().splitlines()[-1][:300])
            print(f"\n{model}, trainable budget {budget:.0%}, {tokens:,} tokens each:")
            print(table(rows, full, psi0, base_psi0))
            for line in goals(rows, full, psi0):
                print("  " + line)
            sel = next((r for r in rows if r.strategy == "blueprint"), None)
            if sel is not None:
                s = sel.summary["adapt"]
                print(f"  blueprint chose: {', '.join(s['chosen'])} (ρ = {s['rho']:.3f}, fallback {s['fallback']})")
        report = subprocess.run(
            [CPR, "report", "--sweep", *ids, "-o", str(work / "report")], cwd=work, capture_output=True, text=True
        )
        print(f"\nΨ–Γ curves of every strategy: {work / 'report' / 'report.html'}" if report.returncode == 0 else
              f"\ncpr report --sweep failed: {report.stderr.strip()[-300:]}")  # fmt: skip
        (work / "results.json").write_text(json.dumps({"ids": ids}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
