"""Join the job's Ray cluster or start one: in this process for an attached job, or as a head that outlives the
command for a detached job or a sweep."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.config.schema import JobConfig
from orchestrator.errors import InputError
from orchestrator.submission.preflight import check_capacity, check_ray_address, local_cpus


def init_ray(job: JobConfig, *, start_head: bool) -> str:
    """Join the configured Ray cluster or start one; returns a description. InputError when unreachable."""
    import ray

    c = job.cluster
    env_vars = {"PYTHONWARNINGS": "ignore::FutureWarning"}
    kwargs: dict[str, Any] = {
        "namespace": c.namespace,
        "log_to_driver": False,  # the workers' output is in Ray's session logs; the terminal shows the progress bar
        "logging_level": logging.ERROR,  # Ray's start-up chatter would break the one-line error promise
        "runtime_env": {"env_vars": env_vars},
    }
    address = c.address
    if address is None and start_head:
        # The head would outlive this command: check the job fits this machine before starting one.
        check_capacity(job, local_cpus(job))
        address = start_local_head(job)
    if address is None:
        # address="local": a fresh instance even when a `ray start` head runs on this machine. Its dashboard (off
        # unless cluster.dashboard) binds to cluster.dashboard_host, 127.0.0.1 by default: it has no authentication.
        ray.init(
            address="local",
            num_cpus=c.num_cpus or os.cpu_count(),
            include_dashboard=c.dashboard,
            dashboard_host=c.dashboard_host,
            _metrics_export_port=c.metrics_export_port,
            **kwargs,
        )
        return "local Ray (in this process)"
    check_ray_address(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(
            "cluster.address",
            f"cannot join Ray at {address}: {exc}",
            "start one with `ray start --head`, or leave cluster.address=null",
        ) from None
    return f"Ray cluster at {address}"


def start_local_head(job: JobConfig) -> str:
    """For detach=true without a cluster: a local Ray head that outlives this command (stop it with `ray stop`).
    Its dashboard, if cluster.dashboard, binds to cluster.dashboard_host (127.0.0.1 by default)."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    probe = subprocess.run([ray_bin, "status"], capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return "auto"
    cmd = [
        ray_bin,
        "start",
        "--head",
        f"--num-cpus={job.cluster.num_cpus or os.cpu_count()}",
        f"--include-dashboard={str(job.cluster.dashboard).lower()}",
        f"--dashboard-host={job.cluster.dashboard_host}",
        "--disable-usage-stats",
    ]
    if job.cluster.metrics_export_port is not None:
        cmd.append(f"--metrics-export-port={job.cluster.metrics_export_port}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise InputError(
            "cluster.address",
            f"could not start a local Ray head: {done.stderr.strip()[-300:]}",
            "start one with `ray start --head`",
        )
    return "auto"


def disconnect() -> None:
    """Leave Ray: local Ray started in this process ends with it; a head and its detached jobs run on."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
