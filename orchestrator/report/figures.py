"""The report's figures, drawn with matplotlib's object API (Agg canvas, no pyplot global state, so it is safe in
the controller's threads). Each function writes one PNG and returns its path, or None when the run has nothing
to draw for it (no ratio yet, no forecast, no blueprints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from orchestrator.report.data import RunData, Series

DPI = 110
STOP_COLOR = "#c0392b"
SHADOW_COLOR = "#8e44ad"
PATIENCE_COLOR = "#f5b041"
MAX_MK_CURVES = 12
"""m(k) curves drawn at most (the submodules with the most gradient mass): more is unreadable."""


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if math.isfinite(x) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _paired(a: Series, b: Series) -> tuple[list[float], list[float]]:
    """(a, b) at the steps both were logged at: Γ and Ψ of the same check."""
    at_b = dict(zip(b.steps, b.values, strict=True))
    xs = [v for s, v in zip(a.steps, a.values, strict=True) if s in at_b]
    ys = [at_b[s] for s in a.steps if s in at_b]
    return _finite(xs, ys)


def _mark_stops(ax: Axes, run: RunData, kind: str) -> None:
    """The STOP (and a differing rule STOP) as a point on the Ψ–Γ[kind] curve."""
    for point, color, label in ((run.stop, STOP_COLOR, "stop"), (run.rule_stop, SHADOW_COLOR, "rule's stop")):
        if point is None or point.step is None or kind not in run.gamma:
            continue
        g, p = run.gamma[kind].at(point.step), run.psi.at(point.step)
        if g is None or p is None:
            continue
        ax.plot([g], [p], "o", ms=9, mfc="none", mec=color, mew=2, label=f"{label} @ step {point.step}")
        ax.axvline(g, color=color, lw=0.8, ls=":")


def psi_vs_gamma(run: RunData, path: Path) -> Path | None:
    """Ψ against the Γ the rule used, with the stop point; the forecast fit where one was made."""
    kind = run.resource
    if kind not in run.gamma or not run.psi:
        return None
    xs, ys = _paired(run.gamma[kind], run.psi)
    if not xs:
        return None
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    ax.plot(xs, ys, ".-", color="#2471a3", label=run.psi_label)
    _mark_stops(ax, run, kind)
    ax.set_xlabel(f"Γ ({kind}), cumulative")
    ax.set_ylabel(run.psi_label)
    ax.set_title(f"{run.job_id}: Ψ against Γ [{kind}] (the stop rule's kind)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def psi_vs_each_gamma(run: RunData, path: Path) -> Path | None:
    """Ψ against every other kind of Γ measured, one panel each, the same stop marked in each."""
    kinds = [k for k in run.gamma if k != run.resource and _paired(run.gamma[k], run.psi)[0]]
    if not kinds:
        return None
    cols = min(3, len(kinds))
    rows = math.ceil(len(kinds) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs, ys = _paired(run.gamma[kind], run.psi)
        ax.plot(xs, ys, ".-", color="#2471a3", ms=3)
        _mark_stops(ax, run, kind)
        ax.set_xlabel(f"Γ ({kind})")
        ax.set_ylabel(run.psi_label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run.job_id}: Ψ against the other kinds of Γ")
    return _save(fig, path)


def patience_runs(checks_below: Series) -> list[tuple[int, int]]:
    """(first step, last step) of every run of successive checks with the ratio below η."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    prev: int | None = None
    for step, below in zip(checks_below.steps, checks_below.values, strict=True):
        if below >= 1:
            start = step if start is None else start
        elif start is not None and prev is not None:
            runs.append((start, prev))
            start = None
        prev = step
    if start is not None and prev is not None:
        runs.append((start, prev))
    return runs


