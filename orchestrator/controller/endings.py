"""How a job ends: its closing decision, summary and artifacts (`state.Finish`/`state.Fail`), its slots given back,
its scheduler log and reports logged, its run closed.

The run's CPR report (and its sweep's comparison, by the sweep's last job to end) is drawn with matplotlib on one
report thread, off the job's lock (reports, retries and `cpr status` are not held up by the drawing), and the run
is closed once it is done, as before. One thread: matplotlib is not thread-safe.
"""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from orchestrator.controller.events import Ended, Fail, Finish, Release
from orchestrator.controller.handles import JobHandle
from orchestrator.core.lifecycle import JobLifecycle
from orchestrator.leaderboard import log_sweep_leaderboard
from orchestrator.report import log_run_report, log_sweep_report

if TYPE_CHECKING:
    from orchestrator.controller.actor import Controller


class Endings:
    """The endings of one controller's jobs."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self._reports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")

    def finish(self, h: JobHandle) -> None:
        """Ended by a STOP or at its budget."""
        self.ctl.step_job(h, Finish(h.job_id))
        # An interrupted run is KILLED in MLflow's words; `cpr submit +resume` marks it RUNNING again.
        self._close(h, "KILLED" if h.state is JobLifecycle.INTERRUPTED else "FINISHED")

    def fail(self, h: JobHandle, error: str, input_error: dict[str, Any] | None) -> None:
        try:
            self.ctl.step_job(h, Fail(h.job_id, error, input_error))
        finally:
            self._close(h, "FAILED")  # what it did before it failed is worth a look too

    def _flush(self, h: JobHandle) -> None:
        """An attached job's controller ends with its client: wait up to notify.flush_s for the deliveries still
        on their way (its STOP among them), then count what is left as failed. A detached controller lives on and
        goes on retrying. Either way its senders end once their queue is empty (a resumed job gets new ones)."""
        notifier, h.notifier = h.notifier, None
        if notifier is None:
            return
        if not h.job.detach:
            limit = h.job.notify.flush_s
            left = notifier.flush(limit)
            if left:
                notifier.abandon(left, f"not delivered by the job's end (waited notify.flush_s={limit:g} s)")
        notifier.close(drain=True)

    def end_unstarted(self, h: JobHandle) -> None:
        """Stopped while it waited: it ends without a gang."""
        try:
            self.finish(h)
        finally:
            self.ended(h)

    def release(self, h: JobHandle) -> None:
        self.ctl.step_pool(Release(h.job_id))

    def ended(self, h: JobHandle) -> None:
        self.ctl.step_job(h, Ended(h.job_id))

    def _close(self, h: JobHandle, status: str) -> None:
        self.release(h)  # before the run closes: its tags record the STOP
        path = h.store.path("schedule.jsonl")  # the scheduler's decisions on it, its STOP included
        if path.exists():
            h.writer.log_file(str(path))
        try:
            self._reports.submit(self._draw, h).result()
        finally:
            self._flush(h)  # its deliveries' count is a tag of the run: before the run closes
            h.writer.close(status)

    def _draw(self, h: JobHandle) -> None:
        """The run's CPR report (figures and one offline HTML page) under `report/`, drawn from what the store holds
        once the run's writes are in; and when it is the last of its sweep to end, the sweep's comparison under
        `sweep_report/` and the sweep's leaderboard under `leaderboard/`. Never raises: the job's outcome stands."""
        try:
            uri, experiment = h.store.load("job.json")["tracking_uri"], h.job.tracking.experiment
        except Exception:  # its record unreadable: nothing to draw from, and the run must still be closed
            traceback.print_exc()
            return
        log_run_report(h.writer, uri, h.store.path("report"), experiment=experiment)
        with self.ctl.pool_lock:
            sweep = self.ctl.state.claim_sweep_report(h.job_id)
        if sweep:
            log_sweep_report(h.writer, uri, h.entry.sweep, h.store.path("sweep_report"), experiment=experiment)
            log_sweep_leaderboard(h.writer, uri, h.entry.sweep, h.store.path("leaderboard"), experiment=experiment)
