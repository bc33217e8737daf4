"""`cpr export`: one job's DeepSpeed checkpoint as a Hugging Face model directory, the bundle a lab would release.

The weights are consolidated from the ZeRO shards by DeepSpeed's own `zero_to_fp32` (stage 0 has no shards: its
module states file holds the whole model), loaded into the model class the job trained (`orchestrator.models`) and
saved with `save_pretrained` (safetensors). Beside them: the job's locally trained tokenizer as a
`PreTrainedTokenizerFast`, every blueprint version its run published (byte for byte, `blueprints/v<N>.json`) and
`cpr_export.json` (provenance). Everything is written into a hidden folder next to the output and renamed into place
at the end, so a failed export leaves nothing behind (docs/export.md).

Only the job's files are read (`<runs_dir>/jobs/<job>/job.json`, its checkpoint folder, its run in MLflow): the
controller need not run. Engines (torch, DeepSpeed, transformers, MLflow) are imported where they are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.job_files import JobFiles

EXPORT_FILE = "cpr_export.json"
"""The provenance file; its presence marks a folder `--force` may replace."""
EXPORT_FORMAT = 1
_STEP_DIR = re.compile(r"^step([0-9]{1,12})$")
_PEFT_PREFIX = "base_model.model."
"""How peft names the wrapped model's parameters (a LoRA adaptation's checkpoint)."""
_MODEL_STATES = "*mp_rank_00_model_states.pt"
"""DeepSpeed's module states file: `mp_rank_00_model_states.pt` (ZeRO 0–2), `zero_pp_rank_0_mp_rank_00_…` (ZeRO 3)."""


class ExportMismatch(RuntimeError):
    """`--verify` found the written model scoring otherwise than the checkpoint: nothing is kept."""


@dataclass(frozen=True)
class Consolidated:
    """A checkpoint's weights as one fp32 state dict, and what DeepSpeed recorded about it."""

    state_dict: dict[str, Any]
    zero_stage: int
    world_size: int | None
    method: str
    """`zero_to_fp32` (ZeRO 1–3: the fp32 master weights) or `module_states` (ZeRO 0: the module as saved)."""
    step: int | None
    tokens: int | None


@dataclass
class ExportResult:
    """What was written, for the CLI's summary."""

    out: Path
    step: int
    provenance: dict[str, Any]
    files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- the job's files


def saved_steps(checkpoint_dir: Path) -> dict[int, Path]:
    """The job's checkpoints on disk, `step<N>` folders holding DeepSpeed's module states file, by step (the
    `universal/` conversions of a resize are copies of these and are left out)."""
    if not checkpoint_dir.is_dir():
        return {}
    steps = {}
    for child in checkpoint_dir.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and any(child.glob(_MODEL_STATES)):
            steps[int(m.group(1))] = child
    return dict(sorted(steps.items()))


def pick_step(job: JobFiles, step: int | None) -> tuple[int, Path]:
    """The newest checkpoint on disk, or step `step`'s; one line naming --step (and the steps there are) if not."""
    steps = saved_steps(job.checkpoint_dir)
    if not steps:
        raise InputError(
            "JOB", f"{job.job_id} has no checkpoint under {job.checkpoint_dir}", "a job checkpoints when it ends"
        )
    if step is None:
        return max(steps), steps[max(steps)]
    if step not in steps:
        saved = ", ".join(str(s) for s in steps)
        raise InputError("--step", f"{job.job_id} has no checkpoint at step {step}", f"saved steps: {saved}")
    return step, steps[step]


def tokenizer_file(job: JobFiles) -> Path | None:
    """The tokenizer the job's data was encoded with; None for a memmap corpus (token ids, no tokenizer). Refused in
    one line if the data cache that held it is gone."""
    path = job.meta.get("prepared", {}).get("tokenizer_path")
    if path is None:
        return None
    if not Path(path).is_file():
        raise InputError(
            "tokenizer",
            f"the job's tokenizer {path} is gone (its data cache was removed)",
            "prepare the same data again (`cpr submit` with the job's data config rebuilds the cache), then export",
        )
    return Path(path)


