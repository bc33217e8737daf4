"""A job's worker gangs over its life: start (or adopt, after a controller restart), await, and on return finish
it, restart it at a new size from its checkpoint (converted by `ds_to_universal` when ZeRO shards depend on the
size), leave it paused, or restart it from its last checkpoint after a lost rank. What to do at each turn is the
state's decision (`ControllerState.step`); this drives Ray and DeepSpeed's converter."""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError

from orchestrator.config.compose import job_to_dict
from orchestrator.controller.events import (
    ConvertCheckpoint,
    GangReturned,
    GangStarted,
    RankLost,
    RestartReady,
)
from orchestrator.controller.handles import JobHandle
from orchestrator.errors import InputError
from orchestrator.tracking.runs import stop_request
from orchestrator.worker.group import WorkerGroup

if TYPE_CHECKING:
    from orchestrator.controller.actor import Controller

STOP_POLL_S = 5.0
"""How often a running job's `cpr stop` tag is read from MLflow (a query per job: docs/overhead.md)."""
PEER_DEATH_S = 20.0
"""How long a rank's error waits for Ray to report a peer's death that may have caused it (a gloo or NCCL error)."""


class GangLost(RuntimeError):
    """A rank of the job's gang died (its process killed or crashed, its node lost) too often."""


def stop_requested(h: JobHandle) -> str | None:
    """The latest `cpr stop` request for this job (its run's tag: the request's time); None when there is none, or
    while MLflow cannot be reached (asked again later)."""
    try:
        return stop_request(h.writer.client, h.writer.run_id)
    except Exception:
        return None


def run_job(ctl: Controller, h: JobHandle, adopt: bool = False) -> None:
    """Run the job's gangs until it ends: a decided resize restarts it from its checkpoint at the new size, a pause
    leaves it waiting for slots (the scheduler's START runs this again, from that checkpoint), a lost rank restarts
    the gang from its last checkpoint. `adopt`: a restarted controller takes over the running gang."""
    prepared, checkpoint_dir = h.launch
    me = ray.get_runtime_context().current_actor
    paused, group = False, None
    try:
        while True:
            world = ctl.state.gang_world(h.job_id, adopt=adopt)
            job = h.job.resized(world)
            rec = h.entry.record
            h.group = group = WorkerGroup(
                job_id=h.job_id,
                job=job,
                job_dict=job_to_dict(job),
                prepared=prepared,
                checkpoint_dir=checkpoint_dir,
                controller=me,
                resume=rec.resume,
                incarnation=rec.incarnation,
            )
            if adopt:
                adopt, refs = False, group.adopt()
                if refs is None:  # gone (it was starting or restarting, or died meanwhile): not its fault
                    _lost(ctl, h, "its gang was gone when the controller restarted", failure=False)
                    continue
            else:
                refs = group.start()
                ctl.step_job(h, GangStarted(h.job_id, world))
            results, lost = _await(ctl, h, refs)
            group.shutdown()
            h.group = group = None
            if lost is not None:
                _lost(ctl, h, lost)  # raises GangLost past cluster.max_restarts
                continue
            fx = ctl.step_pool(GangReturned(h.job_id, results))
            if fx.next == "finish":
                ctl.endings.finish(h)
                return
            rank0 = min(results, key=lambda r: r["rank"])
            convert = next((e for e in fx.items if isinstance(e, ConvertCheckpoint)), None)
            resume = to_universal(Path(convert.path)) if convert else h.entry.record.resume
            assert resume is not None
            fx = ctl.step_pool(RestartReady(h.job_id, resume, rank0["step"]))
            if fx.next == "pause":
                paused = True
                return
    except Exception as exc:  # a rank raised, or its gang was lost too often: the job fails with the reason
        cause = getattr(exc, "cause", None)  # a rank's own exception inside Ray's RayTaskError
        input_error = None
        if isinstance(cause, InputError):  # bad input met at run time (e.g. a histogram range): one line
            error = cause.one_line()
            input_error = {"field": cause.field, "problem": cause.problem, "fix": cause.fix}
        else:
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
        ctl.endings.fail(h, error, input_error)
    finally:
        if group is not None:  # this thread's gang only: after a pause, a START may already run the next one
            group.shutdown()
            if h.group is group:
                h.group = None
        if not paused:
            ctl.endings.release(h)
            ctl.endings.ended(h)


def _lost(ctl: Controller, h: JobHandle, why: str, *, failure: bool = True) -> None:
    fx = ctl.step_job(h, RankLost(h.job_id, why, failure))
    if fx.next == "fail":
        raise GangLost(fx.error)


def _await(ctl: Controller, h: JobHandle, refs: list[Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Wait for the gang's results, polling `cpr stop`; returns them, and why the gang was lost (a rank died) or
    None when every rank returned. A rank's own exception is raised."""
    results: list[dict[str, Any]] = []
    pending = list(refs)
    next_poll = time.monotonic() + STOP_POLL_S
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        for ref in done:
            try:
                result = ray.get(ref)
            except RayActorError as exc:
                return results, f"a rank died: {' '.join(str(exc).split())[:300]}"
            except Exception:
                # A peer's death often reaches the survivors first, as a gloo/NCCL error in a collective: if a rank
                # of the gang died, the gang was lost; otherwise the rank's error is the job's. Every other rank is
                # asked, those of this same wait too (the dead one may come after the survivor in `done`).
                deadline = time.monotonic() + PEER_DEATH_S
                for other in [r for r in done if r is not ref] + pending:
                    try:
                        ray.get(other, timeout=max(0.1, deadline - time.monotonic()))
                    except RayActorError as exc:
                        return results, f"a rank died: {' '.join(str(exc).split())[:300]}"
                    except Exception:
                        continue
                raise
            if result is None:  # adopted, but its `run` never ran (the controller died starting it)
                return results, "its ranks never ran"
            results.append(result)
        if pending and time.monotonic() >= next_poll and not h.tracker.halted:
            next_poll = time.monotonic() + STOP_POLL_S
            if (request := stop_requested(h)) is not None:
                ctl.request_stop(h.job_id, request=request)
    return results, None


def to_universal(ckpt: Path) -> dict[str, Any]:
    """Convert a DeepSpeed ZeRO checkpoint (`<dir>/<tag>`) to a universal one (`<dir>/universal/<tag>`), loadable at
    any world size; returns it as a resume point."""
    out = ckpt.parent / "universal" / ckpt.name
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(ckpt),
        "--output_folder",
        str(out),
        "--num_extract_workers",
        "1",
        "--num_merge_workers",
        "1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise RuntimeError(f"ds_to_universal could not convert {ckpt} (exit {done.returncode}): {tail}")
    return {"dir": str(out.parent), "tag": ckpt.name, "universal": True}
