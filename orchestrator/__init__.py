"""cpr: a distributed LLM pretraining orchestrator with marginal-return (capability-per-resource) stopping.

`orchestrator.core` and `orchestrator.blueprints` are the pure core (numpy/scipy only); engines (Ray,
DeepSpeed, MLflow, NVML, codecarbon) sit behind thin adapters that pass plain data to it.
"""

__version__ = "0.1.0"