def check_output(out: Path, *, force: bool) -> None:
    """Refuse, before anything is written, an output that exists and holds files (unless `force` and it is an
    earlier export), that is a file, or whose parent is missing or not writable."""
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise InputError("-o", f"{out} exists and is not a directory", "choose a new directory")
        if any(out.iterdir()):
            if not force:
                raise InputError(
                    "-o", f"{out} exists and is not empty", "choose a new directory, or --force to replace an export"
                )
            if not (out / EXPORT_FILE).is_file():
                raise InputError(
                    "-o",
                    f"{out} is not empty and holds no {EXPORT_FILE}",
                    "--force only replaces an earlier `cpr export`; choose a new directory",
                )
    parent = out.parent
    if not parent.exists():
        raise InputError("-o", f"{parent} does not exist", "create it first, or choose another directory")
    if not parent.is_dir():
        raise InputError("-o", f"{parent} is not a directory", "choose another directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.is_dir() and not os.access(out, os.W_OK | os.X_OK)):
        raise InputError("-o", f"{out} cannot be written (permission denied)", "choose a writable directory")


# --------------------------------------------------------------------------------------------- the weights


def consolidate(ckpt: Path, zero_stage: int) -> Consolidated:
    """One fp32 state dict from a DeepSpeed checkpoint folder `<dir>/step<N>`.

    ZeRO 1–3 shard the fp32 master weights over the ranks' `*_optim_states.pt`: DeepSpeed's
    `get_fp32_state_dict_from_zero_checkpoint` merges them. ZeRO 0 saves no shards and no `param_shapes`, and that
    function fails on it (DeepSpeed 0.19: TypeError, iterating the absent shapes); its module states file holds the
    whole module as it trained, which is read instead (bf16 weights under bf16, cast to fp32)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # unpickling imports DeepSpeed: a host-side merge, no probe
    import torch

    states = sorted(ckpt.glob(_MODEL_STATES))
    try:
        saved = torch.load(states[0], map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(
            "--step", f"{states[0]} cannot be read ({type(exc).__name__}: {exc})", "pick another step"
        ) from None
    stage = _saved_stage(saved.get("ds_config"), zero_stage)
    world = saved.get("dp_world_size")
    meta = {"step": saved.get("step"), "tokens": saved.get("tokens")}
    if stage == 0:
        module = {k: v.detach().float() if v.is_floating_point() else v for k, v in saved["module"].items()}
        method = "module_states"
    else:
        del saved
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        chatter = io.StringIO()  # it prints its progress; our output is our own
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                module = get_fp32_state_dict_from_zero_checkpoint(str(ckpt.parent), tag=ckpt.name)
        except (FileNotFoundError, ValueError) as exc:
            raise InputError(
                "--step", f"{ckpt} is not a complete ZeRO-{stage} checkpoint ({exc})", "pick another step"
            ) from None
        method = "zero_to_fp32"
    return Consolidated(
        state_dict=module,
        zero_stage=stage,
        world_size=None if world is None else int(world),
        method=method,
        step=None if meta["step"] is None else int(meta["step"]),
        tokens=None if meta["tokens"] is None else int(meta["tokens"]),
    )


def _saved_stage(ds_config: Any, default: int) -> int:
    """The ZeRO stage the checkpoint was saved under: DeepSpeed stores the config it ran with (our dict)."""
    if isinstance(ds_config, dict):
        return int((ds_config.get("zero_optimization") or {}).get("stage", default))
    return int(getattr(ds_config, "zero_optimization_stage", default))


def merge_lora(state: dict[str, Any], alpha: float | None, *, conv1d: bool = False) -> dict[str, Any]:
    """A LoRA adaptation's weights (peft's names: `base_model.model.<m>.base_layer.weight`, `<m>.lora_A.default.weight`
    (r × d_in), `<m>.lora_B.default.weight` (d_out × r)) as the base model's, each adapted layer merged as peft's
    `merge_and_unload` does: W + (alpha / r)·B·A, transposed for GPT-2's Conv1D layers (`conv1d`: stored d_in × d_out);
    `alpha` None: 2·r, `cpr adapt`'s default. Any other state dict is returned as it is."""
    if not any(k.startswith(_PEFT_PREFIX) for k in state):
        return state
    out = {}
    for key, value in state.items():
        name = key.removeprefix(_PEFT_PREFIX)
        if ".lora_A." not in name and ".lora_B." not in name:
            out[name.replace(".base_layer.", ".")] = value
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        module = key.removeprefix(_PEFT_PREFIX).split(".lora_A.")[0]
        b = state[key.replace(".lora_A.", ".lora_B.")]
        r = a.shape[0]
        delta = (b.float() @ a.float()) * ((2 * r if alpha is None else alpha) / r)
        w = out[module + ".weight"]
        out[module + ".weight"] = (w.float() + (delta.T if conv1d else delta)).to(w.dtype)
    return out


def model_from_state(job: Any, vocab_size: int, state_dict: dict[str, Any], eos_id: int | None) -> Any:
    """The job's model class and config with these weights (strictly: every tensor named, none left over). The
    config's special token ids are the job's EOS (documents are separated by it; there is no BOS or padding)."""
    from orchestrator.models import hf_config, model_class

    cfg = hf_config(job.model, vocab_size)
    cfg.bos_token_id = eos_id
    cfg.eos_token_id = eos_id
    cfg.pad_token_id = None
    model = model_class(job.model.arch)(cfg)
    model.load_state_dict(state_dict, strict=True)
    model.tie_weights()
    return model.eval()


