"""Record the example curve for `cpr replay`: a small real CPU pretraining run, all resource kinds measured.

Trains a ~1.8M-parameter Llama (transformers' `LlamaForCausalLM`, random init) on the Python standard library's
own sources, with a byte-level BPE tokenizer trained locally, and writes one CSV row per evaluation with
`step,loss,tokens,flops,wall_hours,energy_kwh,co2_kg`. Nothing is downloaded. The shipped curve was made with:

    python -m benchmarks.record_curve --out orchestrator/examples/tiny_llama_stdlib.csv \
        --max-tokens 5242880 --eval-every 40 --seed 0

Not part of the pure core: torch, transformers, tokenizers and codecarbon are imported here only.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.flops import FlopsModel

BATCH_SIZE = 16
SEQ_LEN = 128
VOCAB_SIZE = 4096
HIDDEN = 128
N_LAYERS = 4
N_HEADS = 4
INTERMEDIATE = 344
MAX_POSITIONS = 256
LR_PEAK = 3e-3
LR_FINAL_FRACTION = 0.1
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
WARMUP_FRACTION = 0.05
GRAD_CLIP = 1.0
VAL_EVERY_NTH_FILE = 20
VAL_SEQUENCES = 128
"""Fixed held-out set: 128 sequences × 128 targets = 16,384 validation tokens, 8 batches of 16."""
COLUMNS = ("step", "loss", "tokens", "flops", "wall_hours", "energy_kwh", "co2_kg")


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """The stdlib sources, split by file into train and validation."""

    root: Path
    train_files: tuple[Path, ...]
    val_files: tuple[Path, ...]


def stdlib_corpus() -> Corpus:
    """The `stdlib` data source of `cpr submit` (orchestrator/data/sources.py): every 20th file is held out."""
    from orchestrator.config.schema import DataConfig
    from orchestrator.data.sources import open_corpus

    corpus = open_corpus(DataConfig(source="stdlib", val_every=VAL_EVERY_NTH_FILE, max_files=None))
    split = [corpus.split(i) for i in range(len(corpus.files))]
    return Corpus(
        root=corpus.root,
        train_files=tuple(f for f, s in zip(corpus.files, split, strict=True) if s == "train"),
        val_files=tuple(f for f, s in zip(corpus.files, split, strict=True) if s == "val"),
    )


def read_texts(files: tuple[Path, ...]) -> list[str]:
    """File contents as text (undecodable bytes replaced, so every file is used)."""
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def train_tokenizer(texts: list[str]) -> Any:
    """Byte-level BPE with vocab VOCAB_SIZE, trained on the train split only (the data pipeline's trainer)."""
    from orchestrator.data.prepare import train_tokenizer as train

    return train(texts, VOCAB_SIZE)


def encode_stream(tok: Any, texts: list[str]) -> Any:
    """All files' tokens concatenated in file order, each file followed by the EOS token, as a 1-D int64 tensor."""
    import torch

    from orchestrator.data.prepare import EOS

    eos_id = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: Any, starts: Any) -> tuple[Any, Any]:
    """Inputs stream[s : s+T] and next-token targets stream[s+1 : s+T+1] for each start s."""
    import torch

    idx = starts.unsqueeze(1) + torch.arange(SEQ_LEN + 1).unsqueeze(0)
    chunk = stream[idx]
    return chunk[:, :-1], chunk[:, 1:]


