"""Is a job's controller still there? Its identity (host, pid, its process's start time, Ray's GCS address) is tagged
on the job's run (`cpr.controller`) when it takes the job, and checked by a reader (`cpr status`, `cpr submit
+resume`) that finds the job's record live: a record that outlived its controller (the client SIGKILLed with the
local Ray it owned, the machine rebooted) is `lost`, not `running`.

The check is cheap and needs no Ray: on the controller's own host, whether that process still runs (its pid with the
same start time: a pid reused after a reboot is another process); elsewhere, whether its Ray cluster's GCS accepts a
TCP connection.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.core.lifecycle import LOST, observed_state
from orchestrator.tracking.runs import JobRow

START_TIME_SLACK_S = 1.0
"""psutil's process start times are rounded differently across calls: a match within this is the same process."""


def identity() -> str:
    """This process's identity as the job's controller (the tag's value); call it inside the controller actor."""
    import psutil
    import ray

    gcs = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    return json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time(), "ray": gcs}
    )


def reachable(tag: str | None, timeout_s: float = 1.0) -> bool | None:
    """True while the controller the tag names runs (or its cluster answers); None when the tag says nothing (a run
    recorded before the tag existed, or an unreadable one)."""
    try:
        who: dict[str, Any] = json.loads(tag) if tag else {}
    except ValueError:
        return None
    if not who:
        return None
    if who.get("host") == socket.gethostname() and who.get("pid"):
        return _running(int(who["pid"]), float(who.get("started") or 0.0))
    if who.get("ray"):
        from orchestrator.submission.preflight import tcp_reachable

        return tcp_reachable(str(who["ray"]), timeout_s)
    return None


def observe(row: JobRow) -> JobRow:
    """The row as a reader shows it: state `lost` when its record says live and its controller is gone, with the
    time of its last report (its store folder's newest write when at hand: telemetry arrives every second)."""
    state = observed_state(row.state, reachable(row.controller))
    if state != LOST:
        return row
    return replace(
        row, state=state, last_report_t=max(filter(None, (row.last_report_t, _last_write(row.state_dir))), default=None)
    )


def _last_write(state_dir: str | None) -> float | None:
    if not state_dir or not Path(state_dir).is_dir():
        return None
    times = [p.stat().st_mtime for p in Path(state_dir).iterdir() if p.is_file()]
    return max(times, default=None)


def _running(pid: int, started: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) <= START_TIME_SLACK_S
    except psutil.AccessDenied:  # another user's process: it runs
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False
