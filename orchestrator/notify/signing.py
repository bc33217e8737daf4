"""The body a webhook or command receives for an event, and its signature (pure: stdlib only).

The body is canonical JSON (sorted keys, no spaces, UTF-8, non-finite floats as null), so the same event always
gives the same bytes and a receiver can check `X-CPR-Signature-256` the way GitHub's webhooks are checked:
``"sha256=" + HMAC-SHA256(secret, body).hexdigest()``, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from orchestrator.core.numbers import json_safe

SIGNATURE_HEADER = "X-CPR-Signature-256"
EVENT_HEADER = "X-CPR-Event"
DELIVERY_HEADER = "X-CPR-Delivery"


def body_of(event: Mapping[str, Any]) -> bytes:
    """The canonical JSON bytes of `event`: key order does not matter, a NaN figure is null (strict JSON)."""
    return json.dumps(
        json_safe(dict(event)), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC-SHA256 of body keyed by secret>`, GitHub's X-Hub-Signature-256 form."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """True when `header` is the signature of `body` under `secret` (constant-time comparison)."""
    if not header:
        return False
    return hmac.compare_digest(sign(body, secret).encode(), header.strip().encode())
