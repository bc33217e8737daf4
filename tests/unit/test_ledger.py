"""The resource ledger: counters through resets and wraps, idempotent, order-independent, monotone."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.flops import FlopsModel
from orchestrator.core.ledger import AddResult, Metric, ResourceLedger, TelemetrySample, counter_increment
from orchestrator.core.resources import ResourceKind as K


def sample(source, metric, t, value, i=None, wrap=None):
    return TelemetrySample(
        sample_id=f"{source}/{metric}/{i if i is not None else t}",
        source=source,
        metric=Metric(metric),
        t_s=float(t),
        value=float(value),
        counter_wrap=wrap,
    )


@st.composite
def telemetry(draw):
    """Several sources, each a time series of power, memory, gpu count, an energy counter (with resets) and tokens."""
    out = []
    for src in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 12))
        times = sorted(draw(st.lists(st.floats(0, 1e4), min_size=n, max_size=n, unique=True)))
        for metric, strat in [
            ("power_w", st.floats(0, 700)),
            ("memory_gb", st.floats(0, 80)),
            ("gpu_count", st.integers(0, 8)),
            ("energy_j", st.floats(0, 1e6)),
            ("tokens", st.integers(0, 10**7)),
        ]:
            if draw(st.booleans()):
                out += [sample(f"s{src}", metric, t, draw(strat)) for t in times]
    return out


def fresh():
    return ResourceLedger(
        flops_model=FlopsModel(n_matmul_params=1000, n_layers=2, d_model=16, seq_len=8), carbon_intensity_kg_per_kwh=0.4
    )


@settings(max_examples=80)
@given(samples=telemetry(), seed=st.integers(0, 2**32 - 1))
def test_order_independent_idempotent_and_monotone(samples, seed):
    in_order = fresh()
    in_order.add_many(samples)
    expected = in_order.exact_totals()

    shuffled = samples + samples[: len(samples) // 2]  # duplicates too
    random.Random(seed).shuffle(shuffled)
    ledger = fresh()
    seen: dict[K, float] = {}
    for s in shuffled:
        ledger.add(s)
        totals = ledger.totals()
        for kind, value in totals.items():
            assert value >= seen.get(kind, -math.inf)  # never decreasing
            seen[kind] = value
    assert ledger.exact_totals() == expected  # exactly, not approximately: same sorted summation order
    assert ledger.n_added == len(samples)
    assert ledger.n_duplicates == len(samples) // 2

    for s in samples:  # replaying every sample again changes nothing
        assert ledger.add(s) is AddResult.DUPLICATE
    assert ledger.exact_totals() == expected


def test_trapezoid_of_power_is_exact_energy():
    ledger = ResourceLedger()
    # 100 W for 1 h, ramping to 300 W over the next hour: 100 Wh + 200 Wh = 0.3 kWh
    ledger.add_many(
        [sample("gpu0", "power_w", 0, 100), sample("gpu0", "power_w", 3600, 100), sample("gpu0", "power_w", 7200, 300)]
    )
    assert ledger.totals() == {K.ENERGY_KWH: pytest.approx(0.3), K.WALL_HOURS: 2.0}


def test_counter_resets_and_wraps_are_counted_once():
    wrap = 1000.0
    readings = [100, 400, 900, 50, 300, 20, 80]  # wrap after 900 (→ +150), reset after 300 (→ +20)
    ledger = ResourceLedger()
    for i, r in enumerate(readings):
        ledger.add(sample("gpu0", "energy_j", i, r, wrap=wrap))
    truth = 300 + 500 + 150 + 250 + 20 + 60
    assert ledger.totals()[K.ENERGY_KWH] * 3.6e6 == pytest.approx(truth)
    assert counter_increment(900, 50, wrap) == 150
    assert counter_increment(300, 20, wrap) == 20  # a drop of less than half the modulus is a reset
    assert counter_increment(300, 20, None) == 20


def test_counter_takes_precedence_over_power_for_the_same_source():
    ledger = ResourceLedger()
    ledger.add_many([sample("gpu0", "power_w", 0, 1000), sample("gpu0", "power_w", 10, 1000)])
    ledger.add_many([sample("gpu0", "energy_j", 0, 5), sample("gpu0", "energy_j", 10, 7005)])
    ledger.add_many([sample("gpu1", "power_w", 0, 100), sample("gpu1", "power_w", 10, 100)])
    assert ledger.energy_j_by_source() == {"gpu0": 7000.0, "gpu1": 1000.0}


def test_absent_kinds_are_absent_not_zero():
    ledger = ResourceLedger(carbon_intensity_kg_per_kwh=0.5)
    assert ledger.totals() == {}
    ledger.add_many([sample("rank0", "tokens", 0, 0), sample("rank0", "tokens", 5, 4096)])
    totals = ledger.totals()
    assert set(totals) == {K.TOKENS, K.WALL_HOURS}  # no energy source: no energy, no CO2, no flops model: no flops
    with pytest.raises(KeyError, match="energy_kwh"):
        ledger.gamma(K.ENERGY_KWH)


def test_flops_gpu_hours_vram_and_co2():
    fm = FlopsModel(n_matmul_params=2_000_000, n_layers=4, d_model=128, seq_len=128)
    ledger = ResourceLedger(flops_model=fm, carbon_intensity_kg_per_kwh=0.4)
    for r in range(2):
        ledger.add_many([sample(f"rank{r}", "tokens", 0, 0), sample(f"rank{r}", "tokens", 3600, 1000)])
        ledger.add_many([sample(f"gpu{r}", "gpu_count", 0, 1), sample(f"gpu{r}", "gpu_count", 3600, 1)])
        ledger.add_many([sample(f"gpu{r}", "memory_gb", 0, 10), sample(f"gpu{r}", "memory_gb", 3600, 30)])
        ledger.add_many([sample(f"gpu{r}", "energy_j", 0, 0), sample(f"gpu{r}", "energy_j", 3600, 1.8e6)])
    t = ledger.totals()
    assert t[K.TOKENS] == 2000
    assert t[K.FLOPS] == pytest.approx(2000 * (6 * 2_000_000 + 12 * 4 * 128 * 128))
    assert t[K.GPU_HOURS] == pytest.approx(2.0)
    assert t[K.VRAM_GB_HOURS] == pytest.approx(40.0)
    assert t[K.ENERGY_KWH] == pytest.approx(1.0)
    assert t[K.CO2_KG] == pytest.approx(0.4)


def test_bad_readings_are_rejected_and_counted():
    ledger = ResourceLedger()
    for v in (math.nan, math.inf, -1.0):
        assert ledger.add(sample("gpu0", "power_w", 1, v, i=str(v))) is AddResult.REJECTED
    assert ledger.add(sample("gpu0", "power_w", math.nan, 1, i="t")) is AddResult.REJECTED
    assert ledger.n_rejected == 4 and ledger.totals() == {}


def test_a_late_sample_never_lowers_the_reported_total():
    ledger = ResourceLedger()
    ledger.add_many([sample("gpu0", "power_w", 0, 100), sample("gpu0", "power_w", 100, 100)])
    before = ledger.totals()[K.ENERGY_KWH]
    ledger.add(sample("gpu0", "power_w", 50, 0))  # the exact estimate drops by half
    assert ledger.exact_totals()[K.ENERGY_KWH] == pytest.approx(before / 2)
    assert ledger.totals()[K.ENERGY_KWH] == before


@settings(max_examples=30)
@given(samples=telemetry())
def test_state_round_trips_through_json(samples):
    ledger = fresh()
    ledger.add_many(samples)
    ledger.totals()
    restored = ResourceLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert restored.exact_totals() == ledger.exact_totals()
    assert restored.totals() == ledger.totals()
    assert restored.to_dict() == ledger.to_dict()
