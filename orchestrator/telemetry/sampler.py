"""A per-rank sampler thread: reads every present source each interval and hands the readings to a sink in batches.

It never blocks a training step: it runs in its own thread and its sink (in production a Ray `.remote()` call)
returns at once. Readings are kept and sent together every `send_every_s`, or at once when the rank asks (`flush`,
a non-blocking call the rank makes at each evaluation check, so the controller's Γ at a check is as fresh as a
reading can be): one call to the controller per check instead of one per interval (docs/overhead.md).
A source that is absent (no GPU, no NVML) is listed as absent with the reason and emits no
samples — never zeros. A failed reading is counted and kept in `errors`; the thread goes on, and survives any other
`Exception` the same way. Should it die all the same, `ensure_alive()` (called at every report) restarts it with the
same sources and sequence numbers, so the cumulative counters span the gap. Samples are stamped by a step-free clock
(`SteadyClock`): a wall-clock step can neither reorder a counter series nor inflate wall hours.
"""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.core.ledger import Metric, TelemetrySample
from orchestrator.telemetry.clock import steady_time
from orchestrator.telemetry.nvml import ENERGY_COUNTER_WRAP_MJ, CounterUnsupported, GpuBackend, open_gpu_backend

MAX_ERRORS_KEPT = 20
SEND_EVERY_S = 10.0
"""The longest readings wait before they are sent when no check asks for them."""


@dataclass(frozen=True, kw_only=True)
class SourceStatus:
    name: str
    kind: str
    """gpu | cpu | ram"""
    present: bool
    method: str
    """counter | power | estimate | absent"""
    detail: str