def ratio_vs_eta(run: RunData, path: Path) -> Path | None:
    """The window ratio ΔΨ/ΔΓ and η over steps; runs of checks below η (the patience count) shaded."""
    if not run.ratio:
        return None
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    xs, ys = _finite(run.ratio.steps, run.ratio.values)
    ax.plot(xs, ys, ".-", color="#2471a3", label="ΔΨ/ΔΓ (window ratio)")
    if run.eta:
        ax.step(run.eta.steps, run.eta.values, where="post", color="#117a65", ls="--", label="η")
    for i, (a, b) in enumerate(patience_runs(run.checks_below)):
        ax.axvspan(a, b if b > a else a + 0.5, color=PATIENCE_COLOR, alpha=0.35, label=None if i else "ratio < η")
    for point, color, label in ((run.stop, STOP_COLOR, "stop"), (run.rule_stop, SHADOW_COLOR, "rule's stop")):
        if point is not None and point.step is not None:
            ax.axvline(point.step, color=color, lw=1.2, label=f"{label} @ step {point.step}")
    patience = f", patience {run.patience}" if run.patience is not None else ""
    ax.set_title(f"{run.job_id}: marginal return against η [{run.resource}{patience}]")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"Ψ per {run.resource}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def gamma_breakdown(run: RunData, path: Path) -> Path | None:
    """Γ of every kind over steps (one panel each, final value in the title), and energy per source with its CO₂."""
    kinds = [k for k, s in run.gamma.items() if s]
    if not kinds:
        return None
    panels = len(kinds) + (1 if run.energy_kwh else 0)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(rows, cols, i + 1)
        s = run.gamma[kind]
        ax.plot(s.steps, s.values, color=STOP_COLOR if kind == "co2_kg" else "#2471a3")
        ax.set_title(f"{kind}: {s.values[-1]:.4g}" + (" (rule)" if kind == run.resource else ""), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    if run.energy_kwh:
        ax = fig.add_subplot(rows, cols, panels)
        names = list(run.energy_kwh)
        kwh = [run.energy_kwh[n] for n in names]
        ax.barh(names, kwh, color="#2471a3")
        ax.set_xlabel("kWh", fontsize=8)
        ax.margins(x=0.6)  # room for the CO₂ labels right of the bars
        ax.tick_params(labelsize=7)
        final = run.gamma_final()
        if final.get("energy_kwh") and "co2_kg" in final:
            per_kwh = final["co2_kg"] / final["energy_kwh"]
            for y, value in enumerate(kwh):
                ax.annotate(f"{value * per_kwh:.3g} kg CO₂", (value, y), fontsize=7, va="center")
        ax.set_title("energy by source (CO₂ at the run's intensity)", fontsize=9)
    fig.suptitle(f"{run.job_id}: Γ by kind")
    return _save(fig, path)


def forecast(run: RunData, path: Path) -> Path | None:
    """The fitted Ψ(Γ) = Ψ∞ − A·Γ^(−b) over the measured points, up to the budget, with the η crossing."""
    fc = run.forecast
    if not fc or run.resource not in run.gamma:
        return None
    psi_inf, a, b = fc.get("psi_inf"), fc.get("scale_a"), fc.get("exponent_b")
    if psi_inf is None or a is None or b is None:
        return None
    xs, ys = _paired(run.gamma[run.resource], run.psi)
    positive = [x for x in xs if x > 0]
    if not positive:
        return None
    hi = max([*positive, *(v for v in (fc.get("budget"), fc.get("gamma_cross")) if v)])
    grid = np.geomspace(min(positive), hi, 200)
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    ax.plot(xs, ys, ".", color="#2471a3", label="measured Ψ")
    r2 = fc.get("r2")
    ax.plot(grid, psi_inf - a * grid ** (-b), "-", color="#117a65", label=f"fit (R² {r2:.3f})" if r2 else "fit")
    ax.axhline(psi_inf, color="grey", ls=":", lw=0.8, label=f"Ψ∞ = {psi_inf:.4g}")
    if fc.get("gamma_cross"):
        ax.axvline(fc["gamma_cross"], color=PATIENCE_COLOR, ls="--", label="fitted dΨ/dΓ = η")
    if fc.get("budget"):
        ax.axvline(fc["budget"], color="black", ls="--", lw=0.8, label="budget")
    _mark_stops(ax, run, run.resource)
    ax.set_xscale("log")
    ax.set_xlabel(f"Γ ({run.resource})")
    ax.set_ylabel(run.psi_label)
    ax.set_title(f"{run.job_id}: forecast")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def mass_heatmap(run: RunData, path: Path) -> Path | None:
    """Each submodule's share of the squared gradient norm (gradient mass) in each published blueprint version."""
    if not run.blueprints:
        return None
    ids: list[str] = []
    for bp in run.blueprints:
        ids.extend(e.id for e in bp.layers if e.id not in ids)
    grid = np.full((len(ids), len(run.blueprints)), np.nan)
    for j, bp in enumerate(run.blueprints):
        sq = {e.id: e.gradient_norm**2 for e in bp.layers}
        total = math.fsum(sq.values())
        for layer_id, value in sq.items():
            grid[ids.index(layer_id), j] = value / total if total > 0 else np.nan
    fig = Figure(figsize=(max(4.5, 1.1 * len(run.blueprints) + 3), max(3.0, 0.28 * len(ids) + 1.5)))
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of ‖g‖²")
    ax.set_xticks(range(len(run.blueprints)), [f"v{bp.blueprint_version}\nstep {bp.step}" for bp in run.blueprints])
    ax.set_yticks(range(len(ids)), ids, fontsize=7 if len(ids) > 20 else 9)
    # Two lines: the axes are narrow for few versions, and a one-line title would be cut at the figure's edge.
    ax.set_title(f"{run.job_id}:\ngradient mass per submodule across versions")
    return _save(fig, path)


def retained_mass(run: RunData, path: Path) -> Path | None:
    """m(k) ≈ k^γ of the latest version's submodules (the empirical γ where fitted), k* marked on each."""
    if not run.blueprints:
        return None
    bp = run.blueprints[-1]
    layers = [e for e in bp.layers if (e.gamma_fit or e.gamma)]
    if not layers:
        return None
    layers = sorted(layers, key=lambda e: -e.gradient_norm)[:MAX_MK_CURVES]
    k = np.geomspace(1e-3, 1.0, 200)
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    for entry in layers:
        gamma = float(entry.gamma_fit or entry.gamma or 1.0)
        (line,) = ax.plot(k, k**gamma, lw=1.2, label=f"{entry.id} (γ {gamma:.2f})")
        if entry.k_star is not None:
            ax.plot([entry.k_star], [entry.k_star**gamma], "*", ms=11, color=line.get_color(), mec="black", mew=0.5)
    ax.plot([], [], "*", color="grey", ms=11, label="k*")
    ax.set_xscale("log")
    ax.set_xlabel("k (fraction of parameters updated, largest gradients first)")
    ax.set_ylabel("m(k), retained gradient mass")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{run.job_id}: retained mass, blueprint v{bp.blueprint_version} (step {bp.step})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


MAX_TICK_LABELS = 60
"""A heatmap axis with more rows or columns than this is drawn without their names (they would overlap)."""


def cross_influence_heatmap(run: RunData, path: Path) -> Path | None:
    """The rank-r reconstruction T̂ = U·diag(σ)·Vᵀ (groups × blocks) of the newest version's cross-influence map."""
    bp = run.cross_influence_blueprint()
    if bp is None or bp.cross_influence is None:
        return None
    ci = bp.cross_influence
    grid = ci.approx()
    fig = Figure(
        figsize=(min(16.0, max(5.5, 0.35 * len(ci.blocks) + 3.5)), min(14.0, max(3.5, 0.3 * len(ci.groups) + 2)))
    )
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=f"T̂ (rank {ci.rank}): mean per-example ‖g‖")
    if len(ci.blocks) <= MAX_TICK_LABELS:
        ax.set_xticks(range(len(ci.blocks)), list(ci.blocks), rotation=60, ha="right", fontsize=7)
    if len(ci.groups) <= MAX_TICK_LABELS:
        ax.set_yticks(range(len(ci.groups)), list(ci.groups), fontsize=7 if len(ci.groups) > 20 else 9)
    ax.set_xlabel(f"data block ({ci.block_kind})")
    ax.set_ylabel("submodule group")
    ax.set_title(
        f"{run.job_id}: cross-influence, rank {ci.rank} ({ci.energy:.1%} of Σσ²),\n"
        f"blueprint v{bp.blueprint_version} (step {bp.step})"
    )
    return _save(fig, path)


