"""Telemetry faults: energy counters that reset or wrap, a sampler thread that dies, wall-clock steps, duplicate and
out-of-order delivery. Γ stays exact against the energy the fake GPU was scripted to use, and never decreases."""

from __future__ import annotations

import itertools
import math
import random
import time
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.ledger import Metric, ResourceLedger, TelemetrySample
from orchestrator.core.resources import ResourceKind as K
from orchestrator.telemetry.clock import SteadyClock, steady_time
from orchestrator.telemetry.nvml import ENERGY_COUNTER_WRAP_MJ, CounterUnsupported
from orchestrator.telemetry.sampler import TelemetrySampler

POWER_W = 200.0
HOUR = 3600.0


class ScriptedGpus:
    """The seam (`GpuBackend`) for the GPUs this machine lacks. gpu0's NVML energy counter follows a script: a known
    amount of energy per reading, a counter that restarts from 0 (driver reload) at chosen readings and wraps at
    NVML's 64-bit modulus. gpu1 has no counter and draws a constant 200 W. `die_at` ends the sampler thread from
    inside a reading with an exception that is not an `Exception` (as SystemExit does)."""

    def __init__(self, *, counter_mj: int = 10**9, reset_at: frozenset[int] = frozenset(), die_at: int = 0) -> None:
        self.counter = counter_mj  # the raw counter NVML returns: mJ since driver load
        self.reset_at = reset_at
        self.die_at = die_at
        self.calls = 0
        self.used_mj = [0]  # used_mj[n]: energy gpu0 really used up to its n-th counter read (exact integers)

    def device_count(self) -> int:
        return 2

    def name(self, i: int) -> str:
        return f"Fake H100 #{i}"

    def total_energy_mj(self, i: int) -> float:
        if i == 1:
            raise CounterUnsupported("not supported")
        self.calls += 1
        used = 40_000 + 1_000 * (self.calls % 7)
        if self.calls in self.reset_at:
            self.counter = 0  # the driver reloaded just after the previous reading
        self.counter = (self.counter + used) % int(ENERGY_COUNTER_WRAP_MJ)
        self.used_mj.append(self.used_mj[-1] + used)
        return float(self.counter)

    def power_mw(self, i: int) -> float:
        return POWER_W * 1000.0

    def memory_used_bytes(self, i: int) -> float:
        if self.calls == self.die_at:
            self.die_at = 0
            raise SystemExit("sampler thread killed")
        return 8e9

    def injected_j(self) -> float:
        """gpu0's energy from the sampler's first reading to its last (read 1 is the sampler's probe at start-up,
        read 2 its first reading: the baseline)."""
        return (self.used_mj[-1] - self.used_mj[2]) / 1000.0


class Clocks:
    """A wall clock that NTP or an operator steps (`steps`: tick → seconds added from then on), a monotonic clock that
    does not see the steps. One second passes per call of either."""

    def __init__(self, steps: dict[int, float] | None = None) -> None:
        self.steps = steps or {}
        self.tick = 0

    def monotonic(self) -> float:
        self.tick += 1
        return float(self.tick)

    def wall(self) -> float:
        self.tick += 1
        return 1.7e9 + self.tick + sum(s for at, s in self.steps.items() if self.tick >= at)


def new_sampler(gpus: ScriptedGpus, clock, sink=None, interval_s: float = 3600) -> TelemetrySampler:
    return TelemetrySampler(
        source_prefix="n0/rank0",
        sink=sink or (lambda batch: None),
        interval_s=interval_s,
        nvml=True,
        codecarbon=False,
        country_iso_code="USA",
        codecarbon_measure_s=1,
        gpu_backend=gpus,
        clock=clock,
    )


def fed(samples: list[TelemetrySample]) -> ResourceLedger:
    ledger = ResourceLedger()
    ledger.add_many(samples)
    return ledger


STEPS = {12: HOUR, 25: -HOUR, 45: -HOUR}  # forward 1 h, back, and back again: net one hour behind
RESETS = frozenset({15, 40})
N_READINGS = 60  # more than the ledger's tail (32 points a series): late samples must land inside it


@cache
def scripted_run(steady: bool = True) -> tuple[tuple[TelemetrySample, ...], float]:
    """60 readings through resets and ±1 h clock steps; the samples and gpu0's injected energy."""
    clocks, gpus = Clocks(STEPS), ScriptedGpus(reset_at=RESETS)
    clock = SteadyClock(wall=clocks.wall, monotonic=clocks.monotonic) if steady else clocks.wall
    sampler = new_sampler(gpus, clock)
    samples = [x for _ in range(N_READINGS) for x in sampler.read()]
    return tuple(samples), gpus.injected_j()


# -- the clock -----------------------------------------------------------------------------------------------
def test_steady_clock_ignores_wall_steps_and_keeps_the_wall_scale() -> None:
    clocks = Clocks({5: HOUR, 8: -2 * HOUR})
    clock = SteadyClock(wall=clocks.wall, monotonic=clocks.monotonic)
    stamps = [clock() for _ in range(10)]
    assert all(b - a == 1.0 for a, b in itertools.pairwise(stamps))  # one second a tick, steps or not
    assert stamps[0] == pytest.approx(1.7e9, abs=10)  # on the wall-clock scale
    now = [steady_time() for _ in range(100)]
    assert now == sorted(now) and abs(now[-1] - time.time()) < 5


