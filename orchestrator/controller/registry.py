"""Where a restarted controller finds its jobs: a JSON file listing each job's store folder.

Ray restarts a dead actor with its original constructor arguments, so the file's path is one of them
(`controller_handle(registry=...)`). Its default lies in the Ray session's folder on the node that created the
controller (`<ray temp dir>/<session name>/cpr/controller-<namespace>.json`, from Ray's public runtime context): it
belongs to that cluster's lifetime, as the controller does, so a new cluster never restores an old one's jobs, and
two namespaces keep two lists. A controller that Ray may restart on another node needs a path that node can read
(a shared folder): pass `registry=` then.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from orchestrator.controller.store import write_json_atomic


class JobRegistry:
    """job id → store folder, rewritten atomically on every registration."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def folders(self) -> dict[str, Path]:
        """Every registered job's folder; none when the file is absent or unreadable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {job_id: Path(folder) for job_id, folder in data.get("jobs", {}).items()}

    def register(self, job_id: str, folder: str | Path) -> None:
        with self._lock:
            jobs = {k: str(v) for k, v in self.folders().items()}
            jobs[job_id] = str(Path(folder).resolve())
            write_json_atomic(self.path, {"jobs": jobs})


def default_registry(namespace: str, temp_dir: str, session_name: str) -> Path:
    """The registry's default path: in the Ray session's folder, one per namespace."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in namespace)
    return Path(temp_dir) / session_name / "cpr" / f"controller-{safe}.json"
