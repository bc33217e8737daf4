"""`python -m orchestrator.telemetry [--seconds S] [--load]`: what this node's telemetry sees, before a job runs.

Samples every source for S seconds (optionally while keeping the GPUs busy with matmuls), feeds a ledger and prints
energy, mean power, GPU-hours and VRAM per source, plus the sources that are absent and why.
"""

from __future__ import annotations

import argparse
import threading
import time

from orchestrator.core.ledger import J_PER_KWH, ResourceLedger
from orchestrator.telemetry.sampler import TelemetrySampler, node_name


def busy_gpus(stop: threading.Event) -> None:
    import torch

    if not torch.cuda.is_available():
        return
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    while not stop.is_set():
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.telemetry", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--no-codecarbon", action="store_true")
    parser.add_argument("--load", action="store_true", help="keep the GPUs busy with bf16 matmuls meanwhile")
    args = parser.parse_args()
    ledger = ResourceLedger()
    lock = threading.Lock()

    def sink(batch):
        with lock:
            ledger.add_many(batch)

    sampler = TelemetrySampler(
        source_prefix=node_name(),
        sink=sink,
        interval_s=args.interval,
        nvml=True,
        codecarbon=not args.no_codecarbon,
        country_iso_code="USA",
        codecarbon_measure_s=1.0,
    )
    stop = threading.Event()
    load = threading.Thread(target=busy_gpus, args=(stop,), daemon=True) if args.load else None
    t0 = time.time()
    sampler.start()
    if load:
        load.start()
    time.sleep(args.seconds)
    stop.set()
    if load:
        load.join()
    sampler.stop()
    span = time.time() - t0
    for status in sampler.sources():
        print(f"{status.name:40s} {'present' if status.present else 'ABSENT':8s} {status.method:8s} {status.detail}")
    for source, joules in sorted(ledger.energy_j_by_source().items()):
        print(f"{source:40s} {joules:12.1f} J  {joules / J_PER_KWH:.6f} kWh  mean {joules / span:8.1f} W")
    for kind, value in ledger.totals().items():
        print(f"Γ {kind.value:14s} {value:.6g}")
    if sampler.errors:
        print("errors:", *sampler.errors, sep="\n  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
