"""`cpr adapt`'s part of planning a job: the base model and the blueprint resolved, and everything that can be checked
about them checked, before anything starts (docs/adapt.md).

The base becomes a Hugging Face model folder: a cpr job's checkpoint is exported once (as `cpr export` does) into
`<runs_dir>/bases/<job>-step<N>/` and reused after; a `save_pretrained` folder is used as it is. The job then takes
the base's architecture (`model`) and tokenizer (`data.tokenizer`), and its `adapt.base` / `adapt.blueprint` are
rewritten to the resolved paths, so the run's saved config says exactly what was adapted with what.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.schema import AdaptStrategy, Arch, JobConfig, ModelConfig
from orchestrator.errors import InputError
from orchestrator.submission.plan import JobPlan, plan_of

BASES_DIR = "bases"
"""Under runs_dir: cpr jobs' checkpoints exported for adaptation, one folder per job and step."""
NEEDS_BLUEPRINT = (AdaptStrategy.blueprint, AdaptStrategy.inverse)
"""The strategies that read a blueprint (the others rank by the local sample alone, or not at all)."""
_BLUEPRINT_REF = re.compile(r"^(?P<model>[^:/\\]+?)(?::v(?P<version>[0-9]{1,9}))?$")
_STEP_DIR = re.compile(r"^step([0-9]{1,12})$")
_EXPORT_FIELDS = {"JOB": "adapt.base", "--step": "adapt.step", "-o": "runs_dir", "tokenizer": "adapt.base"}


@dataclass(frozen=True)
class AdaptBase:
    """The model to adapt, as a Hugging Face folder, and what came with it."""

    folder: Path
    model: ModelConfig
    tokenizer: Path | None
    blueprints: tuple[Path, ...]
    """The blueprints shipped with it (`blueprints/v<N>.json` of a bundle), oldest first."""
    job_id: str | None
    """The cpr job it was exported from, if it was."""
    step: int | None


