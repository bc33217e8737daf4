"""Hostile `cpr submit` configs: each is refused in one line naming the field, exit 2, before Hydra makes
its output folder, before the data is prepared and before Ray starts; nothing is written.

The `hostile` fixture (tests/cli/conftest.py) turns Hydra's app, Ray and data preparation into test failures, so a
case that slipped through would fail fast instead of training.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.conftest import Launched, refused, run_cli, tree

HUGE = "1" + "0" * 40
REPO = Path(__file__).resolve().parents[2]

BAD_CONFIGS: list[tuple[str, list[str], str]] = [
    # unknown keys, at every level and however they are added or removed
    ("unknown-top-key", ["bogus=1"], "bogus"),
    ("unknown-group-key", ["train.lr_max=1"], "train.lr_max"),
    ("unknown-nested-key", ["probe.histogram.nope=1"], "probe.histogram.nope"),
    ("appended-unknown-key", ["+model.foo=1"], "model.foo"),
    ("force-added-unknown-key", ["++bogus=1"], "bogus"),
    ("force-added-nested-key", ["++probe.histogram.x=1"], "probe.histogram.x"),
    ("deleted-group", ["~train"], "train"),
    ("unknown-config-option", ["model=nope"], "model"),
    # wrong types
    ("string-for-float", ["train.lr=fast"], "train.lr"),
    ("float-for-int", ["stop.window=2.5"], "stop.window"),
    ("bool-for-int", ["stop.patience=true"], "stop.patience"),
    ("list-for-float", ["train.lr=[1,2]"], "train.lr"),
    ("dict-for-float", ["train.lr={a:1}"], "train.lr"),
    ("string-for-bool", ["detach=maybe"], "detach"),
    ("string-for-list", ["probe.checkpoints=abc"], "probe.checkpoints"),
    ("null-for-required", ["train.lr=null"], "train.lr"),
    ("env-interpolation-of-wrong-type", ["train.lr=${oc.env:HOME}"], "train.lr"),
    ("dangling-interpolation", ["train.lr=${nope}"], "train.lr"),
    ("unquoted-comma", ["train.lr=1,2"], "train.lr"),
    ("non-ascii-token", ["train.lr=Ω"], "train.lr"),
    # NaN, infinities, negatives, zero
    ("nan-lr", ["train.lr=nan"], "train.lr"),
    ("inf-lr", ["train.lr=inf"], "train.lr"),
    ("overflowing-lr", ["train.lr=1e400"], "train.lr"),
    ("negative-lr", ["train.lr=-1e-3"], "train.lr"),
    ("zero-lr", ["train.lr=0"], "train.lr"),
    ("negative-eta", ["stop.eta=-1", "stop.eta_rel=null"], "stop.eta"),
    ("nan-eta", ["stop.eta=nan", "stop.eta_rel=null"], "stop.eta"),
    ("inf-eta", ["stop.eta=inf", "stop.eta_rel=null"], "stop.eta"),
    ("eta-rel-above-1", ["stop.eta_rel=1.5"], "stop.eta_rel"),
    ("eta-rel-zero", ["stop.eta_rel=0"], "stop.eta_rel"),
    ("max-loss-zero", ["stop.max_loss=0"], "stop.max_loss"),
    ("max-loss-above-half", ["stop.max_loss=0.7"], "stop.max_loss"),
    ("max-loss-and-eta-rel", ["stop.max_loss=0.01", "stop.eta_rel=0.1"], "stop.max_loss"),
    ("patience-zero", ["stop.patience=0"], "stop.patience"),
    ("window-one", ["stop.window=1"], "stop.window"),
    ("negative-budget", ["stop.budget=-5"], "stop.budget"),
    ("nan-min-fraction", ["stop.min_fraction=nan"], "stop.min_fraction"),
    ("top-k-zero", ["probe.top_k=0"], "probe.top_k"),
    ("checkpoint-fraction-above-1", ["probe.checkpoints=[0.5,1.5]"], "probe.checkpoints"),
    ("checkpoint-fraction-nan", ["probe.checkpoints=[nan]"], "probe.checkpoints"),
    ("ci-level-1", ["probe.ci_level=1"], "probe.ci_level"),
    ("nan-memory", ["cluster.memory_gb_per_worker=nan"], "cluster.memory_gb_per_worker"),
    ("zero-telemetry-interval", ["telemetry.interval_s=0"], "telemetry.interval_s"),
    # huge numbers and long strings
    ("huge-token-budget", [f"train.max_tokens={HUGE}"], "train.max_tokens"),
    ("huge-window", [f"stop.window={HUGE}"], "stop.window"),
    ("huge-seed", [f"seed={HUGE}"], "seed"),
    ("huge-width", [f"model.hidden_size={HUGE}"], "model.hidden_size"),
    ("5000-digit-integer", ["train.max_tokens=1" + "0" * 5000], "train.max_tokens"),
    ("10k-char-name", ["name=" + "a" * 10_000], "name"),
    # model and data shapes that only the build or the data preparation used to catch
    ("kv-heads-zero", ["model.num_kv_heads=0"], "model.num_kv_heads"),
    ("kv-heads-not-divisor", ["model.num_kv_heads=3"], "model.num_kv_heads"),
    ("negative-mlp-width", ["model.intermediate_size=-1"], "model.intermediate_size"),
    ("negative-vocab", ["model.vocab_size=-1"], "model.vocab_size"),
    ("heads-do-not-divide-width", ["model.num_heads=4", "model.hidden_size=130"], "model.num_heads"),
    ("val-every-1", ["data.val_every=1"], "data.val_every"),
    ("tiny-tokenizer", ["data.tokenizer_vocab=10"], "data.tokenizer_vocab"),
    ("unknown-data-source", ["data.source=ftp"], "data.source"),
    # bad enums
    ("precision-fp8", ["deepspeed.precision=fp8"], "deepspeed.precision"),
    ("zero-stage-4", ["deepspeed.zero_stage=4"], "deepspeed.zero_stage"),
    ("optimizer-sgd", ["deepspeed.optimizer=sgd"], "deepspeed.optimizer"),
    ("resource-watts", ["stop.resource=watts"], "stop.resource"),
    # privacy of the published blueprints
    ("unknown-privacy-mode", ["probe.privacy=laplace"], "probe.privacy"),
    ("noise-without-a-privacy-mode", ["probe.noise_multiplier=0.5"], "probe.noise_multiplier"),
    ("dp-without-noise", ["probe.privacy=dp"], "probe.noise_multiplier"),
    ("noise-mode-without-noise", ["probe.privacy=noise"], "probe.noise_multiplier"),
    ("dp-of-a-median", ["probe.privacy=dp", "probe.noise_multiplier=1", "probe.statistic=median"], "probe.statistic"),
    ("dp-delta-zero", ["probe.privacy=dp", "probe.noise_multiplier=1", "probe.dp_delta=0"], "probe.dp_delta"),
    ("dp-delta-one", ["probe.privacy=dp", "probe.noise_multiplier=1", "probe.dp_delta=1"], "probe.dp_delta"),
    ("dp-delta-nan", ["probe.privacy=dp", "probe.noise_multiplier=1", "probe.dp_delta=nan"], "probe.dp_delta"),
    (
        "negative-noise-clip",
        ["probe.privacy=dp", "probe.noise_multiplier=1", "probe.noise_clip=-1"],
        "probe.noise_clip",
    ),
    # path traversal in names that become folders
    ("traversal-job-name", ["name=../../x"], "name"),
    ("traversal-group", ["group=../../x"], "group"),
    ("traversal-model-id", ["probe.model_id=../../etc"], "model_id"),
    # the outside world: data, folders, store, cluster (checked before Hydra writes its output folder)
    ("missing-data-path", ["data=text_dir", "data.path=/nonexistent/cpr-data"], "data.path"),
    ("data-path-required", ["data.source=text_dir"], "data.path"),
    ("memmap-not-a-folder", ["data.source=memmap", "data.path=/etc/passwd"], "data.path"),
    ("missing-domain-path", ["+data.domains.code={source:text_dir,path:/nonexistent}"], "data.domains.code.path"),
    ("runs-dir-under-a-file", ["runs_dir=/dev/null/x"], "runs_dir"),
    ("checkpoint-dir-under-a-file", ["train.checkpoint_dir=/dev/null/ck"], "train.checkpoint_dir"),
    ("tracking-scheme", ["tracking.uri=ftp://x"], "tracking.uri"),
    ("tracking-unreachable", ["tracking.uri=http://127.0.0.1:1"], "tracking.uri"),
    ("more-workers-than-cpus", ["cluster.num_workers=4", "cluster.num_cpus=2"], "cluster.num_workers"),
    ("cpus-per-worker-beyond-machine", ["cluster.cpus_per_worker=100000"], "cluster.num_workers"),
    ("cluster-unreachable", ["cluster.address=127.0.0.1:1"], "cluster.address"),
    # keys the chosen data source or a switched-off group ignores: refused like unknown keys
    ("path-on-stdlib", ["data.path=/nonexistent"], "data.path"),
    ("stdlib-glob-matching-nothing", ["data.glob=no_such_*.py"], "data.glob"),
    ("tokenizer-on-memmap", ["data=memmap", f"data.path={REPO}", f"data.tokenizer={REPO}"], "data.tokenizer"),
    ("missing-tokenizer", [f"data.tokenizer={REPO}/no-such-tokenizer.json"], "data.tokenizer"),
    ("text-field-on-text-dir", ["data=text_dir", f"data.path={REPO}", "data.text_field=body"], "data.text_field"),
    ("max-files-on-memmap", ["data=memmap", f"data.path={REPO}", "data.max_files=3"], "data.max_files"),
    ("path-on-stdlib-domain", ["+data.domains.x={source:stdlib,path:/x}"], "data.domains.x.path"),
    ("floor-of-constant-schedule", ["train.schedule=constant", "train.min_lr_fraction=0.2"], "train.min_lr_fraction"),
    (
        "cooldown-of-cosine-schedule",
        ["train.schedule=cosine", "train.cooldown_fraction=0.1"],
        "train.cooldown_fraction",
    ),
    ("on-stop-of-constant-schedule", ["train.schedule=constant", "stop.on_stop=halt"], "stop.on_stop"),
    ("cooldown-fraction-above-half", ["train.cooldown_fraction=0.6"], "train.cooldown_fraction"),
    ("cooldown-fraction-zero", ["train.cooldown_fraction=0"], "train.cooldown_fraction"),
    ("cooldown-longer-than-budget", ["train.cooldown_steps=800"], "train.cooldown_steps"),
    ("warmup-longer-than-budget", ["train.warmup_steps=800"], "train.warmup_steps"),
    ("unknown-cooldown-shape", ["train.cooldown_shape=sqrt"], "train.cooldown_shape"),
    ("setting-of-probe-off", ["probe=off", "probe.interval=3"], "probe.interval"),
    ("probe-floor-above-cap", ["probe.min_batches=5"], "probe.min_batches"),
    ("probe-share-above-one", ["probe.max_share=1.5"], "probe.max_share"),
    ("setting-of-telemetry-off", ["telemetry=off", "telemetry.interval_s=5"], "telemetry.interval_s"),
    ("local-setting-on-a-cluster", ["cluster.address=auto", "cluster.num_cpus=2"], "cluster.num_cpus"),
    # notifications: the channels are checked before anything starts (docs/notify.md)
    ("notify-unknown-event", ["notify.webhook=http://127.0.0.1:9/x", "notify.on=[stop,bogus]"], "notify.on[1]"),
    ("notify-malformed-apprise-url", ["notify.urls=[notaurl]"], "notify.urls[0]"),
    ("notify-webhook-not-http", ["notify.webhook=ftp://example.org/x"], "notify.webhook"),
    ("notify-missing-command", ["notify.command=/no/such/program"], "notify.command"),
    ("notify-zero-timeout", ["notify.webhook=http://127.0.0.1:9/x", "notify.timeout_s=0"], "notify.timeout_s"),
    ("notify-secret-without-webhook", ["notify.secret=abc"], "notify.secret"),
    # sweeps: every job is checked before Hydra writes its sweep folder
    ("sweep-with-a-bad-value", ["-m", "train.lr=1e-3,nan"], "train.lr"),
    ("sweep-with-an-unknown-key", ["-m", "bogus=1,2"], "bogus"),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [c[1:] for c in BAD_CONFIGS],
    ids=[f"{i + 1:02d}-{c[0]}" for i, c in enumerate(BAD_CONFIGS)],
)
def test_bad_config_is_refused_in_one_line_before_anything_starts(hostile, overrides, field):
    refused(hostile, field, "submit", *overrides)


def test_there_are_at_least_30_bad_configs():
    assert len(BAD_CONFIGS) >= 30 and len({c[0] for c in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize(
    "argv",
    [
        ["+experiment=debug"],
        ["-m", "train.lr=1e-3,3e-3", "+experiment=debug"],
        ["+experiment=debug", "probe.privacy=dp", "probe.noise_multiplier=1.0", "probe.dp_delta=1e-6"],
    ],
)
def test_the_guards_catch_a_good_config_at_the_launch(hostile, argv):
    """The cases above are refused before the launch, not by the guards: a good config does reach them."""
    with pytest.raises(Launched):
        run_cli("submit", *argv)
    assert tree(hostile) == set()


INT_FIELDS = (
    "seed",
    "train.max_tokens",
    "train.micro_batch",
    "train.warmup_steps",
    "train.eval_interval",
    "stop.window",
    "stop.patience",
    "stop.min_checks",
    "stop.max_nonfinite",
    "model.hidden_size",
    "model.num_layers",
    "cluster.num_workers",
    "data.val_every",
    "probe.interval",
    "probe.min_batches",
    "probe.n_resamples",
)
FLOAT_FIELDS = (
    "train.lr",
    "train.beta1",
    "train.weight_decay",
    "stop.eta_rel",
    "stop.max_loss",
    "stop.min_fraction",
    "stop.budget",
    "model.dropout",
    "probe.top_k",
    "probe.max_share",
    "probe.ci_target",
    "probe.ci_level",
    "telemetry.interval_s",
    "cluster.memory_gb_per_worker",
)
_ALWAYS_BAD = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e309", "-1e400", "abc", "''", "true", "[]", "{}", "0x10", "1.2.3", "--1"]),
    st.integers(max_value=-1).map(str),
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False).map(repr),
    st.text("abcxyz_.", min_size=1, max_size=12).filter(lambda s: s not in ("nan", "inf")),
)


@st.composite
def bad_numeric_override(draw: st.DrawFn) -> tuple[str, str]:
    """A numeric field and a value no such field accepts: NaN, ±inf, a negative, garbage, or (integer fields) a
    count far beyond any real job's."""
    if draw(st.booleans()):
        field = draw(st.sampled_from(INT_FIELDS))
        value = draw(_ALWAYS_BAD | st.integers(16, 400).map(lambda k: str(10**k)))
    else:
        field = draw(st.sampled_from(FLOAT_FIELDS))
        value = draw(_ALWAYS_BAD)
    return field, value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_numeric_override())
def test_random_bad_numeric_override_is_refused_in_one_line(hostile, case):
    field, value = case
    refused(hostile, field, "submit", f"{field}={value}")


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    """The console entry point as a user runs it: stderr is the one line, even for a 10k-character value."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "launch.cli", "submit", "train.lr=nan", "name=" + "x" * 10_000]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("cpr: error: name: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout and len(done.stderr) < 600
    assert list(tmp_path.iterdir()) == []