def ray_node_id() -> str | None:
    """The Ray node id of this process, or None outside a Ray worker or driver (Ray is never imported here)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def node_name(node_id: str | None = None) -> str:
    """A short stable name for this node: its host name, then the first 8 hex digits of its Ray node id when there
    is one (`node_id`, else this process's), so that two Ray nodes on one host (`ray start` twice) stay apart."""
    host = socket.gethostname().split(".")[0] or "node"
    node_id = node_id or ray_node_id()
    return f"{host}-{node_id[:8]}" if node_id else host


class TelemetrySampler:
    def __init__(
        self,
        *,
        source_prefix: str,
        sink: Callable[[list[TelemetrySample]], None],
        interval_s: float,
        nvml: bool,
        codecarbon: bool,
        country_iso_code: str,
        codecarbon_measure_s: float,
        gpu_backend: GpuBackend | None = None,
        clock: Callable[[], float] = steady_time,
        send_every_s: float = SEND_EVERY_S,
    ) -> None:
        """`clock` stamps the samples: this process's step-free wall time unless a test injects one."""
        self.prefix = source_prefix
        self.sink = sink
        self.interval_s = interval_s
        self.send_every_s = send_every_s
        self.codecarbon_measure_s = codecarbon_measure_s
        self._measured_at = -math.inf
        self.clock = clock
        self._unsent: list[TelemetrySample] = []
        self._sent_at = time.monotonic()
        self._wake = threading.Event()
        self.errors: list[str] = []
        self.n_errors = 0
        self.readings_sent = 0
        self.restarts = 0
        """Times `ensure_alive` found the thread dead and started it again."""
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._statuses: list[SourceStatus] = []
        self.gpu = gpu_backend
        self._gpu_counter: dict[int, bool] = {}
        if nvml and self.gpu is None:
            self.gpu, why = open_gpu_backend()
        else:
            why = "nvml: turned off (telemetry.nvml=false or a CPU job)"
        if self.gpu is None:
            self._statuses.append(
                SourceStatus(name=f"{self.prefix}/gpu", kind="gpu", present=False, method="absent", detail=why)
            )
        else:
            for i in range(self.gpu.device_count()):
                try:
                    self.gpu.total_energy_mj(i)
                    self._gpu_counter[i] = True
                    method, detail = "counter", f"{self.gpu.name(i)}: NVML total-energy counter"
                except CounterUnsupported:
                    self._gpu_counter[i] = False
                    method, detail = "power", f"{self.gpu.name(i)}: no energy counter, integrating NVML power"
                self._statuses.append(
                    SourceStatus(name=f"{self.prefix}/gpu{i}", kind="gpu", present=True, method=method, detail=detail)
                )
        self.cpu = None
        method, present, detail = "absent", False, "codecarbon: turned off"
        if codecarbon:
            try:
                from orchestrator.telemetry.cpu import CpuMeter

                self.cpu = CpuMeter(country_iso_code=country_iso_code)
                detail, present = self.cpu.method(), True
                method = "estimate" if "estimated" in detail else "counter"
            except Exception as exc:
                detail = f"codecarbon: {' '.join(str(exc).split())}"
        for kind in ("cpu", "ram"):
            self._statuses.append(
                SourceStatus(name=f"{self.prefix}/{kind}", kind=kind, present=present, method=method, detail=detail)
            )

    # -- status ----------------------------------------------------------------------------------------------
    def sources(self) -> list[SourceStatus]:
        return list(self._statuses)

    def absent(self) -> list[str]:
        return [f"{s.name} ({s.detail})" for s in self._statuses if not s.present]

    def fallbacks(self) -> list[str]:
        return [f"{s.name}: {s.detail}" for s in self._statuses if s.present and s.method != "counter"]

    # -- readings --------------------------------------------------------------------------------------------
    def _sample(
        self, source: str, metric: Metric, t: float, value: float, wrap: float | None = None
    ) -> TelemetrySample:
        return TelemetrySample(
            sample_id=f"{source}/{metric.value}/{self._seq}",
            source=source,
            metric=metric,
            t_s=t,
            value=value,
            counter_wrap=wrap,
        )

    def _error(self, what: str, exc: BaseException) -> None:
        self.n_errors += 1
        self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        del self.errors[:-MAX_ERRORS_KEPT]

    def read(self) -> list[TelemetrySample]:
        """One reading of every present source."""
        with self._lock:
            self._seq += 1
            t = self.clock()
            out: list[TelemetrySample] = []
            if self.gpu is not None:
                for i, has_counter in self._gpu_counter.items():
                    src = f"{self.prefix}/gpu{i}"
                    try:
                        if has_counter:
                            energy_j = self.gpu.total_energy_mj(i) / 1000.0
                            out.append(self._sample(src, Metric.ENERGY_J, t, energy_j, ENERGY_COUNTER_WRAP_MJ / 1000.0))
                        else:
                            out.append(self._sample(src, Metric.POWER_W, t, self.gpu.power_mw(i) / 1000.0))
                        out.append(self._sample(src, Metric.MEMORY_GB, t, self.gpu.memory_used_bytes(i) / 1e9))
                        out.append(self._sample(src, Metric.GPU_COUNT, t, 1.0))
                    except Exception as exc:
                        self._error(src, exc)
            if self.cpu is not None:
                try:
                    if time.monotonic() - self._measured_at >= self.codecarbon_measure_s:
                        self.cpu.measure()  # at most every codecarbon_measure_s (its cost: a /proc walk)
                        self._measured_at = time.monotonic()
                    cpu_j, ram_j = self.cpu.energy_j()
                    out.append(self._sample(f"{self.prefix}/cpu", Metric.ENERGY_J, t, cpu_j))
                    out.append(self._sample(f"{self.prefix}/ram", Metric.ENERGY_J, t, ram_j))
                except Exception as exc:
                    self._error(f"{self.prefix}/cpu", exc)
            return out

    def _send(self, batch: list[TelemetrySample], *, now: bool = True) -> None:
        """Keep `batch` with the readings not sent yet; send them all when `now` (a sink that fails loses them,
        counted in `errors`, as a lost reading would be: the next reading of each cumulative counter spans it)."""
        with self._lock:
            self._unsent.extend(batch)
            if not now or not self._unsent:
                return
            pending, self._unsent = self._unsent, []
            self._sent_at = time.monotonic()
        try:
            self.sink(pending)
            self.readings_sent += len(pending)
        except Exception as exc:
            self._error("sink", exc)

    def flush(self) -> None:
        """Ask the thread for a reading now, sent with every reading kept (returns at once)."""
        self._wake.set()

    def _loop(self) -> None:
        try:
            while True:
                asked = self._wake.wait(self.interval_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    due = asked or time.monotonic() - self._sent_at >= self.send_every_s
                    if asked:
                        self._measured_at = -math.inf  # a check's reading is current
                    self._send(self.read(), now=due)
                except Exception as exc:  # not one source's reading (read() keeps those): still not a reason to die
                    self._error("sampler", exc)
        except BaseException as exc:  # SystemExit and the like: the thread ends, saying why; ensure_alive() restarts it
            self._error("sampler thread died", exc)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"telemetry-{self.prefix}", daemon=True)
        self._thread.start()

    def start(self) -> None:
        self._send(self.read())  # the baseline of every counter, at the job's start
        self._start_thread()

    def ensure_alive(self) -> bool:
        """Restart the thread if it died; True when it did. Same sources, sequence numbers going on: the next
        reading of every cumulative counter spans the gap, so no energy is lost or counted twice."""
        if self._stopped or self._thread is None or self._thread.is_alive():
            return False
        self.restarts += 1
        self._start_thread()
        return True

    def stop(self) -> None:
        """Stop the thread, then take and send one final reading (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._measured_at = -math.inf  # the final reading measures, whenever the last one did
        self._send(self.read())
        if self.cpu is not None:
            self.cpu.stop()
