#!/usr/bin/env python3
"""Rebuild the public pretraining curves in this folder from their sources.

Every curve is read from one public GitHub repository at a pinned commit, parsed
without smoothing or filling, and written as ``<name>.csv`` with the columns

    step,<loss|psi>,tokens

(``loss``: lower is better; ``psi``: higher is better).  The script also writes
``manifest.json`` (one object per curve: source, commit, path, URL, licence,
metric, schedule, ...), so the manifest and the CSVs cannot drift apart.

Usage
-----
    python3 extract.py --mirror DIR            # rewrite the CSVs + manifest.json
    python3 extract.py --mirror DIR --check    # only compare, exit 1 on mismatch

``DIR`` holds one copy per source repository, found under the first of
``DIR/OWNER+NAME/repo``, ``DIR/OWNER+NAME``, ``DIR/OWNER/NAME`` or ``DIR/NAME``
that exists.  A git directory (bare, or a checkout with ``.git``) is read with
``git show COMMIT:PATH`` at the pinned commit, so any clone that contains the
commit works, e.g.::

    git clone https://github.com/EleutherAI/pythia DIR/EleutherAI/pythia

A plain folder without git is read from its working files as they are (then the
commit cannot be checked; use ``--check`` to see whether the output still
matches).  Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------
# Sources (repository, commit that was read, licence as stated in its LICENSE)
# --------------------------------------------------------------------------
PYTHIA = ("EleutherAI/pythia", "a19eecb807ec2c79a39ebf18108816e6ffffc1d5")
MODDED = ("KellerJordan/modded-nanogpt", "f411b3d346aa52d3504324ca93c230fd84c6c07f")
BIGSCI = ("bigscience-workshop/bigscience", "9e64edec2ad1fb9263bf39ba616a84ff64b4d947")
TINYLL = ("jzhang38/TinyLlama", "bf122247c486b6b897050e98cbb7bedae8eeba73")

LICENCE = {
    PYTHIA[0]: "Apache-2.0 (LICENSE: Apache License, Version 2.0)",
    MODDED[0]: "MIT (LICENSE: MIT License, Copyright (c) 2024 Keller Jordan)",
    BIGSCI[0]: "Apache-2.0 (LICENSE: 'Apache Software License 2.0', Copyright (c) 2021, Stas Bekman)",
    TINYLL[0]: "Apache-2.0 (LICENSE: Apache License, Version 2.0)",
}

PYTHIA_TPS = 2_097_152  # 1024 seqs x 2048 tokens; README: "143000 steps at a batch size of 2,097,152 tokens"
GPT2_SPEEDRUN_TPS = 524_288  # 8 x 64 x 1024 tokens


# --------------------------------------------------------------------------
# Reading a source file
# --------------------------------------------------------------------------
class Source:
    def __init__(self, mirror: str, repo: str, commit: str):
        owner, name = repo.split("/")
        self.repo, self.commit = repo, commit
        cands = [
            os.path.join(mirror, f"{owner}+{name}", "repo"),
            os.path.join(mirror, f"{owner}+{name}"),
            os.path.join(mirror, owner, name),
            os.path.join(mirror, name),
        ]
        self.root = next((c for c in cands if os.path.isdir(c)), None)
        if self.root is None:
            raise SystemExit(f"no copy of {repo} under {mirror} (tried {cands})")
        self.git_dir: str | None = None
        if os.path.isdir(os.path.join(self.root, ".git")):
            self.git_dir = os.path.join(self.root, ".git")
        elif os.path.isfile(os.path.join(self.root, "HEAD")) and os.path.isdir(os.path.join(self.root, "objects")):
            self.git_dir = self.root

    def _git(self, *args: str) -> str:
        out = subprocess.run(["git", f"--git-dir={self.git_dir}", *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"git {' '.join(args)} failed for {self.repo}: {out.stderr.strip()}")
        return out.stdout

    def read(self, path: str) -> str:
        if self.git_dir:
            return self._git("show", f"{self.commit}:{path}")
        with open(os.path.join(self.root, path), encoding="utf-8") as fh:
            return fh.read()

    def listdir(self, path: str) -> list[str]:
        path = path.rstrip("/")
        if self.git_dir:
            names = self._git("ls-tree", "--name-only", f"{self.commit}:{path}").split("\n")
            return sorted(n for n in names if n)
        return sorted(os.listdir(os.path.join(self.root, path)))


Row = tuple[int, str, int]  # step, value (text exactly as in the source), tokens


def fnum(x: float) -> str:
    """JSON number -> shortest text that round-trips (what json wrote)."""
    return repr(float(x))


# --------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------
def pythia_evals(src: Source, folder: str, task: str, metric: str) -> list[Row]:
    """One lm-eval-harness JSON per checkpoint: <size>_step<N>.json."""
    rows = []
    for fn in src.listdir(folder):
        m = re.search(r"_step(\d+)\.json$", fn)
        if not m:
            continue
        step = int(m.group(1))
        d = json.loads(src.read(f"{folder.rstrip('/')}/{fn}"))
        rev = d["config"]["model_args"].split("revision=")[-1]
        assert rev == f"step{step}", (fn, rev)  # file name agrees with the evaluated revision
        rows.append((step, fnum(d["results"][task][metric]), step * PYTHIA_TPS))
    return sorted(rows)


VAL_RE = re.compile(r"^step:(\d+)/(\d+) val_loss:([0-9.]+) ")


def modded_val(src: Source, path: str, tps: int, trial: int = 0) -> list[Row]:
    """Lines 'step:S/N val_loss:X train_time:...' (the log starts with the
    script's own source, whose print statements do not match the anchored
    regex).  A log holding several runs restarts at step 0; take run `trial`."""
    runs: list[list[Row]] = []
    for line in src.read(path).splitlines():
        m = VAL_RE.match(line)
        if not m:
            continue
        step = int(m.group(1))
        if step == 0 or not runs:
            runs.append([])
        runs[-1].append((step, m.group(3), step * tps))
    rows = runs[trial]
    assert [r[0] for r in rows] == sorted({r[0] for r in rows}), "steps not increasing"
    return rows


def llmc_tel(src: Source, path: str, tps: int) -> list[Row]:
    """Old llm.c log format: 's:S tel:X' = validation loss, 's:S trl:X' = train loss."""
    rows = []
    for line in src.read(path).splitlines():
        m = re.match(r"^s:(\d+) tel:([0-9.]+)$", line.strip())
        if m:
            step = int(m.group(1))
            rows.append((step, m.group(2), step * tps))
    return sorted(rows)


def bigscience_agg(src: Source, path: str, task: str, metric: str) -> list[Row]:
    """'<run>_agg.json': parallel lists checkpoints / tokens / results[task][metric]."""
    d = json.loads(src.read(path))
    ck, tok, val = d["checkpoints"], d["tokens"], d["results"][task][metric]
    assert len(ck) == len(tok) == len(val)
    return sorted((int(c), fnum(v), int(t)) for c, t, v in zip(ck, tok, val, strict=True))


def tinyllama_eval_md(src: Source, path: str, tps: int) -> list[Row]:
    """Markdown table 'Base models' in EVAL.md; rows named
    TinyLlama-1.1B-intermediate-step-<K>k-<tokens>; last cell = avg."""
    rows = []
    for line in src.read(path).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        # GPT4All table rows have 10 cells: model, tokens, 7 tasks, avg (the
        # Instruct-Eval table further down has 5 and is skipped)
        m = re.match(r"^TinyLlama-1\.1B-intermediate-step-(\d+)[kK]-", cells[0]) if len(cells) == 10 else None
        if not m:
            continue
        step = int(m.group(1)) * 1000
        rows.append((step, cells[-1], step * tps))
    return sorted(rows)


# --------------------------------------------------------------------------
# The curves
# --------------------------------------------------------------------------
def pythia_curve(size: str, params: str, lr: str) -> dict:
    folder = f"evals/pythia-v1/pythia-{size}/zero-shot"
    return dict(
        name=f"pythia_{size.replace('.', 'p')}_lambada_acc",
        source=PYTHIA,
        source_path=folder + "/",
        url=f"https://github.com/{PYTHIA[0]}/tree/{PYTHIA[1]}/{folder}",
        parse=lambda s: pythia_evals(s, folder, "lambada_openai", "acc"),
        direction="psi",
        metric="LAMBADA (OpenAI) zero-shot accuracy, lm-eval-harness 'lambada_openai' acc (fraction)",
        model=f"Pythia-{size} ({params} params; GPT-NeoX, standard (non-deduplicated) Pile)",
        tokens_per_step=PYTHIA_TPS,
        tokens_per_step_source=(
            "pythia README: 'All models were trained for the equivalent of 143000 steps "
            "at a batch size of 2,097,152 tokens' (1024 x 2048)"
        ),
        lr_schedule=(
            f"cosine: models/*/pythia-{size}.yml lr {lr}, min_lr = 0.1 x lr, warmup 0.01 "
            "(1430 steps), lr-decay-iters = train-iters = 143000, so the LR decays to its "
            "minimum exactly at the end of the run (step 143000)"
        ),
        notes=(
            "one eval JSON per released checkpoint (log-spaced 0..512, then 1000 and every 10000 "
            "from 3000 to 143000); the JSON config evaluates EleutherAI/pythia-v1.1-"
            + size
            + " at revision=step<N>, checked against the file name. Step 0 (untrained) is kept."
        ),
    )


def modded_pair(tag: str, short: tuple[str, int, int], long: tuple[str, int, int], model: str) -> list[dict]:
    """Two runs of one modded-nanogpt script (path, num_iterations, warmdown_iters): the short one decays to 0 while
    the long one is still at constant LR, so the long one is the short one's uncooled companion."""
    out = []
    for (path, n, w), other in ((short, long), (long, None)):
        name = f"modded_nanogpt_{tag}_{n}_val"
        out.append(
            dict(
                name=name,
                source=MODDED,
                source_path=path,
                parse=lambda s, path=path: modded_val(s, path, GPT2_SPEEDRUN_TPS),
                direction="loss",
                metric="validation loss on FineWeb val (nats/token), 'step:S/N val_loss:X' lines",
                model=model,
                tokens_per_step=GPT2_SPEEDRUN_TPS,
                tokens_per_step_source="script in the log: batch_size = 8*64 sequences, sequence_length = 1024",
                lr_schedule=(
                    f"trapezoid (WSD): get_lr in the log: warmup_iters 0, constant while it < num_iterations - "
                    f"warmdown_iters = {n} - {w} = {n - w}, then linear to 0 at step {n}"
                ),
                decay_start_step=n - w,
                decay_start_source=f"get_lr in the log: num_iterations {n} - warmdown_iters {w}",
                uncooled_companion=(f"modded_nanogpt_{tag}_{other[1]}_val" if other else None),
                notes=(
                    "val every 125 steps and at the final step. "
                    + (
                        f"Pair: the same script with num_iterations {other[1]} / warmdown_iters {other[2]} "
                        f"({other[0].split('/')[-1]}) is still at constant LR until step {other[1] - other[2]}, past "
                        f"this run's end: its uncooled companion (same code and data order; no seed is set)."
                        if other
                        else f"The long run of a pair (the other run decays at step {short[1] - short[2]}, ending "
                        f"at {short[1]}); its own decay starts at step {n - w}."
                    )
                ),
            )
        )
    return out


