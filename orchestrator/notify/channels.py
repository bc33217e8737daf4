"""Send one event over one channel, once; `deliver` retries it with jittered backoff and never raises.

Three channels, each `send(event)` making ONE attempt and raising `DeliveryError` (one line, URLs masked):

- `AppriseChannel`: chat and push services through Apprise URLs (`slack://…`, `discord://…`, `json://host/path`);
  the event's `title` and `message` are what people read.
- `WebhookChannel`: a POST of the canonical JSON body (`signing.body_of`), signed with `X-CPR-Signature-256` when a
  secret is set; redirects are not followed.
- `CommandChannel`: a local program (no shell) with the body on stdin and `CPR_EVENT` in its environment.

Events are plain dicts: `id` (unique per event), `event` (its name, "stop"), `title` (one line), `message` (a few
lines for chat) and any other JSON fields (the figures).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

import orchestrator
from orchestrator.notify.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, body_of, sign
from orchestrator.tracking.secrets import mask_url

__all__ = [
    "AppriseChannel",
    "Channel",
    "CommandChannel",
    "Delivery",
    "DeliveryError",
    "WebhookChannel",
    "deliver",
    "mask_url",
]

MAX_BACKOFF_S = 60.0
STDERR_CHARS = 300
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>)]*")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


class DeliveryError(Exception):
    """One failed attempt; the message is one line with every URL masked."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class Channel(Protocol):
    name: str  # "apprise" | "webhook" | "command"

    def send(self, event: Mapping[str, Any]) -> None:
        """One attempt; raises DeliveryError on any failure."""
        ...


def mask_text(text: str) -> str:
    """Every URL inside `text` through `mask_url`."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)


def one_line(text: str) -> str:
    return " ".join(mask_text(str(text)).split())


def _reason(exc: BaseException) -> str:
    """A short cause of a requests failure without its URL (requests' messages quote the path, tokens included)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = _ERRNO.findall(str(exc))
    return found[-1].strip() if found else type(exc).__name__


# --- Apprise -----------------------------------------------------------------------------------------------------

_APPRISE_LOG = logging.getLogger("apprise")
_APPRISE_LOG_LOCK = threading.Lock()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def apprise_log() -> Iterator[list[str]]:
    """Apprise's warnings and errors while the block runs, instead of on the root logger.

    Apprise logs a URL it cannot load in full ("Could not load Slack URL: slack://…", tokens included); cpr reports
    the reason itself, masked. Apprise's logger stops propagating for good on first use (the process's only
    Apprise user is this module); messages of concurrent calls may mix, which only affects an error's wording.
    """
    capture = _Capture()
    with _APPRISE_LOG_LOCK:
        _APPRISE_LOG.propagate = False
        if _APPRISE_LOG.level == logging.NOTSET or _APPRISE_LOG.level > logging.WARNING:
            _APPRISE_LOG.setLevel(logging.WARNING)
        _APPRISE_LOG.addHandler(capture)
    try:
        yield capture.messages
    finally:
        with _APPRISE_LOG_LOCK:
            _APPRISE_LOG.removeHandler(capture)


def apprise_service(url: str, timeout_s: float | None = None) -> Any:
    """Apprise's plugin instance for `url`, or None when Apprise cannot load it (unknown scheme, bad token).

    `timeout_s` becomes the service's connect and read timeouts (`socket_connect_timeout`, `socket_read_timeout`,
    which Apprise's HTTP plugins pass to requests as `timeout=`), unless the URL sets its own `?cto=` / `?rto=`.
    """
    import apprise

    with apprise_log():
        service = apprise.Apprise.instantiate(url, asset=_asset())
    if service is None:
        return None
    if timeout_s is not None:
        own = vars(service)
        if "socket_connect_timeout" not in own:
            service.socket_connect_timeout = float(timeout_s)
        if "socket_read_timeout" not in own:
            service.socket_read_timeout = float(timeout_s)
    return service


def _asset() -> Any:
    """Apprise's settings for cpr: sequential sends in the calling thread's call, no redirects, no plugins or
    configuration loaded from disk (AppriseAsset's defaults already load none: no plugin_paths, memory storage)."""
    import apprise

    asset = apprise.AppriseAsset(async_mode=False)
    if hasattr(asset, "http_redirects"):  # Apprise ≥ 2: the webhook channel does not follow redirects either
        asset.http_redirects = False
    return asset


class AppriseChannel:
    """Apprise URLs; one `send` notifies every one of them once (`title`, and `message` as the body)."""

    name = "apprise"

    def __init__(self, urls: Sequence[str], timeout_s: float, name: str = "apprise") -> None:
        import apprise

        self.name = name  # the outbox and the counts tell channels apart by it

        if not urls:
            raise ValueError("AppriseChannel needs at least one URL")
        self.timeout_s = float(timeout_s)
        self.target = ", ".join(mask_url(u) for u in urls)
        # No attachments, ever: events carry none, and ContentLocation.INACCESSIBLE refuses any local file.
        self._apprise = apprise.Apprise(asset=_asset(), location=apprise.ContentLocation.INACCESSIBLE)
        for url in urls:
            service = apprise_service(url, self.timeout_s)
            if service is None:
                raise ValueError(f"Apprise cannot load {mask_url(url)} (check it with check_apprise_url)")
            self._apprise.add(service)

    def send(self, event: Mapping[str, Any]) -> None:
        import apprise

        title = str(event.get("title") or event.get("event") or "cpr")
        body = str(event.get("message") or title)
        try:
            with apprise_log() as log:
                ok = self._apprise.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT)
        except Exception as e:
            raise DeliveryError(f"apprise {self.target}: {type(e).__name__}: {e}") from e
        if not ok:
            why = log[-1] if log else "a service refused the notification"
            raise DeliveryError(f"apprise {self.target}: {why}")


