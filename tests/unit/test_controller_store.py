"""The controller's on-disk state: atomic JSON, append-only JSON lines, NaN written as null."""

from __future__ import annotations

import math

from orchestrator.controller.store import JobStore


def test_save_load_append_read(tmp_path) -> None:
    store = JobStore(tmp_path / "jobs" / "j1")
    store.save("tracker.json", {"a": 1, "loss": math.nan})
    assert store.load("tracker.json") == {"a": 1, "loss": None}
    store.save("tracker.json", {"a": 2})
    assert store.load("tracker.json") == {"a": 2}
    assert [p.name for p in store.root.iterdir()] == ["tracker.json"]  # no temp files left behind
    store.append("decisions.jsonl", [{"check": 1}, {"check": 2}])
    store.append("decisions.jsonl", [])
    store.append("decisions.jsonl", [{"check": 3, "ratio": math.inf}])
    assert store.read_lines("decisions.jsonl") == [{"check": 1}, {"check": 2}, {"check": 3, "ratio": None}]
    assert store.read_lines("missing.jsonl") == []
