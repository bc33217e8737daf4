"""The leaderboard's pure ranking (CPR, baselines, groups by evaluation set, --by, missing kinds), its carbon card,
and its renderers (CSV parses back, Markdown's table shape, HTML is one offline page)."""

from __future__ import annotations

import csv
import io
import math
import re

import pytest

from orchestrator.errors import InputError
from orchestrator.leaderboard.card import carbon_card
from orchestrator.leaderboard.rank import Entry, rank
from orchestrator.leaderboard.render import CSV_HEADER, to_csv, to_html, to_markdown


def e(job: str, psi: float | None, *, fp: str | None = "fp1", **kw) -> Entry:
    kw.setdefault("gamma", {"energy_kwh": 2.0, "tokens": 1000.0})
    kw.setdefault("psi_untrained_estimate", -math.log(100))
    return Entry(run_id="r-" + job, job_id=job, psi=psi, eval_set=fp, **kw)


def test_cpr_ranks_each_group_apart_and_says_why() -> None:
    board = rank(
        [e("a", -3.0), e("b", -2.0, gamma={"energy_kwh": 4.0}), e("c", -4.0, fp="fp2"), e("s", -1, kind="select")]
    )
    assert board.by == "energy_kwh"
    first, second = board.groups
    assert [(r.rank, r.entry.job_id) for r in first.rows] == [(1, "a"), (2, "b")]  # (−3+4.6)/2 > (−2+4.6)/4
    assert first.rows[0].cpr == pytest.approx((-3.0 + math.log(100)) / 2.0)
    assert "fp1" in first.why and "comparable" in first.why and second.eval_set == "fp2"
    assert [x.job_id for x in board.set_apart] == ["s"]


def test_baselines_step0_then_estimate_then_named_run() -> None:
    board = rank([e("a", -3.0, psi_initial=-5.0), e("b", -3.0, psi_untrained_estimate=None)])
    a, b = board.groups[0].rows
    assert (a.baseline, a.baseline_source, a.cpr) == (-5.0, "Ψ at step 0", 1.0)
    assert (b.rank, b.cpr, b.note) == (None, None, "no baseline: give --baseline RUN")  # not ranked, last
    named = rank([e("a", -3.0), e("b", -2.0)], baseline=e("a", -3.0))
    assert [(r.entry.job_id, r.cpr, r.baseline_source) for r in named.groups[0].rows] == [
        ("b", 0.5, "run a"),
        ("a", 0.0, "run a"),
    ]


def test_by_each_kind_and_refusals() -> None:
    runs = [e("a", -3.0, gamma={"tokens": 10.0}), e("b", -2.0, gamma={"tokens": 100.0, "flops": 1.0})]
    assert rank(runs).by == "tokens"  # no energy measured: tokens
    assert [r.entry.job_id for r in rank(runs, by="flops").groups[0].rows] == ["b", "a"]
    assert rank(runs, by="flops").groups[0].rows[1].note == "flops not measured"
    with pytest.raises(InputError, match=r"--by.*no run selected measured gpu_hours"):
        rank(runs, by="gpu_hours")
    with pytest.raises(InputError, match=r"--by.*unknown resource kind 'watts'"):
        rank(runs, by="watts")


def test_carbon_card_says_how_each_value_was_measured() -> None:
    tags = {
        "cpr.hardware": "cpu: codecarbon: AMD EPYC: CPU power estimated (cpu_load, TDP 8 W); RAM power estimated",
        "cpr.fallbacks": "n/rank0/cpu: codecarbon: CPU power estimated",
        "cpr.absent_sources": "n/rank0/gpu: no NVML",
    }
    card = carbon_card(tags, {"telemetry.country_iso_code": "FRA", "cluster.num_workers": "2"}, {"energy_kwh": 0.5})
    assert card.energy_method == "codecarbon TDP estimate + codecarbon RAM estimate" and card.co2_kg is None
    assert card.ranks == 2 and len(card.estimates) == 2 and card.grid_source == "none"
    gpu = carbon_card({"cpr.hardware": "gpu: H200: NVML total-energy counter"}, {}, {"energy_kwh": 1, "co2_kg": 0.4})
    assert (gpu.energy_method, gpu.grid_g_per_kwh) == ("NVML counter", 400.0)


def test_renderers() -> None:
    board = rank([e("a", -3.0), e("b|x", -2.0), e("c", -4.0, fp=None)])
    rows = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert tuple(rows[0]) == CSV_HEADER and [r["job_id"] for r in rows] == ["b|x", "a", "c"]
    assert float(rows[0]["cpr"]) == board.groups[0].rows[0].cpr
    md = to_markdown(board)
    tables = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len({len(re.split(r"(?<!\\)\|", ln)) for ln in tables}) == 1 and "not recorded" in md
    page = to_html(board)
    assert page.startswith("<!DOCTYPE html>") and page.count("<html") == 1 and "Carbon disclosure" in page
    assert not re.search(r"https?://|<script|<link|src=", page)
