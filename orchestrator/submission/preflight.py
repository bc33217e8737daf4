"""The checks that need the outside world but take nothing and write nothing: run before any folder, data cache
or Ray process exists, so that a refused job leaves nothing behind."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

from orchestrator.config.schema import JobConfig
from orchestrator.errors import InputError


def tcp_reachable(address: str, timeout_s: float = 3.0) -> bool:
    """Something accepts a TCP connection at `host:port`."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def check_ray_address(address: str | None) -> None:
    """A `host:port` cluster address answers (`auto`, `local` and `ray://` are left to Ray)."""
    if address is None or address in ("auto", "local") or address.startswith("ray://"):
        return
    if not tcp_reachable(address):
        raise InputError(
            "cluster.address",
            f"no Ray cluster answers at {address}",
            "start one with `ray start --head`, or leave cluster.address=null for local Ray",
        )


def check_capacity(job: JobConfig, have: dict[str, float] | None = None) -> None:
    """More workers than the cluster has CPUs/GPUs (`have`, default: Ray's view): refuse before anything is placed."""
    c = job.cluster
    if have is None:
        import ray

        have = ray.cluster_resources()
    need_cpu = c.num_workers * c.cpus_per_worker
    if have.get("CPU", 0) < need_cpu:
        raise InputError(
            "cluster.num_workers",
            f"{c.num_workers} workers × {c.cpus_per_worker} CPU need {need_cpu} CPUs, "
            f"the cluster has {have.get('CPU', 0):g}",
            "lower cluster.num_workers or cluster.cpus_per_worker, or add nodes",
        )
    need_gpu = c.num_workers * c.gpus_per_worker
    if need_gpu and have.get("GPU", 0) < need_gpu:
        raise InputError(
            "cluster.gpus_per_worker",
            f"{c.num_workers} workers need {need_gpu} GPUs, the cluster has {have.get('GPU', 0):g}",
            "lower cluster.num_workers, or gpus_per_worker=0 to train on CPU",
        )


def local_cpus(job: JobConfig) -> dict[str, float]:
    """The resources a local Ray started for this job will have (its GPUs are known only once it runs)."""
    return {"CPU": float(job.cluster.num_cpus or os.cpu_count() or 1)}


def check_writable_dir(field: str, path: Path) -> None:
    """`path` is a writable folder, or one that can be made: its nearest existing ancestor is a writable folder."""
    probe = path.expanduser().absolute()
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        ok = probe.is_dir() and os.access(probe, os.W_OK)
    except (OSError, ValueError):  # e.g. a NUL byte in the path
        ok = False
    if not ok:
        raise InputError(
            field, f"{path} cannot be created or written ({probe} is no writable folder)", "check the path"
        )


def preflight(job: JobConfig) -> None:
    """The folders the job writes, the tracking store, the data (listed, not read) and its selection manifest, the
    cluster's address and, for local Ray, its CPUs. `prepare` and `init_ray` repeat what they need once the job goes
    ahead."""
    from orchestrator.data.prepare import check_data
    from orchestrator.data.selection import check_selection
    from orchestrator.data.sources import open_domain
    from orchestrator.tracking.uri import check_tracking_uri, default_tracking_uri

    runs_dir = Path.cwd() / job.runs_dir
    check_writable_dir("runs_dir", runs_dir)
    for field, value in (("train.checkpoint_dir", job.train.checkpoint_dir), ("data.cache_dir", job.data.cache_dir)):
        if value:
            check_writable_dir(field, Path(value))
    uri = job.tracking.uri or default_tracking_uri(runs_dir)
    if uri.lower().startswith("sqlite:"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.exists() and folder.parent.is_dir() and os.access(folder.parent, os.W_OK):
            uri = ""  # check_tracking_uri would create the folder: `prepare` checks it when the job goes ahead
    if uri:
        check_tracking_uri(uri)
    check_data(job.data)
    check_selection(job.data, against_corpus=not job.adapt.enabled)  # cpr adapt: once its base's tokenizer is known
    configs = job.data.domain_configs()
    for name in job.held_out_domains():
        open_domain(name, configs[name])
    if job.notify.enabled:  # its Apprise URLs, webhook and command, before anything starts
        from orchestrator.notify.checks import check_notify

        check_notify(job.notify)
    c = job.cluster
    if c.address is None:
        check_capacity(replace(job, cluster=replace(c, gpus_per_worker=0)), local_cpus(job))
    else:
        check_ray_address(c.address)


def check_memory(job: JobConfig, n_params: int) -> float:
    """Per-rank bytes of weights, grads, optimizer states and activations vs the memory a rank may use, at every
    size the scheduler may resize the job to (fewer ranks hold bigger ZeRO shards; more ranks share the node)."""
    import psutil

    c = job.cluster
    at_start = 0.0
    for world in job.world_sizes():
        rm = job.resized(world).resource_model(n_params)
        need_gb = (rm.cost_fixed + rm.cost_per_param) * n_params / 1e9
        if c.memory_gb_per_worker is not None:
            limit, where = c.memory_gb_per_worker, "cluster.memory_gb_per_worker"
        else:
            limit, where = psutil.virtual_memory().total / 1e9 / world, "this machine's memory per rank"
        if need_gb > limit:
            at = f" at {world} ranks" if world != c.num_workers else ""
            raise InputError(
                "model",
                f"{job.model.name} ({n_params / 1e6:.1f}M params) needs ≈{need_gb:.1f} GB per rank with ZeRO-"
                f"{job.deepspeed.zero_stage}, {job.deepspeed.precision}{at}; {where} is {limit:.1f} GB",
                "use a smaller model, deepspeed=zero3, more workers, or a larger cluster.memory_gb_per_worker",
            )
        if world == c.num_workers:
            at_start = need_gb
    return at_start
