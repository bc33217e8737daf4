"""Secret masking: what reaches MLflow params has no credentials; ordinary names that merely contain the letters
(keep_checkpoints, monkey, top_k, max_tokens) are left alone."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config.compose import compose_job, job_to_dict
from orchestrator.tracking.secrets import MASK, is_secret_name, mask_config, mask_secrets, mask_value
from orchestrator.tracking.writer import flatten_config

SECRET_NAMES = [
    "token",
    "data.hf_token",
    "HF_TOKEN",
    "hfToken",
    "tracking.password",
    "db-passwd",
    "pwd",
    "wandb.api_key",
    "apiKey",
    "APIKey",
    "apikey",
    "aws.secret_access_key",
    "client_secret",
    "secrets.store",
    "s3Key",
    "private-key",
    "gcp.credentials",
    "credential",
    "auth",
    "OAuthToken",
    "http.authorization",
    "ssh.passphrase",
]
PLAIN_NAMES = [
    "train.keep_checkpoints",
    "monkey",
    "top_k",
    "train.max_tokens",
    "progress.tokens",
    "data.tokenizer_vocab",
    "data.tokenizer",
    "author",
    "keyboard",
    "tokenizer",
    "passage",
    "secretary",
    "keys_seen",
    "stop.resource",
    "turnkey",
    "donkey.kong",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_are_masked(name: str) -> None:
    assert is_secret_name(name)
    assert mask_secrets({name: "hunter2", "train.lr": "0.001"}) == {name: MASK, "train.lr": "0.001"}


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names_are_not(name: str) -> None:
    assert not is_secret_name(name)
    assert mask_secrets({name: "hunter2"}) == {name: "hunter2"}


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("https://user:pass@mlflow.example.com", "https://user:***@mlflow.example.com"),
        ("http://alice:p%40ss@10.0.0.5:5000/", "http://alice:***@10.0.0.5:5000/"),
        ("postgresql+psycopg2://cpr:s3cret@db:5432/mlflow", "postgresql+psycopg2://cpr:***@db:5432/mlflow"),
        ("https://host/data?token=abc&split=train", "https://host/data?token=***&split=train"),
        ("s3://bucket/x?X-Amz-Credential=AKIA&n=1", "s3://bucket/x?X-Amz-Credential=***&n=1"),
        ("see https://u:pw@a.io and ftp://v:pw2@b.io/f", "see https://u:***@a.io and ftp://v:***@b.io/f"),
        ("https://user@host/path", "https://user@host/path"),  # a user name alone is no secret
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/cpr_runs/mlflow.db", "sqlite:////tmp/cpr_runs/mlflow.db"),
        ("/data/corpus", "/data/corpus"),
    ],
)
def test_credentials_inside_urls_are_masked(value: str, masked: str) -> None:
    assert mask_value(value) == masked
    assert mask_secrets({"tracking.uri": value}) == {"tracking.uri": masked}


def test_unset_secrets_stay_visible_as_unset() -> None:
    assert mask_secrets({"data.hf_token": "null", "api_key": ""}) == {"data.hf_token": "null", "api_key": ""}


def test_nested_config_is_masked_like_its_flattened_params() -> None:
    cfg = {
        "tracking": {"uri": "https://u:pw@host", "experiment": "cpr"},
        "credentials": {"user": "me", "ids": [1, 2]},
        "hf_token": "abc",
        "unset_key": None,
        "train": {"keep_checkpoints": 2},
    }
    masked = mask_config(cfg)
    assert masked == {
        "tracking": {"uri": "https://u:***@host", "experiment": "cpr"},
        "credentials": {"user": MASK, "ids": [MASK, MASK]},
        "hf_token": MASK,
        "unset_key": None,
        "train": {"keep_checkpoints": 2},
    }
    assert "pw" not in str(masked) and cfg["hf_token"] == "abc"  # a copy: the job keeps its real values


def test_notification_targets_are_masked_by_position() -> None:
    """Apprise URLs carry their tokens in the path and a webhook's path is often its credential: only the scheme
    (and a real host) stays, whatever the param's name says."""
    params = {
        "notify.urls": json.dumps(["slack://TokenA/TokenB/TokenC", "json://127.0.0.1:8080/hook?token=t"]),
        "notify.webhook": "https://hooks.example.com/services/T0/B0/XyZ",
        "notify.secret": "hunter2",
        "notify.timeout_s": "10",
    }
    assert mask_secrets(params) == {
        "notify.urls": json.dumps(["slack://***", "json://127.0.0.1:8080/***"]),
        "notify.webhook": "https://hooks.example.com/***",
        "notify.secret": MASK,
        "notify.timeout_s": "10",
    }
    assert mask_secrets({"notify.urls": "[]", "notify.webhook": "null"}) == {
        "notify.urls": "[]",
        "notify.webhook": "null",
    }
    assert mask_secrets({"notify.urls.0": "discord://id/token"}) == {"notify.urls.0": "discord://***"}
    cfg = {"notify": {"urls": ["discord://id/token"], "webhook": "http://u:pw@h:9/x", "webhook_note": "http://h/x"}}
    assert mask_config(cfg) == {
        "notify": {"urls": ["discord://***"], "webhook": "http://***@h:9/***", "webhook_note": "http://h/x"}
    }
    assert flatten_config(mask_config(cfg))["notify.urls"] == mask_secrets(flatten_config(cfg))["notify.urls"]
    command = "/usr/bin/curl -H 'Authorization: Bearer t0k3n' https://h/x"  # arguments may carry a token
    assert mask_secrets({"notify.command": command}) == {"notify.command": "/usr/bin/curl ***"}
    assert mask_config({"notify": {"command": command}}) == {"notify": {"command": "/usr/bin/curl ***"}}
    assert mask_secrets({"notify.command": "/opt/hook.sh"}) == {"notify.command": "/opt/hook.sh"}


def test_no_shipped_param_is_masked() -> None:
    params = flatten_config(job_to_dict(compose_job([])))
    assert mask_secrets(params) == params


class HealthWithBasicAuth(http.server.BaseHTTPRequestHandler):
    """An MLflow server's /health behind basic auth (user `cpr`, password `s3cret`)."""

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"cpr:s3cret").decode()
        self.send_response(200 if ok and self.path == "/health" else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), HealthWithBasicAuth)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_plan_masks_the_password_in_the_tracking_uri(server: int, tmp_path: Path, monkeypatch) -> None:
    from orchestrator.submission import plan_of, prepare

    monkeypatch.chdir(tmp_path)
    uri = f"http://cpr:s3cret@127.0.0.1:{server}"
    job = compose_job(["+experiment=debug", "probe=off", "telemetry=off", f"tracking.uri={uri}"])
    sub = prepare(
        plan_of(job)
    ).submission  # the check reached the server with the credentials (a 401 would be an InputError)
    assert sub.params["tracking.uri"] == f"http://cpr:***@127.0.0.1:{server}"
    assert "s3cret" not in " ".join(sub.params.values())
    assert sub.tracking_uri == uri and sub.job["tracking"]["uri"] == uri  # the job itself still connects
