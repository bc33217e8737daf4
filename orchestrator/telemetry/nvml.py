"""GPU readings through NVML (`nvidia-ml-py`, the maintained provider of the `pynvml` module), behind one seam.

`GpuBackend` is the seam: tests fake the GPU this machine lacks with their own backend; production uses
`NvmlBackend`. Energy comes from each device's cumulative counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ since
driver load, as Megatron-LM's energy monitor and Zeus read it); devices without it (pre-Volta) raise
`CounterUnsupported` and the sampler falls back to integrating power.
"""

from __future__ import annotations

import os
from typing import Protocol

ENERGY_COUNTER_WRAP_MJ = float(2**64)
"""Modulus of the total-energy counter: NVML returns it as an unsigned long long (mJ). It would take 585,000
years at 1 kW to wrap; declared all the same so the ledger tells a wrap from a reset by rule, not by luck."""


class CounterUnsupported(Exception):
    """The device has no total-energy counter."""


class GpuBackend(Protocol):
    def device_count(self) -> int: ...
    def name(self, i: int) -> str: ...
    def total_energy_mj(self, i: int) -> float: ...
    def power_mw(self, i: int) -> float: ...
    def memory_used_bytes(self, i: int) -> float: ...


class NvmlBackend:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES: indices or UUIDs), read through pynvml."""

    def __init__(self) -> None:
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        else:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            self.handles = [
                pynvml.nvmlDeviceGetHandleByUUID(v)
                if v.startswith(("GPU-", "MIG-"))
                else pynvml.nvmlDeviceGetHandleByIndex(int(v))
                for v in ids
            ]

    def device_count(self) -> int:
        return len(self.handles)

    def name(self, i: int) -> str:
        name = self.nvml.nvmlDeviceGetName(self.handles[i])
        return name.decode() if isinstance(name, bytes) else str(name)

    def total_energy_mj(self, i: int) -> float:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handles[i]))
        except self.nvml.NVMLError as exc:
            if getattr(exc, "value", None) == self.nvml.NVML_ERROR_NOT_SUPPORTED:
                raise CounterUnsupported(str(exc)) from None
            raise

    def power_mw(self, i: int) -> float:
        return float(self.nvml.nvmlDeviceGetPowerUsage(self.handles[i]))

    def memory_used_bytes(self, i: int) -> float:
        return float(self.nvml.nvmlDeviceGetMemoryInfo(self.handles[i]).used)


def open_gpu_backend() -> tuple[GpuBackend | None, str]:
    """NVML when a driver answers, else (None, why) — the reason goes into the run's tags."""
    try:
        backend = NvmlBackend()
    except Exception as exc:  # pynvml raises NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"nvml: {' '.join(str(exc).split()) or type(exc).__name__}"
    if backend.device_count() == 0:
        return None, "nvml: no GPU visible to this process"
    return backend, "nvml"