# --- Webhook -----------------------------------------------------------------------------------------------------


class WebhookChannel:
    """A POST of the event's canonical JSON, signed when `secret` is set; any status ≥ 300 is a failure."""

    name = "webhook"

    def __init__(self, url: str, secret: str | None, timeout_s: float) -> None:
        self.url = url
        self.secret = secret or None
        self.timeout_s = float(timeout_s)
        self.target = mask_url(url)

    def headers(self, event: Mapping[str, Any], body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"cpr/{orchestrator.__version__}",
            EVENT_HEADER: str(event.get("event", "")),
            DELIVERY_HEADER: str(event.get("id", "")),
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        return headers

    def send(self, event: Mapping[str, Any]) -> None:
        body = body_of(event)
        try:
            response = requests.post(
                self.url,
                data=body,
                headers=self.headers(event, body),
                timeout=(self.timeout_s, self.timeout_s),
                allow_redirects=False,
            )
        except requests.RequestException as e:
            raise DeliveryError(f"webhook {self.target}: {_reason(e)}") from None
        with contextlib.suppress(Exception):
            response.close()
        if response.status_code >= 300:
            raise DeliveryError(f"webhook {self.target}: HTTP {response.status_code} {response.reason or ''}")


# --- Command -----------------------------------------------------------------------------------------------------


class CommandChannel:
    """A local program run without a shell: the canonical JSON on stdin, `CPR_EVENT=<name>` in its environment.

    On timeout its whole process group is killed (a shell script's children too, which would otherwise hold its
    pipes open); a non-zero exit is a failure that quotes the last line of its stderr.
    """

    name = "command"

    def __init__(self, argv: Sequence[str], timeout_s: float) -> None:
        if not argv:
            raise ValueError("CommandChannel needs a program")
        self.argv = [str(a) for a in argv]
        self.timeout_s = float(timeout_s)
        self.target = os.path.basename(self.argv[0])

    def send(self, event: Mapping[str, Any]) -> None:
        env = {**os.environ, "CPR_EVENT": str(event.get("event", ""))}
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            raise DeliveryError(f"command {self.target}: {e.strerror or type(e).__name__}") from None
        try:
            _, err = proc.communicate(body_of(event), timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.communicate()
            raise DeliveryError(f"command {self.target}: timed out after {self.timeout_s:g} s") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            lines = [line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()]
            last = lines[-1][:STDERR_CHARS] if lines else "no stderr"
            code = proc.returncode
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise DeliveryError(f"command {self.target}: {how}: {last}")


# --- Retries -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    error: str | None  # the last attempt's error (one line, masked); None when delivered
    seconds: float  # wall time of all attempts and waits


def backoff_delay(k: int, backoff_s: float, rng: Callable[[], float] = random.random) -> float:
    """The wait before retry k+1 (k = 0, 1, …): full jitter, uniform in [0, min(60, backoff_s · 2^k)]."""
    return rng() * min(MAX_BACKOFF_S, max(0.0, backoff_s) * 2.0 ** min(k, 64))


def deliver(
    channel: Channel,
    event: Mapping[str, Any],
    *,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
) -> Delivery:
    """Up to 1 + `retries` attempts of `channel.send(event)`, with `backoff_delay` between them; gives up early
    when `should_stop()` is true after a failed attempt (the job is shutting down). Never raises."""
    start = time.monotonic()
    attempts = 0
    error: str | None = None
    for k in range(1 + max(0, int(retries))):
        if k > 0:
            if _stopping(should_stop):
                break
            try:
                sleep(backoff_delay(k - 1, backoff_s))
            except Exception:
                break
            if _stopping(should_stop):
                break
        attempts += 1
        try:
            channel.send(event)
        except Exception as e:
            error = str(e) if isinstance(e, DeliveryError) else one_line(f"{type(e).__name__}: {e}")
            continue
        return Delivery(ok=True, attempts=attempts, error=None, seconds=time.monotonic() - start)
    return Delivery(ok=False, attempts=attempts, error=error, seconds=time.monotonic() - start)


def _stopping(should_stop: Callable[[], bool]) -> bool:
    try:
        return bool(should_stop())
    except Exception:
        return True
