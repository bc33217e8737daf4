"""Refuse a bad notify setting before the job starts: one `InputError` naming the field, its URL masked."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from orchestrator.errors import InputError
from orchestrator.notify.channels import AppriseChannel, Channel, CommandChannel, WebhookChannel, apprise_service
from orchestrator.tracking.secrets import mask_url

if TYPE_CHECKING:
    from orchestrator.config.schema import NotifyConfig

APPRISE_FIX = (
    "see https://github.com/caronc/apprise/wiki for each service's URL; a plain HTTP endpoint is json://host/path"
)


def _known_scheme(scheme: str) -> bool:
    try:
        from apprise.manager_plugins import NotificationManager

        return scheme.lower() in NotificationManager()
    except Exception:  # an Apprise without the plugin manager: say "malformed" rather than guess
        return True


def check_apprise_url(url: str, field: str) -> None:
    """An Apprise URL that Apprise can load (a known scheme with its tokens), else InputError naming `field`."""
    if not isinstance(url, str) or not url.strip():
        raise InputError(field, "is empty", "give an Apprise URL such as slack://TokenA/TokenB/TokenC")
    scheme, sep, _ = url.strip().partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        raise InputError(field, f"{mask_url(url)} is not a URL", APPRISE_FIX)
    if not _known_scheme(scheme):
        raise InputError(field, f"{scheme}:// is not a scheme Apprise knows", APPRISE_FIX)
    if apprise_service(url) is None:
        raise InputError(
            field, f"Apprise cannot load {mask_url(url)}: a token or field is missing or malformed", APPRISE_FIX
        )


def check_webhook_url(url: str, field: str) -> None:
    """An http(s) URL with a host, else InputError naming `field`."""
    try:
        parts = urlsplit(url.strip()) if isinstance(url, str) else None
        host = parts.hostname if parts else None
        _ = parts.port if parts else None
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise InputError(
            field, f"{mask_url(str(url))} is not an http(s) URL with a host", "e.g. https://hooks.example.com/cpr"
        )


def check_command(argv: Sequence[str], field: str) -> None:
    """A non-empty argv whose program exists (on PATH for a bare name) and is executable, else InputError."""
    if isinstance(argv, str) or not argv or not str(argv[0]).strip():
        raise InputError(
            field, "needs a program and its arguments as a list", 'e.g. ["/usr/local/bin/notify-me", "--quiet"]'
        )
    program = str(argv[0])
    if os.sep not in program:
        if shutil.which(program) is None:
            raise InputError(field, f"program {program!r} is not on PATH", "give its full path, or install it")
        return
    if not os.path.isfile(program):
        raise InputError(field, f"program {program} does not exist", "give the full path of an executable file")
    if not os.access(program, os.X_OK):
        raise InputError(field, f"program {program} is not executable", f"chmod +x {program}")


def channels_of(
    urls: Sequence[str] | None,
    webhook: str | None,
    secret: str | None,
    command: Sequence[str] | None,
    timeout_s: float,
) -> list[Channel]:
    """The configured channels, each checked first (InputError naming `notify.urls[i]`, `notify.webhook` or
    `notify.command`); an empty list when none is. Each Apprise URL gets a channel of its own, so a retry
    re-sends only to the service that failed."""
    channels: list[Channel] = []
    urls = list(urls or ())
    for i, url in enumerate(urls):
        check_apprise_url(url, f"notify.urls[{i}]")
        channels.append(AppriseChannel([url], timeout_s, name="apprise" if len(urls) == 1 else f"apprise[{i}]"))
    if webhook:
        check_webhook_url(webhook, "notify.webhook")
        channels.append(WebhookChannel(webhook, secret, timeout_s))
    if command:
        check_command(command, "notify.command")
        channels.append(CommandChannel(command, timeout_s))
    return channels


def notify_channels(n: NotifyConfig) -> list[Channel]:
    """A job's channels from its `notify.*` config (`notify.command` split as a shell would), each checked."""
    try:
        argv = shlex.split(n.command) if n.command else None
    except ValueError as e:  # an unclosed quote
        raise InputError("notify.command", f"cannot be split into a program and its arguments: {e}") from None
    return channels_of(n.urls, n.webhook, n.secret, argv, n.timeout_s)


def check_notify(n: NotifyConfig) -> None:
    """Refuse a bad notify setting (one line naming the field) before anything starts."""
    notify_channels(n)
