"""Prepare a planned job for the controller: reach the tracking store, tokenize the data (cached), check the model
fits the stated memory, and name its folders. No Ray yet."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.compose import job_to_dict
from orchestrator.errors import InputError
from orchestrator.submission.plan import JobPlan
from orchestrator.submission.preflight import check_memory


def new_job_id(name: str) -> str:
    """The job's name, when it was submitted, and four hex digits: unique on a cluster."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass(frozen=True, kw_only=True)
class Submission:
    """Everything the controller needs to run a checked job (plain data: it crosses to a Ray actor)."""

    job_id: str
    job: dict[str, Any]
    prepared: dict[str, Any]
    flops_model: dict[str, Any]
    tracking_uri: str
    artifact_location: str | None
    state_dir: str
    checkpoint_dir: str
    blueprint_dir: str
    carbon_intensity_kg_per_kwh: float | None
    params: dict[str, str]
    sweep: str | None = None
    """The `cpr submit -m` it belongs to (tag `cpr.sweep`), None for a single job."""

    def send(self, controller: Any) -> dict[str, Any]:
        """Submit to the controller actor; its answer names the MLflow run. A refusal is the InputError it raised."""
        import ray

        try:
            return ray.get(controller.submit.remote(**asdict(self)))
        except ray.exceptions.RayTaskError as exc:  # the controller refused it (e.g. a duplicate name): one line
            if isinstance(exc.cause, InputError):
                raise exc.cause from None
            raise


@dataclass(frozen=True)
class Prepared:
    """A planned job made ready: what goes to the controller, and the model's size the memory check used."""

    plan: JobPlan
    submission: Submission
    n_params: int


def prepare(
    plan: JobPlan,
    *,
    output_dir: Path | None = None,
    sweep: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Prepared:
    """Every check that needs the outside world but no Ray: tracking store, carbon data, data, model memory.
    `output_dir` (Hydra's run folder) is recorded in the run's params; `log` hears the data preparation."""
    from orchestrator.core import names
    from orchestrator.data.prepare import eval_set_fingerprint, prepare_data, prepare_domains
    from orchestrator.data.selection import apply_selection, check_selected_tokens
    from orchestrator.models import count_parameters, flops_model
    from orchestrator.tracking.secrets import mask_secrets
    from orchestrator.tracking.uri import check_tracking_uri, default_tracking_uri
    from orchestrator.tracking.writer import flatten_config

    job = plan.job
    runs_dir = plan.runs_dir
    tracking_uri = job.tracking.uri or default_tracking_uri(runs_dir)
    check_tracking_uri(tracking_uri)
    carbon = None
    if job.telemetry.enabled:
        from orchestrator.telemetry.carbon import carbon_intensity_kg_per_kwh

        carbon = carbon_intensity_kg_per_kwh(job.telemetry.country_iso_code)
    prepared = prepare_data(job.data, log=log)
    if job.data.selection is not None:
        prepared = apply_selection(prepared, job.data.selection, log=log)
        check_selected_tokens(prepared, job.train.seq_len)
    configs = job.data.domain_configs()
    prepared = prepare_domains({d: configs[d] for d in job.held_out_domains()}, prepared, log=log)
    if job.probe.enabled:
        domains = job.probe_domains()
        need = job.probe.batches * job.train.micro_batch * job.cluster.num_workers + job.train.seq_len + 1
        for name in domains:
            have = len(prepared.tokens(name))
            if have < need:
                raise InputError(
                    f"data.domains.{name}",
                    f"has {have:,} tokens; probe.batches={job.probe.batches} on {job.cluster.num_workers} ranks "
                    f"needs {need:,}",
                    "add documents to the domain or lower probe.batches",
                )
    need = job.eval_sequences() + job.train.seq_len + 1
    for name in job.psi.domains():
        if (have := len(prepared.tokens(name))) < need:
            raise InputError(
                f"data.domains.{name}",
                f"has {have:,} tokens; Ψ's mix evaluates {job.eval_sequences()} sequences of {job.train.seq_len}",
                "add documents to the domain or lower train.eval_sequences",
            )
    vocab = job.model.vocab_size or prepared.vocab_size
    if vocab < prepared.vocab_size:
        raise InputError(
            "model.vocab_size",
            f"{vocab} is smaller than the tokenizer's {prepared.vocab_size}",
            "leave model.vocab_size=null",
        )
    counts = count_parameters(job.model, vocab)
    check_memory(job, counts.total)
    job_id = new_job_id(job.name)
    job_dict = job_to_dict(job)
    job_dict["model"]["vocab_size"] = vocab
    params = mask_secrets(flatten_config(job_dict))  # MLflow params are readable by anyone with the UI
    params.update({"cpr.n_params": str(counts.total), "cpr.hydra_output_dir": str(output_dir or "")})
    if prepared.selection is not None:  # the run says what it trained on, not only the manifest's path
        params.update({"data.selection_id": prepared.selection, "data.selection_tokens": str(prepared.n_train_tokens)})
    params.update(job.psi.spec().params())  # what Ψ is, defaults filled in: runs are compared on the same Ψ only
    params[names.EVAL_SET] = eval_set_fingerprint(prepared, job.psi.domains(), params, job.eval_sequences())
    checkpoint_dir = Path(job.train.checkpoint_dir).resolve() if job.train.checkpoint_dir else runs_dir / "checkpoints"
    submission = Submission(
        job_id=job_id,
        job=job_dict,
        prepared={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(prepared).items()},
        flops_model=asdict(flops_model(job.model, vocab, job.train.seq_len)),
        tracking_uri=tracking_uri,
        artifact_location=str(runs_dir / "artifacts") if job.tracking.uri is None else None,
        state_dir=str(runs_dir / "jobs" / job_id),
        checkpoint_dir=str(checkpoint_dir / job_id),
        blueprint_dir=str(runs_dir / "blueprints"),
        carbon_intensity_kg_per_kwh=carbon,
        params=params,
        sweep=sweep,
    )
    return Prepared(plan=plan, submission=submission, n_params=counts.total)
