"""The controller's persistent state on local disk: one folder per job, written atomically.

`job.json` (the job's config, run id, data, state), `tracker.json` (ledger, rule state, decisions, curve — the
whole `JobTracker`), and append-only logs `decisions.jsonl` and `telemetry.jsonl`. A restarted controller
rebuilds every job from these files; nothing lives only in its memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.files import append_json_lines, write_json_atomic


class JobStore:
    """Files of one job under `<runs_dir>/jobs/<job_id>/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def save(self, name: str, data: Any) -> None:
        write_json_atomic(self.path(name), data)

    def load(self, name: str) -> Any:
        with self.path(name).open(encoding="utf-8") as fh:
            return json.load(fh)

    def append(self, name: str, records: list[dict[str, Any]]) -> None:
        """Append JSON lines and flush them to disk."""
        append_json_lines(self.path(name), records)

    def read_lines(self, name: str) -> list[dict[str, Any]]:
        path = self.path(name)
        if not path.exists():
            return []
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
