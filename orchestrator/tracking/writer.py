"""One MLflow run written from the controller: params, metrics by step, tags, artifacts — never blocking a report.

Writes go through `MlflowClient` (not the fluent API: the controller writes many runs from many threads) via one
ordered queue per run and a background thread that flushes it with `log_batch`. If the store fails, the queue
keeps the operations and the thread retries with backoff, in order (`pending()`, `last_error` say so).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from typing import Any

MAX_PARAM_LEN = 6000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
FLUSH_EVERY_S = 0.5


def metric_name(name: str) -> str:
    """MLflow accepts letters, digits, _ - . space / in keys; anything else becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def flatten_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} → {"a.b": "1"}; lists as JSON, None as "null"."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = "null" if value is None else str(value)
    return out


class RunWriter:
    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.last_error: str | None = None
        self._ops: deque[tuple[str, Any]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name=f"mlflow-{run_id[:8]}", daemon=True)
        self._thread.start()

    @classmethod
    def create(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        artifact_location: str | None = None,
    ) -> RunWriter:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:  # another submit created it first
                exp_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
        return cls(client, run.info.run_id, exp_id)

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> RunWriter:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        run = client.get_run(run_id)
        return cls(client, run_id, run.info.experiment_id)

    # -- queued writes -----------------------------------------------------------------------------------------
    def _put(self, op: str, payload: Any) -> None:
        with self._cv:
            self._ops.append((op, payload))
            if len(self._ops) >= 500:
                self._cv.notify()

    def log_params(self, params: dict[str, str]) -> None:
        self._put("params", {k: str(v)[:MAX_PARAM_LEN] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._put("metrics", [(metric_name(k), float(v), ts, int(step)) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        self._put("tags", {k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        self._put("text", (text, artifact_file))

    def log_file(self, local_path: str, artifact_path: str | None = None) -> None:
        self._put("file", (local_path, artifact_path))

    def pending(self) -> int:
        with self._cv:
            return len(self._ops) + (1 if self._busy else 0)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Block until everything queued so far is written (True), or timeout (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._cv.notify()
            while self._ops or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def close(self, status: str = "FINISHED", timeout_s: float = 60.0) -> None:
        self.flush(timeout_s)
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)
        self.client.set_terminated(self.run_id, status=status)

    # -- the writer thread -----------------------------------------------------------------------------------
    def _take(self) -> list[tuple[str, Any]]:
        """The next batch: consecutive metric ops merged (≤ METRICS_PER_BATCH points), else one op."""
        op, payload = self._ops[0]
        if op != "metrics":
            return [self._ops.popleft()]
        batch, n = [], 0
        while (
            self._ops
            and self._ops[0][0] == "metrics"
            and n + len(self._ops[0][1]) <= max(METRICS_PER_BATCH, len(payload))
        ):
            item = self._ops.popleft()
            batch.append(item)
            n += len(item[1])
        return batch

    def _write(self, batch: list[tuple[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        op, payload = batch[0]
        if op == "metrics":
            points = [Metric(k, v, ts, step) for _, pts in batch for (k, v, ts, step) in pts]
            self.client.log_batch(self.run_id, metrics=points)
        elif op == "params":
            items = list(payload.items())
            for i in range(0, len(items), PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + PARAMS_PER_BATCH]])
        elif op == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in payload.items()])
        elif op == "text":
            self.client.log_text(self.run_id, payload[0], payload[1])
        elif op == "file":
            self.client.log_artifact(self.run_id, payload[0], payload[1])

    def _loop(self) -> None:
        backoff = 0.5
        while True:
            with self._cv:
                if not self._ops:
                    if self._closed:
                        return
                    self._cv.wait(FLUSH_EVERY_S)
                    continue
                batch = self._take()
                self._busy = True
            try:
                self._write(batch)
                backoff = 0.5
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
            except Exception as exc:  # store unreachable: put the batch back at the front, retry later
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
                with self._cv:
                    self._ops.extendleft(reversed(batch))
                    self._busy = False
                    self._cv.notify_all()
                if self._closed:
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