def test_wall_clock_steps_neither_fake_a_reset_nor_inflate_wall_hours() -> None:
    samples, injected = scripted_run()
    ledger = fed(list(samples))
    span_s = N_READINGS - 1  # one second of monotonic time between readings
    by_source = ledger.energy_j_by_source()
    assert by_source["n0/rank0/gpu0"] == pytest.approx(injected, rel=1e-12)
    assert by_source["n0/rank0/gpu1"] == pytest.approx(POWER_W * span_s, rel=1e-12)
    totals = ledger.totals()
    assert totals[K.WALL_HOURS] == pytest.approx(span_s / HOUR, rel=1e-12)
    assert totals[K.ENERGY_KWH] * 3.6e6 == pytest.approx(injected + POWER_W * span_s, rel=1e-12)
    assert totals[K.GPU_HOURS] == pytest.approx(2 * span_s / HOUR, rel=1e-12)
    stamps = [x.t_s for x in samples if x.metric is Metric.ENERGY_J]
    assert stamps == sorted(stamps) and len(set(stamps)) == N_READINGS

    # The same script stamped with the raw wall clock: what the step-free clock prevents.
    raw, _ = scripted_run(steady=False)
    wrong = fed(list(raw))
    assert wrong.energy_j_by_source()["n0/rank0/gpu0"] > 100 * injected  # reordered: the counter looks reset
    assert wrong.totals()[K.WALL_HOURS] > 1.0  # an hour nobody spent


def test_counter_resets_count_only_the_energy_used() -> None:
    # At the first reading after the baseline, and later. (A counter that resets and climbs past its last reading
    # before the next one is indistinguishable from growth; no reader can count what it used before the reset.)
    gpus, clocks = ScriptedGpus(reset_at=frozenset({3, 7, 12})), Clocks()
    sampler = new_sampler(gpus, SteadyClock(wall=clocks.wall, monotonic=clocks.monotonic))
    samples = [x for _ in range(12) for x in sampler.read()]
    energy = [x.value for x in samples if x.metric is Metric.ENERGY_J]
    assert [i for i in range(1, 12) if energy[i] < energy[i - 1]] == [1, 5, 10]  # the script's resets (read n + 2)
    assert fed(samples).energy_j_by_source()["n0/rank0/gpu0"] == pytest.approx(gpus.injected_j(), rel=1e-12)


def test_counter_wrap_at_nvmls_modulus_is_a_wrap_not_a_reset() -> None:
    # 100 J below 2^64 mJ: the counter wraps between the 1st and 2nd readings (17 J before the modulus, 26 J after).
    gpus = ScriptedGpus(counter_mj=int(ENERGY_COUNTER_WRAP_MJ) - 100_000)
    clocks = Clocks()
    sampler = new_sampler(gpus, SteadyClock(wall=clocks.wall, monotonic=clocks.monotonic))
    samples = [x for _ in range(10) for x in sampler.read()]
    energy = [x for x in samples if x.metric is Metric.ENERGY_J]
    assert energy[1].value < energy[0].value and energy[0].counter_wrap == ENERGY_COUNTER_WRAP_MJ / 1000
    # Near 2^64 mJ (585,000 years at 1 kW) a float in J has a 4 J grid: that much, not the 17 J a reset would lose.
    grid = math.ulp(ENERGY_COUNTER_WRAP_MJ / 1000)
    got = fed(samples).energy_j_by_source()["n0/rank0/gpu0"]
    assert abs(got - gpus.injected_j()) <= 2 * grid < 17


# -- a sampler that dies -------------------------------------------------------------------------------------
class FlakyClock:
    """A clock that raises once, at its `fail_at`-th call: an error outside any one source's reading."""

    def __init__(self, clock, fail_at: int) -> None:
        self.clock, self.fail_at, self.calls = clock, fail_at, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("clock source unavailable")
        return self.clock()


def wait_for(condition, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.002)