def validation_loss(model: Any, job: Any, prepared: Any) -> float:
    """The job's validation loss of `model`: the mean token loss over the batches of the held-out windows its
    evaluation checks use (`val_batches`, `evaluate`); the all-ranks mean the job logs as val/loss."""
    import torch

    from orchestrator.data.batches import val_batches
    from orchestrator.worker.engine import evaluate

    t = job.train
    batches = val_batches(prepared, t.seq_len, t.micro_batch, job.eval_sequences())
    with torch.no_grad():
        total, count = evaluate(model, batches)
    return total / count


# --------------------------------------------------------------------------------------------- the bundle


def hf_tokenizer(path: Path, model_max_length: int) -> Any:
    """The job's `tokenizers` file as a transformers fast tokenizer, its EOS named (what `save_pretrained` writes)."""
    from transformers import PreTrainedTokenizerFast

    from orchestrator.data.prepare import EOS

    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS, model_max_length=model_max_length)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_job(
    job: JobFiles,
    out: Path,
    *,
    step: int | None = None,
    force: bool = False,
    verify: bool = False,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write the job's checkpoint at `step` (default: the newest on disk) as a Hugging Face model directory `out`.
    Every refusal comes before anything is written; the bundle appears by one rename. `verify`: reload the written
    directory with `AutoModelForCausalLM` and compare its validation loss with the checkpoint's (within 1e-4)."""
    from orchestrator import __version__
    from orchestrator.tracking.published import run_published

    say = log or (lambda _line: None)
    chosen, ckpt = pick_step(job, step)
    tok_path = tokenizer_file(job)
    out = out.absolute()
    check_output(out, force=force)
    published = run_published(job.tracking_uri, job.run_id)  # before the heavy part: the store must answer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its bars would be the only lines on stderr of a successful export
    say(f"consolidating {ckpt}")
    weights = consolidate(ckpt, job.job.deepspeed.zero_stage)
    prepared = job.prepared()
    vocab = job.job.model.vocab_size or prepared.vocab_size
    # a `cpr adapt adapt=lora` job: its adapters merged into the base's layers
    state = merge_lora(weights.state_dict, job.job.adapt.lora_alpha, conv1d=job.job.model.arch == "gpt2")
    model = model_from_state(job.job, vocab, state, prepared.eos_id)
    loss = validation_loss(model, job.job, prepared) if verify else None

    try:
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.cpr-export-"))
    except OSError as exc:
        raise InputError(
            "-o", f"cannot write in {out.parent}: {exc.strerror or exc}", "choose another directory"
        ) from None
    try:
        say(f"writing {out}")
        model.save_pretrained(staging)
        if tok_path is not None:
            hf_tokenizer(tok_path, job.job.model.max_position_embeddings).save_pretrained(staging)
        blueprints = []
        if published:
            (staging / "blueprints").mkdir()
        for row, data in published:
            name = f"blueprints/v{row.version}.json"
            (staging / name).write_bytes(data)
            blueprints.append(
                {
                    "file": name,
                    "model_id": row.model_id,
                    "version": row.version,
                    "step": row.step,
                    "checkpoint": row.checkpoint,
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        exported_loss = None
        if verify:
            exported_loss = validation_loss(_reload(staging), job.job, prepared)
            assert loss is not None
            if abs(exported_loss - loss) > 1e-4:
                raise ExportMismatch(
                    f"the exported model's validation loss {exported_loss:.6f} differs from the checkpoint's "
                    f"{loss:.6f} by more than 1e-4"
                )
        provenance: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "job_id": job.job_id,
            "run_id": job.run_id,
            "tracking_uri": job.tracking_uri,
            "step": chosen,
            "tokens": weights.tokens,
            "checkpoint": str(ckpt),
            "world_size": weights.world_size,
            "zero_stage": weights.zero_stage,
            "precision": job.job.deepspeed.precision,
            "consolidated_by": weights.method,
            "cpr_version": __version__,
            "model": {"name": job.job.model.name, "arch": job.job.model.arch},
            "tokenizer": None if tok_path is None else {"source": str(tok_path), "sha256": _sha256(tok_path)},
            "blueprints": blueprints,
            "validation_loss": None if loss is None else {"checkpoint": loss, "exported": exported_loss},
        }
        if tok_path is None:
            provenance["tokenizer_note"] = (
                "the job trained on a memmap folder of token ids, which carries no tokenizer: pair the model with "
                "the tokenizer that made them"
            )
        (staging / EXPORT_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        _release_modes(staging)
        if out.exists():
            shutil.rmtree(out)  # an empty folder, or an earlier export `--force` replaces (check_output)
        os.replace(staging, out)
    except OSError as exc:  # a full disk, a quota, a folder whose ACL os.access did not see
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(
            "-o", f"cannot write {out}: {exc.strerror or exc}", "check the directory and free space"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out=out, step=chosen, provenance=provenance, files=files)


def _reload(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


def _release_modes(folder: Path) -> None:
    """Files and folders as readable as the user's umask allows: mkdtemp and safetensors make them owner-only."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [folder, *folder.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