CURVES: list[dict] = [
    pythia_curve("70m", "70M", "1.0e-3"),
    pythia_curve("160m", "160M", "6.0e-4"),
    pythia_curve("410m", "410M", "3.0e-4"),
    pythia_curve("2.8b", "2.8B", "1.6e-4"),
    pythia_curve("12b", "12B", "1.2e-4"),
    dict(
        name="modded_nanogpt_2024-06-06_adamw_124m_val",
        decay_start_step=7536,
        decay_start_source=(
            "README (from memory, 'IIRC'): warmdown over the last 2000 of 9536 steps, so 9536 - 2000; the "
            "log does not print the schedule, so this number is uncertain"
        ),
        source=MODDED,
        source_path="records/track_1_short/2024-06-06_AdamW/f66d43d7-e449-4029-8adf-e8537bab49ea.log",
        parse=lambda s: llmc_tel(
            s, "records/track_1_short/2024-06-06_AdamW/f66d43d7-e449-4029-8adf-e8537bab49ea.log", GPT2_SPEEDRUN_TPS
        ),
        direction="loss",
        metric="validation loss on FineWeb val (nats/token), 'tel' lines of the llm.c-format log",
        model="GPT-2 small 124M (d12), AdamW baseline of the speedrun (architecture not printed in the log)",
        tokens_per_step=GPT2_SPEEDRUN_TPS,
        tokens_per_step_source="record README: 'this was batch size 2^19, so ~5B tokens' (2^19 = 524288 tokens/step)",
        lr_schedule=(
            "trapezoid per README (from memory, 'IIRC'): lr 0.0018, linear warmup 250 steps, "
            "constant, linear warmdown over the last 2000 of 9536 steps; in the llm.c-derived "
            "scripts of that time the warmdown ends at 0 at the last step (not printed in this log)"
        ),
        notes=(
            "val every 128 steps plus the final step 9536; "
            "the log also has per-step training loss ('trl') which is not used."
        ),
    ),
    dict(
        name="modded_nanogpt_2024-10-09_soap_124m_val",
        decay_start_step=4200,
        decay_start_source=("get_lr in the log: constant while it < num_iterations - warmdown_iters = 6000 - 1800"),
        source=MODDED,
        source_path="records/track_1_short/2024-10-09_SOAP/5bdc3988-496c-4232-b4ef-53764cb81c92.txt",
        parse=lambda s: modded_val(
            s, "records/track_1_short/2024-10-09_SOAP/5bdc3988-496c-4232-b4ef-53764cb81c92.txt", GPT2_SPEEDRUN_TPS
        ),
        direction="loss",
        metric="validation loss on FineWeb val (nats/token), 'step:S/N val_loss:X' lines",
        model="GPT-2 small 124M (n_layer=12, n_head=12, n_embd=768), SOAP optimizer",
        tokens_per_step=GPT2_SPEEDRUN_TPS,
        tokens_per_step_source="script in the log: batch_size = 8*64 sequences, sequence_length = 1024",
        lr_schedule=(
            "trapezoid (WSD): get_lr in the log: linear warmup 250 steps, constant, linear "
            "warmdown over the last 1800 of 6000 steps to 0 at the end of the run"
        ),
        notes="val every 125 steps and at the final step.",
    ),
    dict(
        name="modded_nanogpt_2025-01-26_batchsize_124m_val",
        decay_start_step=1062,
        decay_start_source=(
            "get_lr in the log: w = min((1 - step/1770) / cooldown_frac, 1) with cooldown_frac 0.4, so full "
            "LR up to step 0.6 x 1770 = 1062"
        ),
        source=MODDED,
        source_path="records/track_1_short/2025-01-26_BatchSize/0bdd5ee9-ac28-4202-bdf1-c906b102b0ec.txt",
        parse=lambda s: modded_val(
            s, "records/track_1_short/2025-01-26_BatchSize/0bdd5ee9-ac28-4202-bdf1-c906b102b0ec.txt", 393_216
        ),
        direction="loss",
        metric="validation loss on FineWeb val (nats/token), 'step:S/N val_loss:X' lines",
        model="modded-nanogpt 124M-class (num_layers=12, num_heads=6, model_dim=768, value embeddings, U-net skips)",
        tokens_per_step=393_216,
        tokens_per_step_source=(
            "script in the log: train_batch_size = world_size * seq_len, seq_len = 48*1024; "
            "world_size = 8 (nvidia-smi in the log lists 8 H100s)"
        ),
        lr_schedule=(
            "stable then linear cooldown: get_lr in the log: constant for the first 60% of 1770 "
            "steps, then linear to 0.1 x max LR at the last step (decays to the end, not to 0)"
        ),
        notes="short run (1770 steps, val every 125 steps + final): few points.",
    ),
    dict(
        name="modded_nanogpt_medium_2025-03-06_longercooldown_val",
        decay_start_step=2780,
        decay_start_source=(
            "get_lr in the log: constant while step/6950 < 1 - cooldown_frac (0.6), i.e. up to step 0.4 x 6950 = 2780"
        ),
        source=MODDED,
        source_path="records/track_2_medium/2025-03-06_LongerCooldown/779c041a-2a37-45d2-a18b-ec0f223c2bb7.txt",
        parse=lambda s: modded_val(
            s,
            "records/track_2_medium/2025-03-06_LongerCooldown/779c041a-2a37-45d2-a18b-ec0f223c2bb7.txt",
            GPT2_SPEEDRUN_TPS,
        ),
        direction="loss",
        metric="validation loss on FineWeb val (nats/token), 'step:S/N val_loss:X' lines",
        model="GPT-2-medium track (~350M class: num_layers=16, num_heads=8, model_dim=1024, 3 value embeddings)",
        tokens_per_step=GPT2_SPEEDRUN_TPS,
        tokens_per_step_source=(
            "script in the log: world_size * train_seq_len, train_seq_len = 64*1024, assert world_size == 8"
        ),
        lr_schedule=(
            "stable then linear decay: get_lr in the log: constant for the first 40% of 6950 steps, "
            "then linear to 0 at the end of the run (cooldown_frac 0.6)"
        ),
        notes="val every 125 steps and at the final step.",
    ),
    dict(
        name="modded_nanogpt_opt_adam_5625_124m_val",
        decay_start_step=1687,
        decay_start_source=(
            "set_hparams in the log: full LR while step/5625 < 1 - cooldown_frac (0.7), i.e. up to step 1687"
            " (0.3 x 5625 = 1687.5)"
        ),
        source=MODDED,
        source_path="records/track_3_optimization/results/a63a68d1-24aa-4a22-af9a-224e43209ea4.txt",
        parse=lambda s: modded_val(
            s, "records/track_3_optimization/results/a63a68d1-24aa-4a22-af9a-224e43209ea4.txt", GPT2_SPEEDRUN_TPS
        ),
        direction="loss",
        metric="validation loss on FineWeb val (nats/token, 20*524288 val tokens), 'step:S/N val_loss:X' lines",
        model="GPT-2 small class (num_layers=12, model_dim=768), Adam on all matrices (optimization track entry #2)",
        tokens_per_step=GPT2_SPEEDRUN_TPS,
        tokens_per_step_source="script in the log: batch_size = 8 * 64 * 1024 tokens",
        lr_schedule=(
            "linear warmup 250 steps, constant for the first 30% of 5625 steps, then linear decay "
            "over the last 70% to 0 at the end of the run (set_hparams cooldown_frac=0.7)"
        ),
        notes=(
            "val every 125 steps and at the final step; "
            "track-3 README: 'Adam lr=0.0015 ... (note: this is most likely undertuned)'."
        ),
    ),
    dict(
        name="modded_nanogpt_opt_spectral_8500_124m_val",
        decay_start_step=2550,
        decay_start_source=(
            "set_hparams in the log: full LR while step/8500 < 1 - cooldown_frac (0.7); at step 2550 = 0.3 x"
            " 8500 the decay factor is still 1"
        ),
        source=MODDED,
        source_path="records/track_3_optimization/results/20260517_ortho/d5098d67-7c1b-47b4-8833-80960d633d33.txt",
        parse=lambda s: modded_val(
            s,
            "records/track_3_optimization/results/20260517_ortho/d5098d67-7c1b-47b4-8833-80960d633d33.txt",
            GPT2_SPEEDRUN_TPS,
            trial=0,
        ),
        direction="loss",
        metric="validation loss on FineWeb val (nats/token, 20*524288 val tokens), 'step:S/N val_loss:X' lines",
        model=(
            "GPT-2 small class (num_layers=12, model_dim=768), SpectralDescent = Muon with momentum 0 (lr .03, wd .015)"
        ),
        tokens_per_step=GPT2_SPEEDRUN_TPS,
        tokens_per_step_source="script in the log: batch_size = 8 * 64 * 1024 tokens",
        lr_schedule=(
            "no warmup, constant for the first 30% of 8500 steps, then linear decay over the last "
            "70% to 0 at the end of the run (set_hparams cooldown_frac=0.7)"
        ),
        notes=(
            "the log holds 4 runs (num_trials) one after another; only the FIRST run is used. "
            "Uneven cadence: val every 125 steps until 90% of training, then every 25 steps."
        ),
    ),
    # Two pairs of runs of the same script, differing only in num_iterations and warmdown_iters (the logs' code,
    # compared line by line): the long run is still at constant LR when the short one has finished its decay, so it
    # is the short run's uncooled twin over the same data order (no seed is set: initialisations differ).
    *modded_pair(
        "2024-11-03_untieembed",
        short=("records/track_1_short/2024-11-03_UntieEmbed/d6b50d71-f419-4d26-bb39-a60d55ae7a04.txt", 4578, 1308),
        long=("records/track_1_short/2024-11-10_ScaleShortcuts/4897c987-9d09-435c-a23f-20585912936a.txt", 19073, 5450),
        model=(
            "GPT-2 small class, record of 11/03/24 (n_layer=12, n_head=6, n_embd=768, untied embedding and head, "
            "Muon for the body)"
        ),
    ),
    *modded_pair(
        "2024-11-10_scaleshortcuts",
        short=("records/track_1_short/2024-11-10_ScaleShortcuts/3e55eb2e-6261-466a-b1e9-2b31f56fb16a.txt", 11444, 3269),
        long=("records/track_1_short/2024-11-10_ScaleShortcuts/70a0ada6-8dee-4fef-8980-135379479c21.txt", 19073, 5449),
        model=(
            "GPT-2 small class, speedrun script of 11/10/24 (n_layer=12, n_head=6, n_embd=768, CastedLinear, "
            "x0 and value-residual shortcuts with learned lambdas, Muon for the body)"
        ),
    ),
    dict(
        name="bigscience_tr3d_1b3_oscar_lambada_acc",
        source=BIGSCI,
        source_path="evaluation/results/tr3/tr3d-1B3-oscar-checkpoints_agg.json",
        parse=lambda s: bigscience_agg(
            s, "evaluation/results/tr3/tr3d-1B3-oscar-checkpoints_agg.json", "lambada", "acc"
        ),
        direction="psi",
        metric="LAMBADA zero-shot accuracy (lm-eval-harness 'lambada' acc, fraction)",
        model="BigScience tr3d 1.3B GPT-2-style baseline (24 layers, hidden 2048, seq 2048), trained on OSCAR",
        tokens_per_step=1_048_576,
        tokens_per_step_source=(
            "tokens column copied from the file's own 'tokens' list (consecutive checkpoints "
            "differ by exactly 1,048,576 tokens/step = 512 x 2048; earlier steps had a batch ramp-up "
            "32->512 sequences over 2M samples, so tokens != step x 1,048,576)"
        ),
        lr_schedule=(
            "cosine (train/tr3-1B3-baseline/tr3d-1B3-oscar-training2.slurm): lr 2e-4, warmup 183,105 samples, "
            "cosine decay over 73,242,187 samples (~150B tokens) to min-lr 1e-5; planned run 146,484,375 "
            "samples (~300B tokens). The evaluated checkpoints end at 112.3B tokens, i.e. BEFORE the cosine "
            "reaches its minimum and well before the planned end of the run"
        ),
        notes=(
            "first point is step 19500 (10.0B tokens): no step-0 evaluation. Noisy (the first value, 0.081, "
            "is far below the rest). Evaluated every 1500 steps with a few gaps."
        ),
    ),
    dict(
        name="bigscience_tr3m_1b3_pile_lambada_acc",
        source=BIGSCI,
        source_path="evaluation/results/tr3/tr3m-1B3-pile-checkpoints_agg.json",
        parse=lambda s: bigscience_agg(
            s, "evaluation/results/tr3/tr3m-1B3-pile-checkpoints_agg.json", "lambada", "acc"
        ),
        direction="psi",
        metric="LAMBADA zero-shot accuracy (lm-eval-harness 'lambada' acc, fraction)",
        model="BigScience tr3m 1.3B GPT-2-style baseline (24 layers, hidden 2048, seq 2048), trained on the Pile",
        tokens_per_step=1_048_576,
        tokens_per_step_source=(
            "tokens column copied from the file's own 'tokens' list (1,048,576 tokens/step "
            "between checkpoints; batch ramp-up early in training)"
        ),
        lr_schedule=(
            "cosine (train/tr3-1B3-baseline/tr3m-1B3-pile.slurm): lr 2e-4, warmup 183,105 samples, cosine "
            "decay over 73,242,187 samples (~150B tokens) to min-lr 1e-5; planned 300B tokens. The evaluated "
            "checkpoints end at 112.3B tokens, BEFORE the cosine reaches its minimum"
        ),
        notes=(
            "first point is step 19500 (10.0B tokens): no step-0 evaluation. "
            "Evaluated every 1500 steps with a few gaps."
        ),
    ),
    dict(
        name="tinyllama_1b1_commonsense_avg",
        source=TINYLL,
        source_path="EVAL.md",
        parse=lambda s: tinyllama_eval_md(s, "EVAL.md", PYTHIA_TPS),
        direction="psi",
        metric=(
            "average of 7 zero-shot tasks (HellaSwag, OpenBookQA, WinoGrande, ARC-c, ARC-e, BoolQ, PIQA), "
            "acc_norm by default, in PERCENT (column 'avg' of the 'Base models' table)"
        ),
        model="TinyLlama 1.1B (Llama-2 architecture), intermediate checkpoints of the 3T-token run",
        tokens_per_step=PYTHIA_TPS,
        tokens_per_step_source=(
            "README: batch size '2 million tokens (2048 * 1024)'; check: 1431k steps x 2,097,152 = 3.0T "
            "tokens ('3 trillion ... 1430k steps'). Steps come from the checkpoint names "
            "(step-50K, 240k, ... 1431k), rounded to thousands by the authors"
        ),
        lr_schedule=(
            "cosine (README + pretrain/tinyllama.py): lr 4e-4, 2000 warmup steps, min_lr 4e-5, "
            "lr_decay_iters = max_step = 715256*2 = 1,430,512 steps, i.e. decays to the minimum at the end "
            "of the 3T run; README: 'See Issue 27 for a minor bug'"
        ),
        notes=(
            "only 7 points, no step 0. EVAL.md labels the 50K row '103B' tokens and the README '105B'; tokens here "
            "are step x 2,097,152. The README's table gives 51.28 for 1.5T where EVAL.md gives 51.29 "
            "(EVAL.md is used). "
            "README: the jump from 2T to 2.5T 'is related to [bos_id issue]' and notes on bug fixes/changed training "
            "curves were published, so the run is not a single clean schedule."
        ),
    ),
]