def cross_influence_spectrum(run: RunData, path: Path) -> Path | None:
    """The map's singular values as bars (the kept ones coloured, the kept rank marked) and the cumulative share
    of Σσ² as a line: how much a rank-r summary leaves out."""
    bp = run.cross_influence_blueprint()
    if bp is None or bp.cross_influence is None:
        return None
    ci = bp.cross_influence
    s = np.asarray(ci.singular_values, dtype=float)
    k = np.arange(1, s.size + 1)
    total = float(np.sum(s**2))
    cumulative = np.cumsum(s**2) / total if total > 0 else np.ones_like(s)
    fig = Figure(figsize=(min(12.0, max(5.5, 0.3 * s.size + 3)), 4.2))
    ax = fig.add_subplot()
    ax.bar(k, s, color=["#2471a3" if i < ci.rank else "#bbbbbb" for i in range(s.size)], label="σ_k")
    ax.axvline(ci.rank + 0.5, color=STOP_COLOR, ls="--", lw=1.2, label=f"kept rank r = {ci.rank}")
    if s.size <= MAX_TICK_LABELS:
        ax.set_xticks(k)
    ax.set_xlabel("k")
    ax.set_ylabel("singular value σ_k")
    share = ax.twinx()
    share.plot(k, cumulative, "o-", color="#117a65", ms=3, label="cumulative share of Σσ²")
    share.set_ylim(0, 1.05)
    share.set_ylabel("cumulative share of Σσ²")
    lines = ax.get_legend_handles_labels()
    more = share.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    ax.set_title(f"{run.job_id}: singular values of the cross-influence map (v{bp.blueprint_version})")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def sweep_psi_vs_gamma(runs: Sequence[RunData], kind: str, path: Path) -> Path | None:
    """Ψ against Γ[kind] of every job of a sweep on one plot, each job's stop marked."""
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    drawn = 0
    for run in runs:
        if kind not in run.gamma:
            continue
        xs, ys = _paired(run.gamma[kind], run.psi)
        if not xs:
            continue
        (line,) = ax.plot(xs, ys, ".-", ms=3, label=run.label)
        drawn += 1
        if run.stop is not None and run.stop.step is not None:
            g, p = run.gamma[kind].at(run.stop.step), run.psi.at(run.stop.step)
            if g is not None and p is not None:
                ax.plot([g], [p], "o", ms=9, mfc="none", mec=line.get_color(), mew=2)
    if not drawn:
        return None
    ax.set_xlabel(f"Γ ({kind})")
    labels = {run.psi_label for run in runs}
    ax.set_ylabel(labels.pop() if len(labels) == 1 else "Ψ (the jobs define it differently: not comparable)")
    ax.set_title(f"sweep of {len(runs)} jobs: Ψ against Γ [{kind}] (circles: stop)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
