"""Files written so that a reader, or a process restarted after a crash, never sees half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.core.numbers import json_safe


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, fsync, rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(json_safe(data), fh, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_json_lines(path: Path, records: list[Any], *, strict: bool = True) -> None:
    """Append one JSON line per record and fsync: a crash loses no line already returned. `strict`: non-finite
    numbers become null (`json_safe`); otherwise NaN is written as JSON's NaN extension."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for record in records:
            fh.write((json.dumps(json_safe(record), allow_nan=False) if strict else json.dumps(record)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