def model_config_from_hf(folder: Path) -> ModelConfig:
    """The ModelConfig of a `save_pretrained` folder's config.json (llama or gpt2, the architectures cpr builds)."""
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError("adapt.base", f"{path} cannot be read ({type(exc).__name__}: {exc})", "a save_pretrained "
                         "folder holds config.json") from None  # fmt: skip
    kind = cfg.get("model_type")
    name = cfg.get("_name_or_path") or folder.name
    try:
        if kind == "llama":
            return ModelConfig(
                name=folder.name,
                arch=Arch.llama,
                hidden_size=int(cfg["hidden_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=int(cfg["num_attention_heads"]),
                num_kv_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
                intermediate_size=int(cfg["intermediate_size"]),
                max_position_embeddings=int(cfg["max_position_embeddings"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                vocab_size=int(cfg["vocab_size"]),
            )
        if kind == "gpt2":
            return ModelConfig(
                name=folder.name,
                arch=Arch.gpt2,
                hidden_size=int(cfg["n_embd"]),
                num_layers=int(cfg["n_layer"]),
                num_heads=int(cfg["n_head"]),
                intermediate_size=None if cfg.get("n_inner") is None else int(cfg["n_inner"]),
                max_position_embeddings=int(cfg["n_positions"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
                vocab_size=int(cfg["vocab_size"]),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("adapt.base", f"{path} lacks {exc} for a {kind} model ({name})", "re-save it") from None
    raise InputError(
        "adapt.base", f"{path} is a {kind!r} model", "cpr adapts the architectures it builds: llama or gpt2"
    )


def _hf_folder(folder: Path, job_id: str | None = None, step: int | None = None) -> AdaptBase:
    """A save_pretrained folder: its config, tokenizer and bundled blueprints; refused if it holds no weights."""
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise InputError("adapt.base", f"{folder} holds no model weights (*.safetensors)", "export it again")
    tok = folder / "tokenizer.json"

    def version(p: Path) -> int:
        return int(p.stem[1:])

    shipped = sorted((p for p in (folder / "blueprints").glob("v*.json") if p.stem[1:].isdigit()), key=version)
    meta = folder / "cpr_export.json"
    if job_id is None and meta.is_file():
        try:
            provenance = json.loads(meta.read_text(encoding="utf-8"))
            job_id, step = provenance.get("job_id"), provenance.get("step")
        except ValueError:
            pass
    return AdaptBase(
        folder=folder.resolve(),
        model=model_config_from_hf(folder),
        tokenizer=tok.resolve() if tok.is_file() else None,
        blueprints=tuple(p.resolve() for p in shipped),
        job_id=job_id,
        step=step,
    )


def resolve_base(ref: str, step: int | None, runs_dir: Path, *, log: Callable[[str], None] | None = None) -> AdaptBase:
    """`adapt.base` as a Hugging Face folder: a save_pretrained folder as it is; a cpr job (its id, or its folder)
    at `step`, or a checkpoint folder `<checkpoints>/<job>/step<N>`, exported (once) into `<runs_dir>/bases/`. One
    line naming adapt.base (or adapt.step) when it cannot be."""
    from orchestrator.export import EXPORT_FILE, export_job, pick_step
    from orchestrator.job_files import find_job

    say = log or (lambda _line: None)
    path = Path(ref).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        if step is not None:
            raise InputError("adapt.step", "picks a cpr job's checkpoint; a model folder has one state", "drop it")
        return _hf_folder(path)
    hint = "give a cpr job id (see `cpr status`) or a Hugging Face save_pretrained folder (`cpr export`)"
    name = path.name if path.is_dir() else ref
    step_dir = _STEP_DIR.match(name) if path.is_dir() else None
    if step_dir:  # a checkpoint folder `<checkpoints>/<job>/step<N>`: that job at that step
        if step is not None and step != int(step_dir.group(1)):
            raise InputError("adapt.step", f"is {step}, the checkpoint folder {path} is step {step_dir.group(1)}")
        name, step = path.resolve().parent.name, int(step_dir.group(1))
    try:
        job = find_job(runs_dir, name, field="adapt.base", hint=hint)
        chosen, _ = pick_step(job, step)
    except InputError as err:
        raise InputError(_EXPORT_FIELDS.get(err.field, err.field), err.problem, err.fix) from None
    out = runs_dir / BASES_DIR / f"{job.job_id}-step{chosen}"
    if (out / EXPORT_FILE).is_file():
        say(f"base: {job.job_id} step {chosen}, exported before to {out}")
    else:
        say(f"base: exporting {job.job_id} step {chosen} to {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            export_job(job, out, step=chosen, force=True)
        except InputError as err:
            raise InputError(_EXPORT_FIELDS.get(err.field, err.field), err.problem, err.fix) from None
    return _hf_folder(out, job.job_id, chosen)


def resolve_blueprint(
    ref: str | None, base: AdaptBase, runs_dir: Path, tracking: tuple[str, str] | None = None
) -> Path | None:
    """The blueprint file `adapt.blueprint` names: `MODEL_ID[:vN]` in the local store, else published to the
    tracking store `tracking` = (uri, experiment) (its exact bytes kept under `<runs_dir>/bases/blueprints/`), a JSON
    file, or (None) the newest one shipped with the base; None when there is none to take. The file is parsed and
    validated here."""
    from orchestrator.blueprints import LocalBlueprintStore, load_blueprint
    from orchestrator.blueprints.store import BLUEPRINT_FILE

    if ref is None:
        if not base.blueprints:
            return None
        path = base.blueprints[-1]
    elif Path(ref).expanduser().is_file():
        path = Path(ref).expanduser().resolve()
    else:
        m = _BLUEPRINT_REF.match(ref)
        store = LocalBlueprintStore(runs_dir / "blueprints")
        if m is None:
            raise InputError("adapt.blueprint", f"{ref!r} is neither a file nor MODEL_ID[:vN]", "e.g. my-job:v3")
        model_id = m.group("model")
        try:
            known = store.versions(model_id)
        except InputError as err:
            raise InputError("adapt.blueprint", err.problem, err.fix) from None
        version = int(m.group("version")) if m.group("version") else None
        if not known:
            fetched = _from_tracking(model_id, version, runs_dir, tracking)
            if fetched is None:
                raise InputError(
                    "adapt.blueprint",
                    f"no file {ref!r} and no blueprint of {model_id!r} under {store.root} or in the tracking store",
                    "`cpr blueprint list` shows the published ones",
                )
            return fetched
        version = known[-1] if version is None else version
        if version not in known:
            raise InputError(
                "adapt.blueprint", f"{model_id} has no v{version}", f"published: {', '.join(map(str, known))}"
            )
        path = (store.root / model_id / f"v{version}" / BLUEPRINT_FILE).resolve()
    try:
        load_blueprint(path)
    except InputError as err:
        raise InputError("adapt.blueprint", f"{err.field}: {err.problem}", err.fix) from None
    return path


def _from_tracking(model_id: str, version: int | None, runs_dir: Path, tracking: tuple[str, str] | None) -> Path | None:
    """A blueprint of `model_id` published to MLflow (a run of another machine's store or a tracking server), its
    exact bytes written under `<runs_dir>/bases/blueprints/`; None when the store has no run with its blueprints."""
    from mlflow.exceptions import MlflowException

    from orchestrator.blueprints import load_blueprint
    from orchestrator.tracking.published import fetch_published

    if tracking is None:
        return None
    uri, experiment = tracking
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # no local store yet (and opening it would make one)
    try:
        row, data = fetch_published(uri, model_id, version=version, experiment=experiment)
    except InputError as err:
        if err.field == "--version":
            raise InputError("adapt.blueprint", err.problem, err.fix) from None
        return None
    except (MlflowException, OSError):  # a tracking server that does not answer: as if it held none
        return None
    path = runs_dir / BASES_DIR / "blueprints" / f"{row.model_id}-v{row.version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    load_blueprint(path)
    return path.resolve()


def joint_blueprint_file(
    blueprint: Path, selection: str, runs_dir: Path, *, log: Callable[[str], None] | None = None
) -> Path:
    """The blueprint with its norms taken from the selection's cross-influence map for the kept blocks
    (orchestrator/adapt/joint.py), written under `<runs_dir>/bases/blueprints/` so the run's config names the exact
    file adapted with; the blueprint itself when the manifest carries no map."""
    from orchestrator.adapt.joint import joint_blueprint
    from orchestrator.blueprints import load_blueprint
    from orchestrator.blueprints.model import dumps_blueprint
    from orchestrator.select import CrossInfluence, load_manifest

    manifest = load_manifest(selection)
    if manifest.cross_influence is None:
        return blueprint
    bp = load_blueprint(blueprint)
    ci = CrossInfluence.from_dict(manifest.cross_influence)
    joint = joint_blueprint(bp, ci, manifest.kept_blocks(), manifest.id)
    out = runs_dir / BASES_DIR / "blueprints" / f"{bp.model_id}-v{bp.blueprint_version}-joint-{manifest.id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps_blueprint(joint), encoding="utf-8")
    if log is not None:
        top = sorted(joint.norms().items(), key=lambda kv: -kv[1])[:3]
        log(f"joint selection: Ḡ from the cross-influence map on the kept blocks (top: {', '.join(i for i, _ in top)})")
    return out.resolve()


def model_groups(model: ModelConfig, vocab_size: int) -> tuple[list[str], dict[str, int]]:
    """The model's parameter names and its submodule groups (blueprint id -> parameters, in model order), from a
    model built on torch's meta device (no memory)."""
    import torch

    from orchestrator.blueprints.grouping import group_parameters
    from orchestrator.models import hf_config, model_class

    with torch.device("meta"):
        built = model_class(model.arch)(hf_config(model, vocab_size))
    named = [(n, p.numel()) for n, p in built.named_parameters()]
    return [n for n, _ in named], {gid: g.n_params for gid, g in group_parameters(named).items()}


def check_selection(job: JobConfig, blueprint: Path | None, vocab_size: int) -> None:
    """What the selection would refuse once the ranks run, refused now: a blueprint whose ids or sizes do not match
    the model, a memory budget below the frozen model, a budget nothing fits in. The local sample is not measured
    yet; the blueprint's norms (or equal ones) stand in, which decides none of these."""
    from orchestrator.adapt import inputs_from_blueprint, select
    from orchestrator.adapt.selection import SubmoduleInput, as_config_error
    from orchestrator.blueprints import load_blueprint

    a = job.adapt
    _, groups = model_groups(job.model, vocab_size)
    if blueprint is not None:
        bp = load_blueprint(blueprint)
        try:
            subs = inputs_from_blueprint(bp, bp.norms(), groups)
        except InputError as err:
            raise InputError("adapt.blueprint", f"{err.field}: {err.problem}", err.fix) from None
    else:
        subs = tuple(SubmoduleInput(id=g, n_params=n, blueprint_norm=1.0, local_norm=1.0) for g, n in groups.items())
    if a.strategy is AdaptStrategy.lora:
        return  # its budget needs the linear layers' shapes: the ranks size the rank (LoraDescriptor)
    req = job.selection_request(subs, sum(groups.values()))
    try:
        select(a.strategy.value, req)
    except InputError as err:
        raise as_config_error(err, req.budget) from None


def refuse_model_override(plan: JobPlan, base_field: str) -> None:
    """A job whose model is a base's (cpr adapt, cpr select) refuses a `model` override on its command line."""
    touched = sorted({o.split("=", 1)[0].lstrip("+~") for o in plan.overrides if o.lstrip("+~").startswith("model")})
    if touched:
        raise InputError(touched[0], f"the model comes from {base_field}", "drop the model override")


def plan_adapt(plan: JobPlan, *, log: Callable[[str], None] | None = None) -> JobPlan:
    """The plan of an adapt job with its base and blueprint resolved and written into it (model, data.tokenizer,
    adapt.base, adapt.blueprint), every check of the selection passed. Nothing is started."""
    job = plan.job
    a = job.adapt
    if a.base is None:
        raise InputError("adapt.base", "is not set", "name the model to adapt: `cpr adapt JOB` or adapt.base=DIR")
    refuse_model_override(plan, "adapt.base")
    base = resolve_base(a.base, a.step, plan.runs_dir, log=log)
    if base.tokenizer is None:
        raise InputError(
            "adapt.base", f"{base.folder} holds no tokenizer.json", "the target data must be tokenized as the base was"
        )
    from orchestrator.tracking.uri import default_tracking_uri

    tracking = (job.tracking.uri or default_tracking_uri(plan.runs_dir), job.tracking.experiment)
    blueprint = resolve_blueprint(a.blueprint, base, plan.runs_dir, tracking)
    if blueprint is None and a.strategy in NEEDS_BLUEPRINT:
        raise InputError(
            "adapt.blueprint",
            f"adapt={a.strategy.value} needs a blueprint and {base.folder} ships none",
            "name one (MODEL_ID[:vN] or a JSON file), or use adapt=local",
        )
    if blueprint is not None and a.joint and job.data.selection is not None and a.strategy in NEEDS_BLUEPRINT:
        blueprint = joint_blueprint_file(blueprint, job.data.selection, plan.runs_dir, log=log)
    job = dataclasses.replace(
        job,
        model=base.model,
        data=dataclasses.replace(job.data, tokenizer=str(base.tokenizer)),
        adapt=dataclasses.replace(
            a, base=str(base.folder), blueprint=None if blueprint is None else str(blueprint), step=base.step
        ),
    )
    assert base.model.vocab_size is not None
    check_selection(job, blueprint, base.model.vocab_size)
    from orchestrator.data.selection import check_selection as check_data_selection

    check_data_selection(job.data)  # data.selection against the corpus as the base's tokenizer encodes it
    return plan_of(job, plan.overrides, plan.config)
