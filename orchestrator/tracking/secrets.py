"""Mask secrets before they reach MLflow: params whose names look like credentials, and passwords inside URLs.

MLflow params are readable by anyone who can open the UI and are kept forever, so a `+data.hf_token=…` override or
a `tracking.uri=https://user:password@host` must not land there as typed. A name is secret-looking when one of its
words (split on `.`, `_`, `-`, `/` and camelCase) is a credential word; `keep_checkpoints`, `monkey` or `top_k`
are not.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

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
    says nothing set), and every other value has its URLs' credentials masked."""
    return {k: (v if v in ("", "null") else MASK) if is_secret_name(k) else mask_value(v) for k, v in params.items()}


def mask_config(cfg: Any, *, secret: bool = False) -> Any:
    """The same masking over a nested config (for a resolved config written as an artifact): every value under a
    secret-named key, lists and mappings included, as `flatten_config` + `mask_secrets` would mask it."""
    if isinstance(cfg, dict):
        return {k: mask_config(v, secret=secret or (isinstance(k, str) and is_secret_name(k))) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [mask_config(v, secret=secret) for v in cfg]
    if secret and cfg is not None and cfg != "":
        return MASK
    return mask_value(cfg) if isinstance(cfg, str) else cfg
