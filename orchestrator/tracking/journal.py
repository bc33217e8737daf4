"""A write-ahead log of one run's MLflow writes on local disk: nothing queued is lost when the store is unreachable
or the controller dies, and a replayed write is recognised.

Each write is appended as one JSON line (fsynced) before it is queued; once the store has taken it, its sequence
number is recorded in an acknowledgement file (atomic replace). On start-up the lines past that number are the
writes still owed, in their order. A torn last line (a crash mid-append) was never queued: it is skipped.
"Marks" ride on the writes: a caller tags a write with (key, step), e.g. ("train", 120), and after a restart asks
whether that step was journaled under that key, so a report retried after a crash is not logged twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.files import append_json_lines, write_json_atomic

JOURNAL = "mlflow_journal.jsonl"
ACK = "mlflow_ack.json"


class Marks:
    """The steps journaled under each key. A set, not a high-water mark: the reports a rank sent while the controller
    was down are retried on the restarted actor, whose threads may run them in any order, so a step below the highest
    can still be owed. Per key: every step ≤ `floor`, and the last KEEP steps above it (retries are recent)."""

    KEEP = 1024

    def __init__(self, saved: Mapping[str, Any] | None = None) -> None:
        self._floor: dict[str, int] = {}
        self._steps: dict[str, set[int]] = {}
        for key, value in (saved or {}).items():
            if isinstance(value, int):  # an acknowledgement written before marks were sets: a high-water mark
                self._floor[key], self._steps[key] = value, set()
            else:
                self._floor[key], self._steps[key] = int(value["floor"]), {int(s) for s in value["steps"]}

    def add(self, key: str, step: int) -> None:
        steps = self._steps.setdefault(key, set())
        if step > self._floor.get(key, -1):
            steps.add(step)
        if len(steps) > self.KEEP:
            lowest = min(steps)
            steps.discard(lowest)
            self._floor[key] = lowest

    def __contains__(self, mark: tuple[str, int]) -> bool:
        key, step = mark
        return step <= self._floor.get(key, -1) or step in self._steps.get(key, ())

    def to_dict(self) -> dict[str, Any]:
        return {key: {"floor": self._floor.get(key, -1), "steps": sorted(steps)} for key, steps in self._steps.items()}


class Journal:
    """The files of one run's write-ahead log, in the job's state folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / JOURNAL
        self.ack_path = self.root / ACK

    def append(self, record: dict[str, Any]) -> None:
        """One write, durable before it is queued (NaN metric values are legal in MLflow and in this JSON)."""
        append_json_lines(self.path, [record], strict=False)

    def ack(self, seq: int, marks: Marks, *, drained: bool) -> None:
        """Everything up to `seq` is in the store; `drained`: nothing else is owed, so the log starts afresh."""
        write_json_atomic(self.ack_path, {"seq": seq, "marks": marks.to_dict()})
        if drained:
            with self.path.open("w", encoding="utf-8") as fh:
                fh.flush()
                os.fsync(fh.fileno())

    def recover(self) -> tuple[int, Marks, list[dict[str, Any]]]:
        """(last acknowledged seq, marks of everything journaled, the writes still owed in order)."""
        seq, marks = 0, Marks()
        if self.ack_path.exists():
            ack = json.loads(self.ack_path.read_text(encoding="utf-8"))
            seq, marks = int(ack["seq"]), Marks(ack["marks"])
        owed: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a torn last line: that write was never queued
                        break
                    if record["seq"] > seq:
                        owed.append(record)
        for record in owed:
            if record.get("mark"):
                marks.add(*record["mark"])
        return seq, marks, owed
