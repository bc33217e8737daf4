"""`cpr export JOB [--step N] -o DIR`: a job's checkpoint as a Hugging Face model directory with its tokenizer, its
published blueprints and a provenance file (docs/export.md). Bad input is one line and exit 2, nothing written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launch.output import console
from orchestrator.errors import InputError

EPILOG = """\
DIR receives model.safetensors, config.json, generation_config.json, the tokenizer (tokenizer.json,
tokenizer_config.json), blueprints/v<N>.json (each version the job's run published, byte for byte) and
cpr_export.json (job, run, step, checkpoint, world size, cpr version). Load it with
transformers.AutoModelForCausalLM.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR).

DIR must not exist, or be empty; --force replaces an earlier export (a folder holding cpr_export.json) and
nothing else. The bundle is written next to DIR and renamed into place: a failed export leaves nothing.
"""


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "export",
        help="write a job's checkpoint as a Hugging Face model directory (weights, tokenizer, blueprints)",
        description="Consolidate a job's DeepSpeed checkpoint and write it with save_pretrained, with the tokenizer "
        "the job trained, the blueprints its run published and a provenance file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", metavar="JOB", help="job id (as printed by `cpr submit`) or its MLflow run id")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="the directory to write (new or empty)")
    p.add_argument(
        "--step", type=_step, default=None, metavar="N", help="the checkpoint at step N (default: the newest on disk)"
    )
    p.add_argument("--force", action="store_true", help="replace DIR if it holds an earlier `cpr export`")
    p.add_argument(
        "--verify",
        action="store_true",
        help="reload DIR with AutoModelForCausalLM and check its validation loss equals the checkpoint's (1e-4)",
    )
    p.add_argument("--runs-dir", default="cpr_runs", help="the job's runs_dir (default: ./cpr_runs)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from orchestrator.job_files import find_job

    if not args.output.strip():
        raise InputError("-o", "no directory given", "write -o DIR")
    runs_dir = Path(args.runs_dir).absolute()
    if not (runs_dir / "jobs").is_dir():
        raise InputError("--runs-dir", f"no jobs under {runs_dir / 'jobs'}", "run it where `cpr submit` ran")
    job = find_job(runs_dir, args.job)
    from orchestrator.export import ExportMismatch, export_job

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        result = export_job(job, Path(args.output), step=args.step, force=args.force, verify=args.verify, log=say)
    except ExportMismatch as exc:
        print(f"cpr: export failed: {exc}; nothing was written", file=sys.stderr)
        return 1
    p = result.provenance
    con = console()
    con.print(escape(f"exported {p['job_id']} at step {result.step} to {result.out}"))
    con.print(
        escape(
            f"  checkpoint {p['checkpoint']} (ZeRO {p['zero_stage']}, {p['world_size']} ranks, {p['consolidated_by']})"
        )
    )
    versions = ", ".join(f"v{b['version']}" for b in p["blueprints"]) or "none published"
    con.print(
        f"  tokenizer: {'yes' if p['tokenizer'] else 'none (memmap data: token ids only)'}; blueprints: {versions}"
    )
    if p["validation_loss"] is not None:
        v = p["validation_loss"]
        con.print(f"  validation loss: checkpoint {v['checkpoint']:.6f}, exported {v['exported']:.6f}")
    return 0
