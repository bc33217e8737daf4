"""Telemetry: a fake GPU (this machine has none: the only fake, behind the `GpuBackend` seam) and real codecarbon."""

from __future__ import annotations

import time

import pytest

from orchestrator.core.ledger import Metric, ResourceLedger
from orchestrator.core.resources import ResourceKind
from orchestrator.errors import InputError
from orchestrator.telemetry.carbon import carbon_intensity_kg_per_kwh
from orchestrator.telemetry.nvml import CounterUnsupported
from orchestrator.telemetry.sampler import TelemetrySampler


class FakeGpus:
    """Fakes NVML for two GPUs this machine lacks: gpu0 has an energy counter (+50 J a reading), gpu1 only power."""

    def __init__(self) -> None:
        self.reads = 0
        self.fail = False

    def device_count(self) -> int:
        return 2

    def name(self, i: int) -> str:
        return f"Fake H100 #{i}"

    def total_energy_mj(self, i: int) -> float:
        if i == 1:
            raise CounterUnsupported("not supported")
        if self.fail:
            raise RuntimeError("GPU fell off the bus")
        self.reads += 1
        return 1e9 + 50_000.0 * self.reads  # NVML counts from driver load: a large baseline

    def power_mw(self, i: int) -> float:
        return 200_000.0

    def memory_used_bytes(self, i: int) -> float:
        return 8e9


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def sampler(gpus: FakeGpus, sink, **kw) -> TelemetrySampler:
    return TelemetrySampler(
        source_prefix="n0/rank0",
        sink=sink,
        interval_s=3600,
        nvml=True,
        codecarbon=False,
        country_iso_code="USA",
        codecarbon_measure_s=1,
        gpu_backend=gpus,
        clock=Clock(),
        **kw,
    )


def test_gpu_counter_and_power_fallback_feed_the_ledger() -> None:
    got: list = []
    gpus = FakeGpus()
    s = sampler(gpus, got.extend)
    for _ in range(5):
        got.extend(s.read())
    ledger = ResourceLedger()
    ledger.add_many(got)
    by_source = ledger.energy_j_by_source()
    total_counter_j = 50.0 * 4  # 5 readings: the first is the baseline, 4 increments of 50 J
    assert by_source["n0/rank0/gpu0"] == pytest.approx(total_counter_j)
    assert by_source["n0/rank0/gpu1"] == pytest.approx(200.0 * 4)  # 200 W over 4 s (trapezoid)
    totals = ledger.totals()
    assert totals[ResourceKind.GPU_HOURS] == pytest.approx(2 * 4 / 3600)
    assert totals[ResourceKind.VRAM_GB_HOURS] == pytest.approx(2 * 8 * 4 / 3600)
    assert [x.method for x in s.sources()] == ["counter", "power", "absent", "absent"]
    assert any("integrating NVML power" in f for f in s.fallbacks())


def test_a_failing_reading_does_not_kill_the_sampler() -> None:
    gpus = FakeGpus()
    s = sampler(gpus, lambda b: None)
    gpus.fail = True
    s.read()
    gpus.fail = False
    assert s.n_errors == 1 and "fell off" in s.errors[0]
    assert any(x.metric is Metric.ENERGY_J for x in s.read())


def test_real_codecarbon_here_no_gpu_reported_absent_not_zero() -> None:
    got: list = []
    s = TelemetrySampler(
        source_prefix="n0/rank0",
        sink=got.extend,
        interval_s=0.5,
        nvml=True,
        codecarbon=True,
        country_iso_code="USA",
        codecarbon_measure_s=0.5,
    )
    s.start()
    end = time.time() + 2.5
    x = 0
    while time.time() < end:
        x += 1
    s.stop()
    s.stop()  # idempotent
    assert not any("gpu" in x.source for x in got)
    assert any("gpu" in a and "nvml" in a.lower() for a in s.absent())
    cpu = [x.value for x in got if x.source.endswith("/cpu")]
    assert len(cpu) >= 3 and cpu == sorted(cpu) and cpu[-1] > 0
    ledger = ResourceLedger(carbon_intensity_kg_per_kwh=carbon_intensity_kg_per_kwh("USA"))
    ledger.add_many(got)
    assert ledger.totals()[ResourceKind.ENERGY_KWH] > 0 and ledger.totals()[ResourceKind.CO2_KG] > 0
    assert s.readings_sent == len(got) and any("estimated" in f for f in s.fallbacks())


def test_carbon_intensity() -> None:
    assert 0.05 < carbon_intensity_kg_per_kwh("USA") < 1.5
    with pytest.raises(InputError) as err:
        carbon_intensity_kg_per_kwh("ZZZ")
    assert err.value.field == "telemetry.country_iso_code"
