"""A local Ray pool of CPU slots with the cluster's controller, and waiting for its jobs: shared by the queue tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray

from orchestrator.controller.actor import controller_handle

SHORT_JOB = [
    "+experiment=debug",
    "probe=off",
    "telemetry=off",
    "stop=shadow",  # every job runs to its budget: the rule decides nothing here, the scheduler does
    "deepspeed=zero2",
    "train.max_tokens=81920",  # 80 optimizer steps of 1,024 tokens
]


@contextmanager
def local_pool(namespace: str, slots: int = 2, env: dict[str, str] | None = None) -> Iterator[Any]:
    """Ray on this machine with `slots` CPUs and a (non-detached) controller; shut down on exit. `env`: environment
    variables of every Ray worker (the ranks)."""
    ray.init(
        runtime_env={"env_vars": env or {}},
        num_cpus=slots,
        address="local",
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield controller_handle(namespace, detached=False)
    finally:
        ray.shutdown()


def wait_all(
    controller: Any,
    job_ids: list[str],
    *,
    states_of: str | None = None,
    watch: Callable[[], None] | None = None,
    timeout_s: float = 600,
) -> tuple[dict[str, Any], set[str]]:
    """Every job's end (`controller.wait`; the ones that did not end are absent) and the states job `states_of`
    was seen in, calling `watch` between polls."""
    result: dict[str, Any] = {}
    states: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(result) < len(job_ids) and time.monotonic() < deadline:
        if states_of is not None:
            states.add(ray.get(controller.view.remote(states_of))["state"])
        if watch is not None:
            watch()
        for job_id in job_ids:
            if job_id not in result:
                done = ray.get(controller.wait.remote(job_id, 0.5))
                if done is not None:
                    result[job_id] = done
    return result, states


def two_ranks(rank_cls: type, job: dict[str, Any], *args: Any, timeout_s: float = 300) -> list[Any]:
    """Two actors of `rank_cls(rank, world, job)` (one CPU each) joined as one gloo group: rank 0's `address()` is the
    rendezvous, every rank's `run(addr, port, *args)` runs at once; their results, in rank order. Killed after."""
    actor = ray.remote(num_cpus=1)(rank_cls)
    ranks = [actor.remote(r, 2, job) for r in range(2)]
    try:
        addr, port = ray.get(ranks[0].address.remote())
        return ray.get([r.run.remote(addr, port, *args) for r in ranks], timeout=timeout_s)
    finally:
        for r in ranks:
            ray.kill(r)
