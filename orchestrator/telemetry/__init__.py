"""Per-rank energy, power and memory telemetry: NVML for GPUs, codecarbon for CPU/RAM; samples for the ledger."""
