"""`cpr select`'s job (the paper's Algorithm 2; docs/select.md): the base resolved and checked, the corpus cut into
windows, the ranks (Ray actors) scoring them in parallel, f_φ fitted and validated, the top fraction kept, the
manifest written, the cross-influence map added to the base's blueprint, and everything logged to an MLflow run.

The pure parts are `orchestrator.select`; the ranks' torch code is `orchestrator.worker.scoring`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config.schema import JobConfig, SelectBlocks
from orchestrator.errors import InputError
from orchestrator.select import (
    CrossInfluence,
    SelectionManifest,
    choose,
    cross_influence,
    cut_windows,
    fit_predictor,
)
from orchestrator.select.scores import length_bias, window_scores
from orchestrator.submission.adapt import AdaptBase, refuse_model_override, resolve_base
from orchestrator.submission.plan import JobPlan, plan_of

SELECTIONS_DIR = "selections"
"""Under runs_dir: the manifests `cpr select` writes (unless select.output names a file)."""
FEATURE_CHUNK = 256
"""Windows per forward-pass task (the progress bar's unit)."""
FEATURE_BATCH = 32
ROOT_BLOCK = "(root)"
FEATURES = "pooled last hidden state, mean token loss, log head-gradient norm (ghost norm), log length"

Progress = Callable[[str, int, int], None]
"""(phase, done, total): what the progress bar hears."""


@dataclass(frozen=True)
class SelectPlan:
    """A select job ready to run: the job (model and tokenizer from the base) and the base it scores with."""

    plan: JobPlan
    base: AdaptBase


@dataclass
class SelectResult:
    """What `cpr select` prints at the end."""

    job_id: str
    run_id: str
    manifest_path: Path
    manifest: SelectionManifest
    seconds: dict[str, float] = field(default_factory=dict)
    blueprint: str | None = None
    """"MODEL_ID:vN (its file)" of the blueprint version published with the cross-influence map; None when the base
    ships no blueprint."""
    j_length_bias: dict[str, float] = field(default_factory=dict)


def plan_select(plan: JobPlan, *, log: Callable[[str], None] | None = None) -> SelectPlan:
    """The plan with select.base resolved (exported once when it is a cpr job) and the job's model and tokenizer
    taken from it; the base's weights checked against its config. Nothing is started."""
    job = plan.job
    s = job.select
    if s.base is None:
        raise InputError("select.base", "is not set", "name the scoring model: `cpr select JOB` or select.base=DIR")
    refuse_model_override(plan, "select.base")
    if job.data.selection is not None:
        raise InputError("data.selection", "cpr select scores the whole corpus", "drop data.selection")
    if job.adapt.enabled:
        raise InputError("adapt.base", "is for `cpr adapt`", "drop it; cpr select takes select.base")
    if s.fraction + s.skip_top > 1.0:
        raise InputError(
            "select.skip_top",
            f"{s.skip_top} passed over and select.fraction={s.fraction} kept is more than every window",
            f"keep select.fraction + select.skip_top ≤ 1 (here skip_top ≤ {1 - s.fraction:.3g})",
        )
    base = _field_errors(lambda: resolve_base(s.base, s.step, plan.runs_dir, log=log))
    if base.tokenizer is None:
        raise InputError(
            "select.base", f"{base.folder} holds no tokenizer.json", "the corpus must be tokenized as the base was"
        )
    check_weights(base)
    job = dataclasses.replace(
        job,
        model=base.model,
        data=dataclasses.replace(job.data, tokenizer=str(base.tokenizer)),
        select=dataclasses.replace(s, base=str(base.folder), step=base.step),
    )
    return SelectPlan(plan=plan_of(job, plan.overrides, plan.config), base=base)


def _field_errors(fn: Callable[[], AdaptBase]) -> AdaptBase:
    """resolve_base names adapt.*; here the same fields are select.*."""
    try:
        return fn()
    except InputError as err:
        raise InputError(err.field.replace("adapt.", "select.", 1), err.problem, err.fix) from None


def check_weights(base: AdaptBase) -> None:
    """The base's safetensors hold the tensors its config.json describes, with their shapes: a checkpoint that does
    not match the model config is one line naming select.base, before any rank loads it."""
    import torch
    from safetensors import safe_open

    from orchestrator.models import hf_config, model_class

    assert base.model.vocab_size is not None
    with torch.device("meta"):
        want = {
            n: tuple(t.shape)
            for n, t in model_class(base.model.arch)(hf_config(base.model, base.model.vocab_size)).state_dict().items()
        }
    have: dict[str, tuple[int, ...]] = {}
    for f in sorted(base.folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                have[k] = tuple(st.get_slice(k).get_shape())
    if not have:
        return  # pytorch_model.bin: from_pretrained checks it on the ranks
    for name, shape in have.items():
        if name in want and want[name] != shape:
            raise InputError(
                "select.base",
                f"{base.folder}: {name} has shape {list(shape)}, its config.json makes {list(want[name])}",
                "export the checkpoint again with its own model config",
            )
    missing = [n for n in want if n not in have and not n.endswith("lm_head.weight")]
    if missing:
        raise InputError(
            "select.base", f"{base.folder}: no weights for {missing[0]} (and {len(missing) - 1} more)", "export again"
        )


def check_gradient_memory(job: JobConfig) -> None:
    """`select.grad_batch` per-example gradients of the whole model, fp32, fit a rank's share of this machine's memory
    (half of it: the model, its activations and the features need the rest)."""
    import psutil

    from orchestrator.models import count_parameters

    assert job.model.vocab_size is not None
    n = count_parameters(job.model, job.model.vocab_size).total
    need = 4.0 * n * job.select.grad_batch
    have = psutil.virtual_memory().total / max(1, job.cluster.num_workers) / 2
    if need > have:
        fit = max(1, int(have // (4.0 * n)))
        raise InputError(
            "select.grad_batch",
            f"{job.select.grad_batch} per-example gradients of {n:,} parameters need {need / 1e9:.1f} GB per rank, "
            f"half its share of this machine's memory is {have / 1e9:.1f} GB",
            f"use select.grad_batch={fit} or fewer",
        )


def block_labels(job: JobConfig, n_docs: int) -> tuple[list[str], str] | None:
    """Each training document's block under select.blocks=folder (its file's top folder under the corpus root),
    or None for blocks=cluster (they come from the features). One line when the documents cannot be matched to
    their files."""
    if job.select.blocks is SelectBlocks.cluster:
        return None
    from orchestrator.data.sources import open_corpus

    corpus = open_corpus(job.data)
    if corpus.source in ("hf_files", "memmap"):
        raise InputError(
            "select.blocks",
            f"folder needs one file per document, and data.source={corpus.source} has rows",
            "use select.blocks=cluster",
        )
    files = [f for i, f in enumerate(corpus.files) if corpus.split(i) == "train"]
    if len(files) != n_docs:
        raise InputError(
            "select.blocks",
            f"the training split has {n_docs} EOS-separated documents and {len(files)} files (a file holds the "
            "end-of-text token)",
            "use select.blocks=cluster",
        )
    out = []
    for f in files:
        parts = f.relative_to(corpus.root).parts
        out.append(parts[0] if len(parts) > 1 else ROOT_BLOCK)
    return out, "folder"


def run_select(sp: SelectPlan, *, log: Callable[[str], None], progress: Progress | None = None) -> SelectResult:
    """The whole job: data, Ray ranks, scoring, manifest, blueprint, MLflow run. Ray is left running for the
    caller to end (`disconnect`)."""
    import ray

    from orchestrator.data.prepare import prepare_data
    from orchestrator.select.windows import doc_bounds
    from orchestrator.submission.prepare import new_job_id
    from orchestrator.submission.ray_cluster import init_ray
    from orchestrator.worker.scoring import ScoringRank, batches, total_norm

    job, base, s = sp.plan.job, sp.base, sp.plan.job.select
    tick = progress or (lambda _p, _d, _t: None)
    t0 = time.perf_counter()
    job_id = new_job_id(job.name)
    log(f"job {job_id}: scoring with {base.folder}")
    prepared = prepare_data(job.data, log=log)
    tokens = prepared.tokens("train")
    windows = cut_windows(tokens, prepared.eos_id, job.train.seq_len, s.min_tokens)
    n = len(windows)
    if s.sample > n:
        raise InputError(
            "select.sample", f"{s.sample} is more than the corpus's {n:,} windows", f"use at most {n} (e.g. {n // 4})"
        )
    holdout = max(3, round(s.holdout * s.sample))
    if s.sample - holdout < 8:
        raise InputError("select.sample", f"{s.sample} leaves {s.sample - holdout} windows to fit f_φ on", "use ≥ 32")
    check_gradient_memory(job)
    docs = int(doc_bounds(tokens, prepared.eos_id)[0].size)
    folder_blocks = block_labels(job, docs)
    if job.select.blocks is SelectBlocks.cluster and s.clusters > n:
        raise InputError("select.clusters", f"{s.clusters} is more than the corpus's {n} windows", "use fewer")
    log(f"{n:,} windows of ≤ {job.train.seq_len + 1} tokens in {docs:,} documents ({windows.tokens:,} tokens)")

    where = init_ray(job, start_head=False)
    log(f"scoring on {job.cluster.num_workers} ranks, {where}")
    threads = job.train.threads_per_worker or job.cluster.cpus_per_worker
    actor = ray.remote(num_cpus=job.cluster.cpus_per_worker)(ScoringRank)
    ranks = [
        actor.remote(str(base.folder), job.model.arch.value, threads, str(prepared.train_bin), prepared.dtype)
        for _ in range(job.cluster.num_workers)
    ]
    timing: dict[str, float] = {"prepare_s": time.perf_counter() - t0}

    # Step 3's cheap pass over every window, and step 1's gradients on D_small, spread over the ranks.
    t1 = time.perf_counter()
    chunks = batches(n, FEATURE_CHUNK)
    feats = _gather(
        ranks,
        [(lambda r, c=c: r.features.remote(windows.start[c], windows.length[c], FEATURE_BATCH)) for c in chunks],
        lambda done: tick("forward pass", done, len(chunks)),
    )
    pooled = np.concatenate([f[0] for f in feats])
    cheap = np.concatenate([f[1] for f in feats])
    loss = cheap[:, 0]
    timing["features_s"] = time.perf_counter() - t1

    rng = np.random.default_rng(job.seed)
    small = np.sort(rng.choice(n, size=s.sample, replace=False))
    t2 = time.perf_counter()
    gchunks = batches(small.size, s.grad_batch)
    parts = _gather(
        ranks,
        [(lambda r, c=c: r.gradient_norms.remote(windows.start[small[c]], windows.length[small[c]])) for c in gchunks],
        lambda done: tick("per-example gradients", done, len(gchunks)),
    )
    per_group = np.concatenate(parts)
    groups = ray.get(ranks[0].groups.remote())
    timing["gradients_s"] = time.perf_counter() - t2
    for r in ranks:
        ray.kill(r)
    j = total_norm(per_group)

    # f_φ: pooled state, loss, head-gradient norm, log length -> log J, checked on a held-out share of D_small.
    x = np.column_stack([pooled, loss, np.log(cheap[:, 1] + 1e-12), np.log(windows.length)])
    predictor, report = fit_predictor(x[small], np.log(j), holdout=s.holdout, seed=job.seed, feature_names=FEATURES)
    log_hat = predictor.predict(x)
    scores, bias = window_scores(
        s.score.value,
        log_predicted=log_hat,
        loss=loss,
        length=windows.length,
        length_correction=s.length_correction,
        seed=job.seed,
    )
    j_bias = length_bias(np.log(j), windows.length[small])
    kept_idx = choose(scores, n, s.fraction, job.seed, s.skip_top)
    kept = np.zeros(n, dtype=bool)
    kept[kept_idx] = True

    block, block_names, kind = _blocks(job, folder_blocks, windows.doc, pooled)
    if len(block_names) < 2:
        log(
            f"one {kind} block ({block_names[0]}): the cross-influence map has one column "
            "(select.blocks=cluster splits the corpus)"
        )
    labels = [block_names[b] for b in block[small]]
    ci = cross_influence(per_group, labels, groups, block_names, rank=s.rank, block_kind=kind)

    manifest = SelectionManifest(
        corpus={
            "fingerprint": prepared.fingerprint,
            "source": prepared.source,
            "n_train_tokens": prepared.n_train_tokens,
            "tokenizer": str(base.tokenizer),
        },
        seq_len=job.train.seq_len,
        min_tokens=s.min_tokens,
        base={"folder": str(base.folder), "job_id": base.job_id, "step": base.step},
        score=s.score.value,
        length_correction=s.length_correction,
        fraction=s.fraction,
        seed=job.seed,
        skip_top=s.skip_top,
        windows=windows,
        block=block,
        scores=np.asarray(scores, dtype=float),
        kept=kept,
        loss=loss,
        predicted=log_hat,
        block_kind=kind,
        block_names=block_names,
        predictor=report.to_dict(),
        length_bias=bias.to_dict(),
        cross_influence=ci.to_dict(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    out = Path(s.output).expanduser() if s.output else sp.plan.runs_dir / SELECTIONS_DIR / f"{job_id}.json"
    result = SelectResult(
        job_id=job_id,
        run_id="",
        manifest_path=out.resolve(),
        manifest=manifest,
        seconds=timing,
        j_length_bias=j_bias.to_dict(),
    )
    timing["total_s"] = time.perf_counter() - t0  # scoring, fitting and choosing: the manifest's writing follows
    _record(sp, result, ci, log)
    return result


def _blocks(
    job: JobConfig, folder_blocks: tuple[list[str], str] | None, doc: np.ndarray, pooled: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...], str]:
    """Each window's block (an index into the names), the names, and their kind: its document's folder, or its
    k-means cluster over the standardized pooled hidden states."""
    if folder_blocks is not None:
        doc_block, kind = folder_blocks
        names = tuple(sorted(set(doc_block)))
        return np.asarray([names.index(doc_block[d]) for d in doc], dtype=np.int64), names, kind
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    k = job.select.clusters
    km = KMeans(n_clusters=k, n_init=4, random_state=job.seed)
    return (
        km.fit_predict(StandardScaler().fit_transform(pooled)).astype(np.int64),
        tuple(f"c{i}" for i in range(k)),
        "cluster",
    )


def _gather(ranks: list[Any], calls: list[Callable[[Any], Any]], done: Callable[[int], None]) -> list[Any]:
    """Every call, round-robin over the ranks, results in call order; `done` hears each completion."""
    import ray

    refs = [call(ranks[i % len(ranks)]) for i, call in enumerate(calls)]
    pending, finished = list(refs), 0
    done(0)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)  # a rank's error surfaces here
        finished += len(ready)
        done(finished)
    return ray.get(refs)


def _record(sp: SelectPlan, result: SelectResult, ci: CrossInfluence, log: Callable[[str], None]) -> None:
    """The manifest written; the blueprint with the map published; the MLflow run with params, metrics, artifacts."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from orchestrator import __version__
    from orchestrator.config.compose import job_to_dict
    from orchestrator.core import names
    from orchestrator.tracking.secrets import mask_secrets
    from orchestrator.tracking.uri import default_tracking_uri
    from orchestrator.tracking.writer import flatten_config

    job, base = sp.plan.job, sp.base
    m = result.manifest
    uri = job.tracking.uri or default_tracking_uri(sp.plan.runs_dir)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(job.tracking.experiment)
    exp_id = (
        exp.experiment_id
        if exp is not None
        else client.create_experiment(
            job.tracking.experiment,
            artifact_location=(sp.plan.runs_dir / "artifacts").as_uri() if job.tracking.uri is None else None,
        )
    )
    tags = {
        names.JOB_ID: result.job_id,
        names.STATE: "finished",
        names.MODEL: job.model.name,
        names.DATA: job.data.name,
        names.KIND: "select",
        "mlflow.runName": result.job_id,
    }
    run = client.create_run(exp_id, run_name=result.job_id, tags=tags)
    result.run_id = run.info.run_id
    m = dataclasses.replace(
        m,
        provenance={
            "cpr_version": __version__,
            "job_id": result.job_id,
            "run_id": run.info.run_id,
            "tracking_uri": uri,
        },
    )
    result.manifest = m
    m.write(result.manifest_path)
    log(f"manifest {m.id} → {result.manifest_path}")
    blueprint = _publish_blueprint(sp, ci, client, run.info.run_id, m.id)
    params = mask_secrets(flatten_config(job_to_dict(job)))
    params.update(
        {"select.manifest_id": m.id, "select.base_job": str(base.job_id), "data.fingerprint": m.corpus["fingerprint"]}
    )
    summary = m.summary()
    p = m.predictor or {}
    lb = m.length_bias or {}
    metrics = {
        "select/windows": summary["windows"],
        "select/kept": summary["kept"],
        "select/kept_token_share": summary["kept_token_share"],
        "select/predictor_spearman": p.get("spearman", float("nan")),
        "select/length_rho_before": lb.get("rho_before", float("nan")),
        "select/length_rho_after": lb.get("rho_after", float("nan")),
        "select/j_length_rho": result.j_length_bias.get("rho_before", float("nan")),
        "select/cross_influence_energy": ci.energy,
        **{f"select/{k}": v for k, v in result.seconds.items()},
    }
    now = int(time.time() * 1000)
    finite = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, now, 0) for k, v in finite.items()],
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        tags=[RunTag(names.SELECTION, m.id)],
    )
    client.log_text(run.info.run_id, json.dumps(m.to_dict(), indent=1), "selection/manifest.json")
    client.set_terminated(run.info.run_id, "FINISHED")
    result.blueprint = blueprint


def _publish_blueprint(sp: SelectPlan, ci: CrossInfluence, client: Any, run_id: str, manifest_id: str) -> str | None:
    """The base's newest blueprint with the cross-influence map, published as the next version of its model id in
    the local store and as this run's artifact (`blueprints/v<N>/blueprint.json`, tags as a job's); None when the
    base ships no blueprint (the map stays in the manifest)."""
    from orchestrator.blueprints import SCHEMA_VERSION, LocalBlueprintStore, load_blueprint
    from orchestrator.blueprints.model import dumps_blueprint
    from orchestrator.core import names
    from orchestrator.tracking.published import artifact_path

    if not sp.base.blueprints:
        return None
    source = load_blueprint(sp.base.blueprints[-1])
    provenance = {
        **(source.provenance or {}),
        "derived_from": f"{source.model_id}:v{source.blueprint_version}",
        "cross_influence_from": f"cpr select run {run_id}",
        "selection": manifest_id,
    }
    bp = dataclasses.replace(
        source,
        cross_influence=ci,
        schema_version=SCHEMA_VERSION,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        provenance=provenance,
    )
    version, path = LocalBlueprintStore(sp.plan.runs_dir / "blueprints").publish(bp)
    published = dataclasses.replace(bp, blueprint_version=version)
    client.log_text(run_id, dumps_blueprint(published), artifact_path(version))
    for key, value in {
        names.BLUEPRINT_MODEL_ID: bp.model_id,
        names.BLUEPRINT_LATEST: str(version),
        names.BLUEPRINT_VERSIONS: str(version),
    }.items():
        client.set_tag(run_id, key, value)
    return f"{bp.model_id}:v{version} ({path})"
