"""CPU and RAM energy from codecarbon's offline tracker, one per rank in `process` mode, measured when the rank's
sampler reads it (`measure`), not on codecarbon's own schedule: one thread per rank, and a reading is current.

Process mode attributes to this process its share of the CPU's power (TDP × this process's CPU load when there is
no RAPL, as here) and RAM power for its memory, so one tracker per rank sums correctly over the ranks of a node;
machine mode would count the whole node once per rank. codecarbon keeps its running totals in private attributes
(`_total_cpu_energy`, `_total_ram_energy`, updated by its scheduler every `measure_power_secs`); reading them here,
in one place, is the only way to get cumulative counters without stopping the tracker. Its measurement
(`_measure_power_and_energy`, what its scheduler calls) is called the same way; its scheduler is set to an interval
it never reaches in a job.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

J_PER_KWH = 3.6e6
OWN_SCHEDULE_S = 86_400.0
"""codecarbon's own measuring interval: a day, so that the sampler's `measure` calls are the ones that count."""


class CpuMeter:
    """Cumulative CPU and RAM energy (J) of this process, and how codecarbon measures them."""

    def __init__(self, *, country_iso_code: str) -> None:
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.tracker: Any = OfflineEmissionsTracker(
            country_iso_code=country_iso_code,
            measure_power_secs=OWN_SCHEDULE_S,
            output_methods=[],  # nothing written: the sampler reads the totals
            log_level="error",
            tracking_mode="process",
            allow_multiple_runs=True,
        )
        self.tracker.start()

    def measure(self) -> None:
        """Bring the totals up to now: power over the time since the last measurement (process CPU time, RSS)."""
        self.tracker._measure_power_and_energy()

    def energy_j(self) -> tuple[float, float]:
        """(cpu, ram) joules since start."""
        t = self.tracker
        return t._total_cpu_energy.kWh * J_PER_KWH, t._total_ram_energy.kWh * J_PER_KWH

    def method(self) -> str:
        """How CPU power is obtained: measured (RAPL/powermetrics) or estimated (TDP table, constant)."""
        cpu = next((h for h in self.tracker._hardware if type(h).__name__ == "CPU"), None)
        mode = getattr(cpu, "_mode", "unknown")
        tdp = getattr(cpu, "_tdp", None)
        model = " ".join(str(getattr(cpu, "_model", "") or "").split()) or "CPU model unknown"
        if mode in ("intel_rapl", "intel_power_gadget", "apple_powermetrics"):
            return f"codecarbon: {model}: CPU power measured ({mode})"
        return (
            f"codecarbon: {model}: CPU power estimated ({mode}, TDP {tdp} W × process load; no RAPL); "
            "RAM power estimated"
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # a tracker that failed to start must not break the worker's exit
            self.tracker.stop()
