"""One MLflow run written from the controller: params, metrics by step, tags, artifacts — never blocking a report.

Writes go through `MlflowClient` (not the fluent API: the controller writes many runs from many threads) via one
ordered queue per run and a background thread that flushes it with `log_batch`. If the store fails for a while (a
transient error: unreachable, a timeout, a 5xx or 429, a locked database), the queue keeps the operations and the
thread retries with backoff (tenacity), in order (`pending()`, `last_error` say so). A write the store refuses for
good (a 4xx, a run no longer active, a file gone) is dropped and counted (`dropped`), so it cannot hold up the
writes behind it forever. Given a
journal folder, every write is first appended to a write-ahead log on local disk (`journal.Journal`): an MLflow
outage, or a controller killed with writes still queued, loses nothing; a restarted writer sends what is owed.
A writer's thread does not outlive the interpreter: at exit each live writer gets a moment to drain, then stops
(`stop_writers`), since a daemon thread woken in the middle of the interpreter's shutdown can crash the process.
A write sent twice (the store took it, then the process died before recording so) is harmless: a metric point is
(key, value, timestamp, step), which the store keeps once, and params, tags and artifacts are overwritten alike.
"""

from __future__ import annotations

import atexit
import json
import re
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, wait_exponential

from orchestrator.tracking.journal import Journal, Marks

MAX_PARAM_LEN = 6000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
FLUSH_EVERY_S = 2.0
"""How often the thread writes what is queued: one `log_batch` transaction for everything since the last."""
BACKOFF_S = (0.5, 10.0)
"""First and longest wait between two attempts at a write that failed for a transient reason."""
EXIT_DRAIN_S = 5.0
"""How long, in all, the writers still running at interpreter exit may take to send what they hold."""
_LIVE: weakref.WeakSet[RunWriter] = weakref.WeakSet()
"""Every writer made in this process (`stop_writers` stops those still running at exit)."""
PERMANENT_STATES = ("INVALID_STATE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS")
"""MLflow error codes that another attempt cannot fix (a run deleted or no longer active, …), whatever the status."""


def transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: a store down, slow, busy or overloaded, not one that refused the write."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | ValueError | TypeError | KeyError):
        return False
    code = getattr(exc, "error_code", None)
    if code is not None and hasattr(exc, "get_http_status_code"):  # an MlflowException (a RestException too)
        if code in PERMANENT_STATES:
            return False
        status = exc.get_http_status_code()
        return status >= 500 or status in (408, 429)
    return True  # connection refused or reset, a timeout, a locked SQLite database, a full disk: it may pass


