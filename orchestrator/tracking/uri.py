"""Tracking URIs: the embedded default (SQLite under runs_dir) and a fast reachability check before a job starts.

A server behind basic auth may be given as http(s)://user:password@host (MLflow's client sends those credentials);
the check sends them too, and never prints the password.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.tracking.secrets import mask_value

DEFAULT_RUNS_DIR = "cpr_runs"
SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")


def default_tracking_uri(runs_dir: Path) -> str:
    """The embedded store: `<runs_dir>/mlflow.db` (artifacts beside it in `<runs_dir>/artifacts`)."""
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def check_tracking_uri(uri: str, *, timeout_s: float = 3.0) -> None:
    """InputError("tracking.uri", …) when the store cannot be reached; quick (≤ timeout_s)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else "file"
    fix = "use a reachable MLflow server (http://host:5000) or a local sqlite:////abs/path/mlflow.db"
    if scheme not in SCHEMES:
        raise InputError("tracking.uri", f"unsupported scheme {scheme!r} in {mask_value(uri)}", fix)
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        folder = path.parent
        if not folder.exists() and folder.parent.is_dir() and os.access(folder.parent, os.W_OK):
            folder.mkdir()  # one missing level (the runs dir) is created; a wrong path is refused
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise InputError("tracking.uri", f"{folder} does not exist or is not writable", fix)
    elif scheme in ("http", "https"):
        shown = mask_value(uri)
        try:
            with urllib.request.urlopen(health_request(uri), timeout=timeout_s) as answer:
                ok = answer.status == 200
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InputError("tracking.uri", f"no MLflow server answers at {shown} ({reason})", fix) from None
        if not ok:
            raise InputError("tracking.uri", f"{shown}/health did not answer OK", fix)


def health_request(uri: str) -> urllib.request.Request:
    """GET <uri>/health; credentials in the URI go as a basic-auth header (urllib would take them for a host)."""
    parts = urllib.parse.urlsplit(uri.rstrip("/"))
    host = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)) + "/health")
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    return request