# --------------------------------------------------------------------------
def render(rows: list[Row], direction: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", direction, "tokens"])
    for step, val, tok in rows:
        w.writerow([step, val, tok])
    return buf.getvalue()


def manifest_entry(c: dict, rows: list[Row]) -> dict:
    repo, commit = c["source"]
    url = c.get("url") or f"https://github.com/{repo}/blob/{commit}/{c['source_path']}"
    return {
        "name": c["name"],
        "file": c["name"] + ".csv",
        "source_repo": repo,
        "commit": commit,
        "source_path": c["source_path"],
        "url": url,
        "licence": LICENCE[repo],
        "metric": c["metric"],
        "direction": c["direction"],
        "model": c["model"],
        "tokens_per_step": c["tokens_per_step"],
        "tokens_per_step_source": c["tokens_per_step_source"],
        "lr_schedule": c["lr_schedule"],
        "decay_start_step": c.get("decay_start_step"),
        "decay_start_source": c.get("decay_start_source"),
        "uncooled_companion": c.get("uncooled_companion"),
        "points": len(rows),
        "first_step": rows[0][0],
        "last_step": rows[-1][0],
        "last_tokens": rows[-1][2],
        "has_step0": rows[0][0] == 0,
        "thinned": False,
        "notes": c["notes"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mirror", required=True, help="folder holding copies of the source repositories")
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    ap.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    ap.add_argument("--only", nargs="*", help="curve names to process (default: all)")
    a = ap.parse_args(argv)

    sources: dict[str, Source] = {}
    outputs: dict[str, str] = {}
    manifest = []
    for c in CURVES:
        if a.only and c["name"] not in a.only:
            continue
        repo, commit = c["source"]
        src = sources.setdefault(repo, Source(a.mirror, repo, commit))
        rows = c["parse"](src)
        if not rows:
            raise SystemExit(f"{c['name']}: no rows parsed")
        outputs[c["name"] + ".csv"] = render(rows, c["direction"])
        manifest.append(manifest_entry(c, rows))
    if not a.only:
        outputs["manifest.json"] = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"

    bad = 0
    for fn, text in outputs.items():
        path = os.path.join(a.out, fn)
        if a.check:
            try:
                with open(path, encoding="utf-8", newline="") as fh:
                    same = fh.read() == text
            except FileNotFoundError:
                same = False
            print(("ok      " if same else "DIFFERS ") + fn)
            bad += not same
        else:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            print("wrote", fn)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