def metric_name(name: str) -> str:
    """MLflow accepts letters, digits, _ - . space / in keys; anything else becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def flatten_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} → {"a.b": "1"}; lists as JSON, None as "null"."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = "null" if value is None else str(value)
    return out


class RunWriter:
    def __init__(self, client: Any, run_id: str, experiment_id: str, journal_dir: str | Path | None = None) -> None:
        """`journal_dir`: where the write-ahead log lives (the job's state folder); None: memory only."""
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.last_error: str | None = None
        self.dropped = 0
        """Writes the store refused for good (`last_error` says the latest reason)."""
        self._ops: deque[tuple[int, str, Any]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._abandoned = False
        self._busy = 0
        """Operations of the batch being written (retried)."""
        self._seq = self._acked = 0
        self._marks = Marks()
        self._journal = Journal(journal_dir) if journal_dir is not None else None
        if self._journal is not None:  # a restart: what the last writer of this run still owed goes first
            self._acked, self._marks, owed = self._journal.recover()
            self._ops.extend((r["seq"], r["op"], _payload(r["op"], r["payload"])) for r in owed)
            self._seq = owed[-1]["seq"] if owed else self._acked
        self._thread = threading.Thread(target=self._loop, name=f"mlflow-{run_id[:8]}", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    @classmethod
    def create(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        artifact_location: str | None = None,
        journal_dir: str | Path | None = None,
    ) -> RunWriter:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:  # another submit created it first
                exp_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
        return cls(client, run.info.run_id, exp_id, journal_dir)

    @classmethod
    def attach(
        cls, tracking_uri: str, run_id: str, experiment_id: str, journal_dir: str | Path | None = None
    ) -> RunWriter:
        """A writer for an existing run (a restarted controller's): no call to the store, which may be down."""
        from mlflow.tracking import MlflowClient

        return cls(MlflowClient(tracking_uri), run_id, experiment_id, journal_dir)

    # -- queued writes -----------------------------------------------------------------------------------------
    def _put(self, op: str, payload: Any, mark: tuple[str, int] | None = None) -> None:
        with self._cv:
            self._seq += 1
            if self._journal is not None:
                self._journal.append({"seq": self._seq, "op": op, "payload": payload, "mark": mark})
            if mark is not None:
                self._marks.add(*mark)
            self._ops.append((self._seq, op, payload))
            if len(self._ops) >= 500:
                self._cv.notify()

    def logged(self, key: str, step: int) -> bool:
        """Whether `step` was journaled under `key` (`log_metrics`): a retried report's points are not sent again."""
        with self._cv:
            return (key, step) in self._marks

    def log_params(self, params: dict[str, str]) -> None:
        self._put("params", {k: str(v)[:MAX_PARAM_LEN] for k, v in params.items()})

    def log_metrics(
        self, metrics: dict[str, float], step: int, *, mark: str | None = None, t_s: float | None = None
    ) -> None:
        """Points at `step`, stamped `t_s` (default now); `mark`: record this step under that key (`logged()`)."""
        ts = int((time.time() if t_s is None else t_s) * 1000)
        points = [(metric_name(k), float(v), ts, int(step)) for k, v in metrics.items()]
        self._put("metrics", points, None if mark is None else (mark, int(step)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._put("tags", {k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        self._put("text", (text, artifact_file))

    def log_file(self, local_path: str, artifact_path: str | None = None) -> None:
        self._put("file", (local_path, artifact_path))

    def pending(self) -> int:
        with self._cv:
            return len(self._ops) + self._busy

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Block until everything queued so far is written (True), or timeout (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._cv.notify()
            while self._ops or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def close(self, status: str = "FINISHED", timeout_s: float = 60.0) -> bool:
        """End the run with `status` after everything queued. False when the store did not take it all within
        timeout_s: the thread keeps retrying, and with a journal a restarted writer would finish the job."""
        self._put("terminate", status)
        with self._cv:
            self._closed = True
        return self.flush(timeout_s)

    def reopen(self) -> None:
        """Mark the (ended) run RUNNING again: a resumed job continues it."""
        self._put("status", "RUNNING")

    def abandon(self) -> None:
        """Stop sending now, without waiting for the store: the thread ends after its current attempt, and what is
        still owed stays in the journal for the run's next writer (`attach`) or `cpr sync`."""
        with self._cv:
            self._abandoned = True
            self._cv.notify_all()

    def stop(self, drain_s: float = 0.0, join_s: float = 1.0) -> bool:
        """Send what is queued for up to `drain_s`, then `abandon()` and wait up to `join_s` for the thread to end;
        whether everything was sent."""
        sent = self.flush(drain_s) if drain_s > 0 else self.pending() == 0
        self.abandon()
        self._thread.join(join_s)
        return sent

    # -- the writer thread -----------------------------------------------------------------------------------
    def _take(self) -> list[tuple[int, str, Any]]:
        """The next batch: consecutive metric ops merged (≤ METRICS_PER_BATCH points), else one op."""
        _, op, payload = self._ops[0]
        if op != "metrics":
            return [self._ops.popleft()]
        batch, n = [], 0
        while (
            self._ops
            and self._ops[0][1] == "metrics"
            and n + len(self._ops[0][2]) <= max(METRICS_PER_BATCH, len(payload))
        ):
            item = self._ops.popleft()
            batch.append(item)
            n += len(item[2])
        return batch

    def _write(self, batch: list[tuple[int, str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        _, op, payload = batch[0]
        if op == "metrics":
            points = [Metric(k, v, ts, step) for _, _, pts in batch for (k, v, ts, step) in pts]
            self.client.log_batch(self.run_id, metrics=points)
        elif op == "params":
            items = list(payload.items())
            for i in range(0, len(items), PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + PARAMS_PER_BATCH]])
        elif op == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in payload.items()])
        elif op == "text":
            self.client.log_text(self.run_id, payload[0], payload[1])
        elif op == "file":
            self.client.log_artifact(self.run_id, payload[0], payload[1])
        elif op == "terminate":
            self.client.set_terminated(self.run_id, status=payload)
        elif op == "status":
            self.client.update_run(self.run_id, status=payload)

    def _send(self, batch: list[tuple[int, str, Any]]) -> None:
        """Write one batch, retrying a transient failure with exponential backoff until it goes or the writer is
        abandoned; a permanent failure, or the last one when abandoned, is raised."""
        retrying = Retrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential(multiplier=BACKOFF_S[0], min=BACKOFF_S[0], max=BACKOFF_S[1]),
            stop=lambda _: self._abandoned,
            sleep=self._pause,
            before_sleep=lambda state: self._record_error(state.outcome.exception()),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._write(batch)

    def _pause(self, seconds: float) -> None:
        """Backoff that `abandon()` cuts short."""
        with self._cv:
            self._cv.wait_for(lambda: self._abandoned, timeout=seconds)

    def _done(self, batch: list[tuple[int, str, Any]]) -> None:
        with self._cv:
            self._acked = batch[-1][0]
            if self._journal is not None:
                self._journal.ack(self._acked, self._marks, drained=not self._ops)
            self._busy = 0
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                if self._abandoned:
                    return
                if not self._ops:
                    if self._closed:
                        return
                    self._cv.wait(FLUSH_EVERY_S)
                    continue
                batch = self._take()
                self._busy = len(batch)
            try:
                self._send(batch)
            except Exception as exc:
                self._record_error(exc)
                if transient(exc):  # abandoned while the store was down: the journal keeps the batch for later
                    with self._cv:
                        self._ops.extendleft(reversed(batch))
                        self._busy = 0
                        self._cv.notify_all()
                    continue
                self.dropped += 1  # refused for good: counted, and the writes behind it go on
            self._done(batch)

    def _record_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


@atexit.register
def stop_writers(drain_s: float = EXIT_DRAIN_S) -> None:
    """Stop every writer whose thread still runs, giving them `drain_s` in all to send what they hold; what is left
    stays in their journals (`cpr sync`, or the run's next writer). Called at interpreter exit: a daemon thread that
    wakes while the interpreter is being torn down (a SQLite or socket call in flight) can end the process with a
    segmentation fault, after all its work succeeded."""
    deadline = time.monotonic() + drain_s
    for writer in [w for w in _LIVE if w._thread.is_alive()]:
        writer.stop(max(0.0, deadline - time.monotonic()))


def _payload(op: str, payload: Any) -> Any:
    """A journaled payload as the writer queues it (JSON turned the tuples into lists)."""
    if op == "metrics":
        return [tuple(p) for p in payload]
    if op in ("text", "file"):
        return tuple(payload)
    return payload
