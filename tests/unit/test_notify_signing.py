"""The webhook body is canonical JSON and its signature is GitHub's HMAC-SHA256 form."""

from __future__ import annotations

import hashlib
import hmac
import json

from orchestrator.notify.signing import body_of, sign, verify


def test_githubs_documented_vector() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(b"Hello, World!", "It's a Secret to Everybody") == expected
    assert verify(b"Hello, World!", "It's a Secret to Everybody", expected)


def test_sign_is_the_stdlib_hmac_and_round_trips() -> None:
    body = body_of({"id": "e1", "event": "stop", "psi": 0.25})
    header = sign(body, "s3cret")
    assert header == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert verify(body, "s3cret", header)


def test_tampered_body_wrong_secret_or_missing_header_fail() -> None:
    body = body_of({"id": "e1", "event": "stop"})
    header = sign(body, "s3cret")
    assert not verify(body.replace(b"stop", b"stoq"), "s3cret", header)
    assert not verify(body, "other", header)
    assert not verify(body, "s3cret", None)
    assert not verify(body, "s3cret", "")
    assert not verify(body, "s3cret", "sha256=" + "0" * 64)


def test_body_is_canonical_and_strict_json() -> None:
    a = body_of({"b": 1, "a": {"y": [1, 2], "x": "é"}, "nan": float("nan")})
    b = body_of({"nan": float("nan"), "a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert a == b == '{"a":{"x":"é","y":[1,2]},"b":1,"nan":null}'.encode()
    assert json.loads(a)["nan"] is None
