"""Mask secrets before they reach MLflow: params whose names look like credentials, and passwords inside URLs.

MLflow params are readable by anyone who can open the UI and are kept forever, so a `+data.hf_token=…` override or
a `tracking.uri=https://user:password@host` must not land there as typed. A name is secret-looking when one of its
words (split on `.`, `_`, `-`, `/` and camelCase) is a credential word; `keep_checkpoints`, `monkey` or `top_k`
are not.

Notification targets are secrets by position, not by name: an Apprise URL carries its tokens in the path
(`slack://TokenA/TokenB/TokenC`) and a webhook's path is often its only credential, so `notify.urls` and
`notify.webhook` are shown through `mask_url` (scheme and host only).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

MASK = "***"
SECRET_WORDS = frozenset(
    {
        "token",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "key",
        "apikey",
        "credential",
        "credentials",
        "auth",
        "authorization",
    }
)

_SEPARATORS = re.compile(r"[._\-/\s]+")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")  # camelCase and CONSTANT_CASE into words
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<netloc>[^/?#\s]*)(?P<path>[^?#\s]*)(?:\?(?P<query>[^#\s]*))?"
)


def name_words(name: str) -> list[str]:
    """The lower-case words of a param or query-parameter name: "data.hfToken" → ["data", "hf", "token"]."""
    return [w.lower() for part in _SEPARATORS.split(name) for w in _WORDS.findall(part)]


def is_secret_name(name: str) -> bool:
    return any(w in SECRET_WORDS for w in name_words(name))


# Schemes whose netloc is a real host (Apprise's generic HTTP plugins included): the host stays visible. For every
# other Apprise scheme the "host" is the first token (discord://webhook_id/webhook_token), so only the scheme stays.
HOST_SCHEMES = frozenset({"http", "https", "json", "jsons", "xml", "xmls", "form", "forms"})
NOTIFY_TARGETS = frozenset({"notify.urls", "notify.webhook"})


def mask_url(url: str) -> str:
    """A notification URL safe to show: `https://hooks.example.com:8443/***` (scheme, host and port; user-info,
    path and query masked), `slack://***` for a scheme without a real host; `***` for what is not a URL."""
    text = url.strip()
    scheme, sep, _ = text.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return MASK if text else text
    if scheme.lower() not in HOST_SCHEMES:
        return f"{scheme}://{MASK}"
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port or bracket
        return f"{scheme}://{MASK}"
    if not host:
        return f"{scheme}://{MASK}"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if "@" in parts.netloc:
        netloc = f"{MASK}@{netloc}"
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{scheme}://{netloc}/{MASK}" if hidden else f"{scheme}://{netloc}"


def _mask_url_list(value: str) -> str:
    """`notify.urls` as flattened (a JSON list), each URL through `mask_url`; anything else masked whole."""
    try:
        urls = json.loads(value)
    except ValueError:
        return mask_url(value)
    if not isinstance(urls, list):
        return MASK
    return json.dumps([mask_url(u) if isinstance(u, str) else u for u in urls])


def _mask_param(name: str, value: str) -> str:
    if value in ("", "null"):  # unset says nothing
        return value
    if is_secret_name(name):
        return MASK
    if name == "notify.urls":  # flatten_config writes a list as JSON
        return _mask_url_list(value)
    if name in NOTIFY_TARGETS or name.startswith("notify.urls."):
        return mask_url(value)
    if name == "notify.command":
        return _mask_command(value)
    return mask_value(value)


def _mask_command(value: str) -> str:
    """`notify.command` with its arguments masked: they may carry a token (`curl -H 'Authorization: …'`)."""
    program, _, args = value.strip().partition(" ")
    return f"{program} {MASK}" if args.strip() else program


def _mask_url(match: re.Match[str]) -> str:
    netloc, query = match["netloc"], match["query"]
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    out = f"{match['scheme']}{netloc}{match['path']}"
    if query is not None:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in pairs], quote_via=quote, safe="*")
        out += f"?{query}"
    return out


def mask_value(value: str) -> str:
    """Passwords in any URL inside `value` (`https://user:pw@host` → `https://user:***@host`), and the values of
    secret-named query parameters (`?token=…`)."""
    return _URL.sub(_mask_url, value) if "://" in value else value


def mask_secrets(params: dict[str, str]) -> dict[str, str]:
    """A copy of `params` safe to log: secret-named values become `***` (an unset one, "null" or "", stays: it
    says nothing set), notification targets go through `mask_url`, and every other value has its URLs'
    credentials masked."""
    return {k: _mask_param(k, v) for k, v in params.items()}


def mask_config(cfg: Any, *, secret: bool = False, _name: str = "") -> Any:
    """The same masking over a nested config (for a resolved config written as an artifact): every value under a
    secret-named key, lists and mappings included, and the notification targets, as `flatten_config` +
    `mask_secrets` would mask them."""
    if isinstance(cfg, dict):
        return {
            k: mask_config(
                v, secret=secret or (isinstance(k, str) and is_secret_name(k)), _name=f"{_name}.{k}".lstrip(".")
            )
            for k, v in cfg.items()
        }
    if isinstance(cfg, list | tuple):
        return [mask_config(v, secret=secret, _name=_name) for v in cfg]
    if secret and cfg is not None and cfg != "":
        return MASK
    if isinstance(cfg, str) and cfg and _name == "notify.command":
        return _mask_command(cfg)
    if isinstance(cfg, str):
        return mask_url(cfg) if cfg and _name in NOTIFY_TARGETS else mask_value(cfg)
    return cfg
