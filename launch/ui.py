"""`cpr ui`: the MLflow UI over cpr's run store, on 127.0.0.1:5000 unless told otherwise.

The UI has no authentication: whoever reaches its port can read and change every run. So it listens on the loopback
interface by default; another --host is allowed, with a warning. The host and port are checked before the UI starts
(one-line errors, exit 2); then this process becomes `mlflow ui`. `--print` shows that command instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import ipaddress
import os
import shlex
import socket
import sys
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.tracking.secrets import mask_value

SERVER_SCHEMES = ("http", "https", "databricks")


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "ui",
        help="open the MLflow UI on the run store (http://127.0.0.1:5000)",
        description="Serve the MLflow UI over cpr's run store. It has no authentication, so it listens on "
        "127.0.0.1 (this machine only) unless --host says otherwise.",
    )
    p.add_argument(
        "--tracking-uri", default=None, help="the store to show (default: the SQLite store under ./cpr_runs)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    p.add_argument("--print", "--dry-run", dest="dry_run", action="store_true", help="print the command, start nothing")
    p.set_defaults(func=ui)


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """`mlflow ui` over the store; a SQLite store's new experiments keep their artifacts beside it, as cpr's do."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", str(Path(uri.removeprefix("sqlite:///")).parent / "artifacts")]
    return cmd


def is_loopback(host: str, port: int) -> bool:
    """True when every address `host` resolves to is a loopback one; InputError when it resolves to none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(
            "--host", f"cannot resolve {host!r} ({exc})", "use 127.0.0.1 or an address of this machine"
        ) from None
    return all(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).is_loopback for info in infos)


def check_free(host: str, port: int) -> None:
    """InputError when nothing could listen on host:port now (in use, not an address of this machine, no right)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError("--port", f"{host}:{port} is in use", "pick another with --port") from None
            if exc.errno == errno.EACCES:
                raise InputError("--port", f"no permission to listen on {port}", "use a port above 1023") from None
            raise InputError(
                "--host", f"cannot listen on {host}:{port} ({exc.strerror})", "use 127.0.0.1 or an address here"
            ) from None


def ui(args: argparse.Namespace) -> int:
    from launch.jobs import _tracking_uri

    if args.tracking_uri and args.tracking_uri.split(":", 1)[0].lower() in SERVER_SCHEMES:
        raise InputError(
            "--tracking-uri",
            f"{mask_value(args.tracking_uri)} is a tracking server, whose UI is at that address already",
            "open it in a browser; `cpr ui` serves a local store (sqlite:///…/mlflow.db)",
        )
    if not 1 <= args.port <= 65535:
        raise InputError("--port", f"{args.port} is not a TCP port", "use 1-65535, e.g. 5000")
    uri = _tracking_uri(args.tracking_uri)
    loopback = is_loopback(args.host, args.port)
    cmd = ui_command(uri, args.host, args.port)
    if not args.dry_run:
        if importlib.util.find_spec("mlflow") is None:
            raise InputError("mlflow", "is not installed", "install cpr with its train extra: pip install '.[train]'")
        check_free(args.host, args.port)
    if not loopback:  # every check passed: an error stays one line
        sys.stderr.write(
            f"cpr: warning: the MLflow UI has no authentication; on {args.host} anyone who can reach port "
            f"{args.port} can read and change every run\n"
        )
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    where = f"[{args.host}]" if ":" in args.host else args.host
    print(f"MLflow UI on http://{where}:{args.port} over {mask_value(uri)} (Ctrl-C stops it)", flush=True)
    sys.stderr.flush()
    os.execv(cmd[0], cmd)  # this process becomes the UI: Ctrl-C and signals reach it directly
    return 0  # not reached