def train_batches(stream: Any, seed: int) -> Iterator[tuple[Any, Any]]:
    """Endless batches: non-overlapping windows of the train stream, reshuffled each epoch by a seeded generator."""
    import torch

    n_windows = (len(stream) - 1) // SEQ_LEN
    epoch = 0
    while True:
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(n_windows, generator=gen)
        for b in range(n_windows // BATCH_SIZE):
            yield windows(stream, order[b * BATCH_SIZE : (b + 1) * BATCH_SIZE] * SEQ_LEN)
        epoch += 1


def val_batches(stream: Any) -> list[tuple[Any, Any]]:
    """VAL_SEQUENCES windows evenly spaced over the validation stream, fixed for the whole run."""
    import torch

    last_start = len(stream) - SEQ_LEN - 1
    if last_start < VAL_SEQUENCES:
        raise RuntimeError(f"validation stream too short: {len(stream)} tokens")
    starts = torch.linspace(0, last_start, VAL_SEQUENCES).long()
    return [windows(stream, starts[i : i + BATCH_SIZE]) for i in range(0, VAL_SEQUENCES, BATCH_SIZE)]


def lr_at(step: int, total_steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 10% of the peak at total_steps."""
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return LR_PEAK * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return LR_PEAK * (LR_FINAL_FRACTION + (1.0 - LR_FINAL_FRACTION) * cosine)


def token_loss(model: Any, x: Any, y: Any) -> Any:
    """Mean next-token cross-entropy in nats per target token."""
    import torch.nn.functional as F

    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def evaluate(model: Any, batches: list[tuple[Any, Any]]) -> float:
    """Mean validation loss (nats/token) over the fixed held-out batches; all batches are the same size."""
    import torch

    model.eval()
    with torch.no_grad():
        total = sum(float(token_loss(model, x, y)) for x, y in batches)
    model.train()
    return total / len(batches)


def build_model(seed: int) -> Any:
    """A randomly initialised Llama: hidden 128, 4 layers, 4 heads, MLP 344, vocab 4096, untied head (= llama-2m)."""
    from orchestrator.config.schema import ModelConfig
    from orchestrator.models import build_model as build

    config = ModelConfig(
        hidden_size=HIDDEN,
        num_layers=N_LAYERS,
        num_heads=N_HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
    )
    return build(config, VOCAB_SIZE, SEQ_LEN, seed)


def flops_model(model: Any) -> FlopsModel:
    """N = all parameters minus the input embedding table (the untied head is a matmul and counts)."""
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    return FlopsModel(n_matmul_params=n_params - n_embed, n_layers=N_LAYERS, d_model=HIDDEN, seq_len=SEQ_LEN)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.record_curve",
        description="Train a ~1.8M-parameter Llama on the stdlib sources on CPU and record its validation-loss "
        "curve with step, loss, tokens, flops, wall_hours, energy_kwh and co2_kg (cumulative).",
    )
    parser.add_argument("--out", required=True, type=Path, help="CSV file to write (overwritten)")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=5_242_880,
        help="training token budget; steps = max_tokens // (16*128) (default: 5242880 = 2560 steps)",
    )
    parser.add_argument("--eval-every", type=int, default=40, help="optimizer steps between evaluations (default: 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init and data order (default: 0)")
    args = parser.parse_args(argv)
    if args.max_tokens < BATCH_SIZE * SEQ_LEN:
        parser.error(f"--max-tokens must be at least one batch ({BATCH_SIZE * SEQ_LEN})")
    if args.eval_every < 1:
        parser.error("--eval-every must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from codecarbon import OfflineEmissionsTracker

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    corpus = stdlib_corpus()
    train_texts, val_texts = read_texts(corpus.train_files), read_texts(corpus.val_files)
    tok = train_tokenizer(train_texts)
    train_stream, val_stream = encode_stream(tok, train_texts), encode_stream(tok, val_texts)
    val = val_batches(val_stream)
    model = build_model(args.seed)
    fm = flops_model(model)
    n_params = sum(p.numel() for p in model.parameters())
    total_steps = args.max_tokens // (BATCH_SIZE * SEQ_LEN)
    tokens_per_step = BATCH_SIZE * SEQ_LEN
    print(
        f"corpus {corpus.root}: train {len(corpus.train_files)} files "
        f"{sum(len(t.encode()) for t in train_texts)} bytes {len(train_stream)} tokens; "
        f"val {len(corpus.val_files)} files {sum(len(t.encode()) for t in val_texts)} bytes {len(val_stream)} tokens; "
        f"eval set {len(val) * BATCH_SIZE * SEQ_LEN} tokens",
        flush=True,
    )
    print(
        f"model {n_params} params (N for FLOPs {fm.n_matmul_params}, {fm.per_token:.0f} FLOPs/token); "
        f"{total_steps} steps x {tokens_per_step} tokens = {total_steps * tokens_per_step} tokens; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR_PEAK,
        betas=BETAS,
    )
    tracker = OfflineEmissionsTracker(
        country_iso_code="USA", measure_power_secs=5, save_to_file=False, log_level="error"
    )
    batches = train_batches(train_stream, args.seed)
    energy_kwh = 0.0
    co2_kg = 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        fh.flush()
        model.train()
        t_start = time.perf_counter()
        tracker.start_task("until-eval-1")
        for step in range(1, total_steps + 1):
            for group in opt.param_groups:
                group["lr"] = lr_at(step - 1, total_steps)
            x, y = next(batches)
            loss = token_loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            if step % args.eval_every != 0 and step != total_steps:
                continue
            val_loss = evaluate(model, val)
            # The interval's task covers its training steps and this evaluation; energy and CO2 are summed.
            data = tracker.stop_task()
            wall_s = time.perf_counter() - t_start
            if data is None:
                raise RuntimeError("codecarbon returned no measurement for the interval")
            energy_kwh += data.energy_consumed
            co2_kg += data.emissions
            tokens = step * tokens_per_step
            writer.writerow(
                [
                    step,
                    repr(val_loss),
                    tokens,
                    repr(fm.training_flops(tokens)),
                    repr(wall_s / 3600.0),
                    repr(energy_kwh),
                    repr(co2_kg),
                ]
            )
            fh.flush()
            print(
                f"step {step:5d}/{total_steps} train {loss.item():.4f} val {val_loss:.4f} tokens {tokens} "
                f"wall {wall_s:7.1f}s {tokens / wall_s:7.0f} tok/s lr {opt.param_groups[0]['lr']:.2e} "
                f"energy {energy_kwh:.6f} kWh co2 {co2_kg:.6f} kg",
                flush=True,
            )
            if step != total_steps:
                tracker.start_task(f"until-eval-{step // args.eval_every + 1}")
    tracker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