def test_a_sampler_thread_that_dies_is_restarted_and_no_energy_is_lost() -> None:
    got: list[TelemetrySample] = []
    clocks = Clocks()
    gpus = ScriptedGpus(reset_at=frozenset({9}), die_at=12)
    steady = SteadyClock(wall=clocks.wall, monotonic=clocks.monotonic)
    flaky = FlakyClock(steady, fail_at=5)
    sampler = new_sampler(gpus, flaky, got.extend, interval_s=0.001)
    assert not sampler.ensure_alive()  # not started: nothing to restart
    sampler.start()
    wait_for(lambda: gpus.die_at == 0)  # the reading that ends the thread has run
    wait_for(sampler.ensure_alive)  # seen dead (once its thread has ended) and restarted
    assert sampler.restarts == 1 and not sampler.ensure_alive()
    assert any(e.startswith("sampler: RuntimeError: clock source") for e in sampler.errors)  # survived that one
    assert any(e.startswith("sampler thread died: SystemExit") for e in sampler.errors)
    dead_at = gpus.calls
    wait_for(lambda: gpus.calls >= dead_at + 10)
    sampler.stop()
    assert not sampler.ensure_alive()  # stopped on purpose: stays stopped

    ids = [x.sample_id for x in got]
    assert len(ids) == len(set(ids))  # sequence numbers went on after the restart
    energy = [x for x in got if x.metric is Metric.ENERGY_J]
    seqs = [int(x.sample_id.rsplit("/", 1)[1]) for x in energy]
    assert seqs == sorted(seqs) and len(seqs) < seqs[-1]  # the killed reading (and the clock's failure) left gaps
    ledger = fed(got)
    assert ledger.n_duplicates == 0 and ledger.n_rejected == 0
    by_source = ledger.energy_j_by_source()
    assert by_source["n0/rank0/gpu0"] == pytest.approx(gpus.injected_j(), rel=1e-12)  # the gap spanned exactly
    span_s = ledger.totals()[K.WALL_HOURS] * HOUR
    assert span_s == pytest.approx(flaky.calls - 2, rel=1e-12)  # one second per stamp (the failed call has none)
    assert by_source["n0/rank0/gpu1"] == pytest.approx(POWER_W * span_s, rel=1e-12)


# -- duplicate and out-of-order delivery ---------------------------------------------------------------------
@st.composite
def deliveries(draw, n: int) -> list[int]:
    """An order of delivery for n samples: shuffled within chunks of up to 150 (25 readings of 6 samples, so no
    sample comes after more than 24 later ones of its series, well inside the ledger's 32-point tail), plus
    duplicates of any sample anywhere."""
    chunk = draw(st.integers(1, 150))
    rng = draw(st.randoms(use_true_random=False))
    order: list[int] = []
    for start in range(0, n, chunk):
        part = list(range(start, min(n, start + chunk)))
        rng.shuffle(part)
        order += part
    for _ in range(draw(st.integers(0, 60))):
        order.insert(rng.randrange(len(order) + 1), rng.randrange(n))
    return order


@settings(max_examples=60)
@given(data=st.data())
def test_any_shuffle_with_duplicates_gives_the_in_order_totals_and_never_decreases(data) -> None:
    samples, injected = scripted_run()
    in_order = fed(list(samples))
    expected = in_order.exact_totals()
    ledger = ResourceLedger()
    seen: dict[K, float] = {}
    for i in data.draw(deliveries(len(samples))):
        ledger.add(samples[i])
        for kind, value in ledger.totals().items():
            assert value >= seen.get(kind, -math.inf)  # Γ never decreases, at every step of the feed
            seen[kind] = value
        assert set(seen) == set(ledger.totals())  # and no kind, once measured, disappears
    assert ledger.n_added == len(samples)  # every reading counted once: none lost as late, none twice
    assert ledger.exact_totals() == expected  # exactly the in-order floats
    totals = ledger.totals()
    assert totals[K.ENERGY_KWH] * 3.6e6 == pytest.approx(injected + POWER_W * (N_READINGS - 1), rel=1e-12)
    assert totals[K.WALL_HOURS] == pytest.approx((N_READINGS - 1) / HOUR, rel=1e-12)


def test_a_replayed_batch_after_a_sink_retry_changes_nothing() -> None:
    samples, _ = scripted_run()
    batches = [list(samples[i : i + 6]) for i in range(0, len(samples), 6)]
    rng = random.Random(7)
    ledger = ResourceLedger()
    for k, batch in enumerate(batches):
        ledger.add_many(batch)
        if k and rng.random() < 0.5:  # the sink's call timed out after delivering: the sampler's batch comes again
            ledger.add_many(batches[k - 1] + batch)
    assert ledger.exact_totals() == fed(list(samples)).exact_totals()


def test_readings_are_kept_until_a_check_asks_and_none_is_lost() -> None:
    """One call to the controller per check, not per reading: readings wait for `flush` (or `send_every_s`), and
    `stop` sends what is left, so every reading arrives once and in order."""
    calls: list[list[TelemetrySample]] = []
    clocks = Clocks()
    sampler = new_sampler(ScriptedGpus(), SteadyClock(wall=clocks.wall, monotonic=clocks.monotonic), calls.append)
    sampler.interval_s, sampler.send_every_s = 0.001, 3600.0
    sampler.start()  # the baseline goes at once
    assert len(calls) == 1
    wait_for(lambda: sampler._seq >= 20)  # readings taken, none sent
    assert len(calls) == 1
    sampler.flush()
    wait_for(lambda: len(calls) == 2)
    assert len({x.sample_id.rsplit("/", 1)[1] for x in calls[1]}) >= 19  # every reading since, in one call
    sampler.stop()
    ids = [x.sample_id for batch in calls for x in batch]
    seqs = [int(i.rsplit("/", 1)[1]) for i in ids if i.startswith("n0/rank0/gpu0/energy")]
    assert len(ids) == len(set(ids)) and seqs == list(range(1, len(seqs) + 1))  # none lost, none twice, in order
    assert sampler.readings_sent == len(ids)
