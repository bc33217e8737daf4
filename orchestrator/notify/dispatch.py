"""Sending a job's notifications off the controller's path: one sender thread per channel, an outbox file.

`JobNotifier.send` only appends to the outbox and enqueues, so a report's answer (a STOP) never waits for a slow,
hanging or refusing endpoint; each channel has its own thread, so one bad endpoint does not hold up the others.
The outbox (`notifications.jsonl` in the job's store folder, append-only JSON lines) records each delivery queued,
then sent or failed: an event already there is not queued again, and a controller restarted after a crash resends
only what was queued and never finished (at least once; receivers drop repeats by the `X-CPR-Delivery` id).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.notify.channels import Channel, Delivery, deliver

OUTBOX = "notifications.jsonl"
QUEUED, SENT, FAILED = "queued", "sent", "failed"

ResultFn = Callable[[str, str, Delivery], None]
"""(channel, delivery id, delivery): told once per delivery that ended, sent or failed."""


class Outbox:
    """The job's deliveries as an append-only log; the latest line of an id is its status."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.status: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash: the delivery is queued again if needed
                    continue
                self.status[rec["id"]] = {**self.status.get(rec["id"], {}), **rec}

    def add(self, record: Mapping[str, Any]) -> bool:
        """Record it; False when a queued record of this id is already there (it is not queued twice)."""
        with self._lock:
            if record["status"] == QUEUED and record["id"] in self.status:
                return False
            self.status[record["id"]] = {**self.status.get(record["id"], {}), **record}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            return True

    def pending(self) -> list[dict[str, Any]]:
        """Queued and never finished (a controller that stopped meanwhile), oldest first."""
        with self._lock:
            return [dict(r) for r in self.status.values() if r.get("status") == QUEUED]


class JobNotifier:
    """One job's channels, each with its sender thread, over one outbox."""

    def __init__(
        self,
        job_id: str,
        channels: Sequence[Channel],
        outbox: Path,
        *,
        retries: int,
        backoff_s: float,
        on_result: ResultFn,
    ) -> None:
        self.job_id = job_id
        self.channels = {c.name: c for c in channels}
        self.outbox = Outbox(outbox)
        self.retries, self.backoff_s = retries, backoff_s
        self.on_result = on_result
        self._queues: dict[str, queue.Queue[tuple[str, dict[str, Any]] | None]] = {}
        self._pending: set[str] = set()
        self._finishing: set[str] = set()
        """Delivered or failed, being recorded and counted."""
        self._abandoned: set[str] = set()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        for name in self.channels:
            q: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
            self._queues[name] = q
            threading.Thread(target=self._run, args=(name, q), name=f"notify-{job_id}-{name}", daemon=True).start()

    def send(self, event: Mapping[str, Any]) -> int:
        """Queue the event on every channel (not twice: an id already in the outbox is skipped); never blocks on
        the network. Returns the deliveries queued."""
        queued = 0
        for name in self.channels:
            did = f"{event['id']}@{name}"
            record = {"id": did, "channel": name, "status": QUEUED, "t_s": time.time(), "event": dict(event)}
            if self.outbox.add(record):
                self._put(name, did, dict(event))
                queued += 1
        return queued

    def resume(self) -> int:
        """Queue again what a previous controller queued and never finished."""
        n = 0
        for rec in self.outbox.pending():
            if rec.get("channel") in self.channels:
                self._put(rec["channel"], rec["id"], rec["event"])
                n += 1
        return n

    def flush(self, timeout_s: float) -> list[tuple[str, str]]:
        """Wait up to `timeout_s` for every queued delivery to end; what is still pending then is abandoned and
        returned as (channel, delivery id), for the caller to count as failed (its process is about to end)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._pending or self._finishing) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            left_over = sorted(self._pending)
            self._abandoned.update(left_over)
            self._pending.clear()
        return [(did.rsplit("@", 1)[1], did) for did in left_over]

    def close(self, *, drain: bool = False) -> None:
        """End the sender threads: at once, after their current attempt (no more retries), or with `drain` once
        what is queued has gone out."""
        if not drain:
            self._closing.set()
        for q in self._queues.values():
            q.put(None)

    # -- the sender threads -------------------------------------------------------------------------------------
    def _put(self, name: str, did: str, event: dict[str, Any]) -> None:
        with self._cond:
            self._pending.add(did)
        self._queues[name].put((did, event))

    def _run(self, name: str, q: queue.Queue[tuple[str, dict[str, Any]] | None]) -> None:
        channel = self.channels[name]
        while (item := q.get()) is not None:
            did, event = item
            result = deliver(
                channel, event, retries=self.retries, backoff_s=self.backoff_s, should_stop=self._closing.is_set
            )
            with self._cond:
                if did in self._abandoned:  # already counted as failed by a flush that gave up on it
                    continue
                self._pending.discard(did)
                self._finishing.add(did)
            try:
                self._finished(name, did, result)
            finally:
                with self._cond:
                    self._finishing.discard(did)
                    self._cond.notify_all()

    def _finished(self, name: str, did: str, result: Delivery) -> None:
        status = SENT if result.ok else FAILED
        record = {"id": did, "channel": name, "status": status, "attempts": result.attempts, "t_s": time.time()}
        record.update(seconds=round(result.seconds, 3), error=result.error)
        try:
            self.outbox.add(record)
            if not result.ok:
                print(f"notify: {self.job_id}: {name} failed after {result.attempts} attempts: {result.error}")
            self.on_result(name, did, result)
        except Exception:  # the count is lost, the job is not: never let a sender thread die
            traceback.print_exc()

    def abandon(self, items: Sequence[tuple[str, str]], why: str) -> None:
        """Record deliveries a flush gave up on as failed (in the outbox and through `on_result`)."""
        for name, did in items:
            self._finished(name, did, Delivery(ok=False, attempts=0, error=why, seconds=0.0))
