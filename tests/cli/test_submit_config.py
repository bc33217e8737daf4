"""`cpr submit`'s config: every shipped config composes and validates; bad values are one line, exit 2.

These fail before anything starts (no Ray, no data, no MLflow), so they are fast.
"""

from __future__ import annotations

import pytest

from orchestrator.config.compose import GROUPS, compose_job, options
from orchestrator.config.validate import validate_job
from orchestrator.core import stop_rule
from tests.cli.conftest import refused

SHIPPED = [(g, o) for g in GROUPS if g != "experiment" for o in options(g)]


@pytest.mark.parametrize(("group", "option"), SHIPPED, ids=[f"{g}={o}" for g, o in SHIPPED])
def test_every_shipped_config_composes_and_validates(group: str, option: str) -> None:
    job = compose_job([f"{group}={option}"])
    validate_job(job)
    assert getattr(job, group) is not None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_overlay_composes_and_validates(experiment: str) -> None:
    job = compose_job([f"+experiment={experiment}"])
    validate_job(job)


def test_the_debug_experiment_is_small() -> None:
    job = compose_job(["+experiment=debug"])
    assert job.model.name == "llama-tiny" and job.train.max_tokens < compose_job([]).train.max_tokens


def test_keys_scripts_rely_on_exist() -> None:
    job = compose_job(
        [
            "stop.resource=tokens",
            "stop.eta=0.5",
            "stop.window=4",
            "stop.patience=2",
            "stop.min_checks=3",
            "stop.budget=1e6",
            "data.path=/tmp",
            "cluster.address=auto",
            "cluster.num_workers=2",
            "tracking.uri=sqlite:////tmp/x.db",
            "detach=true",
            "stop.eta_rel=null",
        ]
    )
    assert (job.stop.resource, job.stop.eta, job.stop.window, job.stop.patience) == ("tokens", 0.5, 4, 2)
    assert (job.stop.min_checks, job.stop.budget, job.data.path) == (3, 1e6, "/tmp")
    assert (job.cluster.address, job.tracking.uri, job.detach) == ("auto", "sqlite:////tmp/x.db", True)


def test_cfg_prints_the_composed_config(cli) -> None:
    result = cli("submit", "--cfg", "+experiment=debug")
    assert result.code == 0, result.err
    assert "llama-tiny" in result.out and "eta_rel" in result.out and "max_loss" in result.out


@pytest.mark.parametrize("option", ["default", "shadow"])
def test_the_stop_defaults_are_the_cores(option: str) -> None:
    """No threshold set: the budget-aware η with the core's δ, window, patience and warm-up (as `cpr replay`)."""
    stop = compose_job([f"stop={option}"]).stop
    assert (stop.max_loss, stop.eta, stop.eta_rel) == (None, None, None)
    rule = stop.rule_config()
    assert (rule.max_loss, rule.eta, rule.eta_rel) == (stop_rule.DEFAULT_MAX_LOSS, None, None)
    assert (rule.window, rule.patience, rule.min_checks) == (
        stop_rule.DEFAULT_WINDOW,
        stop_rule.DEFAULT_PATIENCE,
        stop_rule.DEFAULT_MIN_CHECKS,
    )
    assert compose_job([f"stop={option}", "stop.max_loss=0.05"]).stop.rule_config().max_loss == 0.05
    relative = compose_job([f"stop={option}", "stop.eta_rel=0.05"]).stop.rule_config()
    assert (relative.max_loss, relative.eta_rel) == (None, 0.05)


def test_psi_is_the_validation_loss_by_default_and_a_domain_mix_or_a_function_on_request() -> None:
    default = compose_job([]).psi.spec()
    assert (default.kind, default.name, default.units) == ("val_loss", "-val_loss", "nats/token")
    mix = compose_job(["psi=domains", "+psi.weights.tests=3"])
    validate_job(mix)
    assert mix.psi.spec().weights == {"general": 0.25, "tests": 0.75} and mix.held_out_domains() == ["tests", "docs"]
    assert compose_job(["psi=domains", "+psi.weights.tests=1", "probe=off"]).held_out_domains() == ["tests"]
    fn = compose_job(["psi=fn", "psi.name=acc"])
    validate_job(fn)
    assert (fn.psi.spec().name, fn.psi.spec().units) == ("acc", "accuracy")
    assert fn.psi.function().__name__ == "next_token_accuracy"


def test_cfg_shows_the_psi_group(cli) -> None:
    result = cli("submit", "--cfg", "psi=fn")
    assert result.code == 0, result.err
    assert "orchestrator.examples.psi_score:next_token_accuracy" in result.out


BAD = [
    (["priority=10"], "priority"),
    (["priority=-1"], "priority"),
    (["group=a b"], "group"),
    (["probe.interval=0"], "probe.interval"),
    (["probe.interval=-3"], "probe.interval"),
    (["probe.batches=0"], "probe.batches"),
    (["probe.domains=[tests,nope]"], "probe.domains"),
    (["probe.checkpoints=[0.5,1.5]"], "probe.checkpoints"),
    (["probe.checkpoints=[0]"], "probe.checkpoints"),
    (["probe.checkpoints=[]"], "probe.checkpoints"),
    (["probe.histogram.lo=0"], "probe.histogram.lo"),
    (["probe.histogram.hi=1e-13"], "probe.histogram.hi"),  # below lo
    (["probe.histogram.bins_per_decade=0"], "probe.histogram.bins_per_decade"),
    (["probe.histogram.bins_per_decade=1000"], "probe.histogram.bins_per_decade"),
    (["probe.statistic=max"], "probe.statistic"),
    (["probe.top_k=0"], "probe.top_k"),
    (["probe.fit_method=guess"], "probe.fit_method"),
    (["probe.model_id=a/b"], "model_id"),
    (["+data.domains.web={source:ftp}"], "data.domains.web.source"),
    (["+data.domains.web={source:text_dir,pth:/tmp}"], "data.domains.web.pth"),
    (["+data.domains.general={source:stdlib}"], "data.domains.general"),
    (["stop.foo=1"], "stop.foo"),
    (["bogus=1"], "bogus"),
    (["stop.window=abc"], "stop.window"),
    (["train.lr=fast"], "train.lr"),
    (["model=nope"], "model"),
    (["+experiment=nope"], "experiment"),
    (["stop.window"], "overrides"),
    (["stop.eta=-1", "stop.eta_rel=null"], "stop.eta"),
    (["stop.eta=0.1", "stop.eta_rel=0.1"], "stop.eta"),  # both an absolute and a relative η
    (["stop.max_loss=0"], "stop.max_loss"),
    (["stop.max_loss=0.7"], "stop.max_loss"),
    (["stop.max_loss=nan"], "stop.max_loss"),
    (["stop.max_loss=0.01", "stop.eta_rel=0.1"], "stop.max_loss"),  # a budget-aware and a relative η
    (["stop.max_loss=0.01", "stop.eta=0.1"], "stop.max_loss"),
    (["stop.eta_rel=1.5"], "stop.eta_rel"),
    (["stop.patience=0"], "stop.patience"),
    (["stop.window=1"], "stop.window"),
    (["stop.resource=watts"], "stop.resource"),
    (["stop.resource=gpu_hours"], "stop.resource"),
    (["stop.estimator=magic"], "stop.estimator"),
    (["stop.min_fraction=0.5"], "stop.min_fraction"),
    (["train.eval_interval=0"], "train.eval_interval"),
    (["train.eval_interval=-5"], "train.eval_interval"),
    (["train.report_interval=0"], "train.report_interval"),
    (["train.seq_len=1024"], "train.seq_len"),
    (["train.lr=0"], "train.lr"),
    (["train.schedule=linear"], "train.schedule"),
    (["train.max_tokens=100"], "train.max_tokens"),
    (["cluster.num_workers=0"], "cluster.num_workers"),
    (["cluster.min_workers=3"], "cluster.min_workers"),
    (["cluster.max_workers=1"], "cluster.max_workers"),
    (["cluster.max_workers=0"], "cluster.max_workers"),
    (["cluster.max_workers=3"], "cluster.max_workers"),  # 2 micro-batches per step do not split over 3 ranks
    (["cluster.resize_cooldown_s=-1"], "cluster.resize_cooldown_s"),
    (["cluster.metrics_export_port=0"], "cluster.metrics_export_port"),
    (["cluster.metrics_export_port=70000"], "cluster.metrics_export_port"),
    (["cluster.backend=nccl"], "cluster.backend"),
    (["cluster.backend=mpi"], "cluster.backend"),
    (["deepspeed.zero_stage=4"], "deepspeed.zero_stage"),
    (["deepspeed.precision=fp8"], "deepspeed.precision"),
    (["model.arch=mamba"], "model.arch"),
    (["telemetry.interval_s=0"], "telemetry.interval_s"),
    (["telemetry.enabled=false"], "stop.resource"),  # energy cannot be the rule's resource without energy telemetry
    (["telemetry.country_iso_code=U"], "telemetry.country_iso_code"),
    (["name=a/b"], "name"),
    (["psi=nope"], "psi"),
    (["psi.kind=accuracy"], "psi.kind"),
    (["psi=fn", "psi.fn=no_such_package_xyz.evals:score"], "psi.fn"),  # not importable
    (["psi=fn", "psi.fn=orchestrator.examples.psi_score"], "psi.fn"),  # no :function
    (["psi=fn", "psi.fn=orchestrator.examples.psi_score:HELD_OUT"], "psi.fn"),  # not callable
    (["psi=fn", "psi.fn=orchestrator.examples.psi_score:missing"], "psi.fn"),
    (["psi=fn", "deepspeed=zero3"], "psi.fn"),  # rank 0 alone cannot run a ZeRO-3 forward pass
    (["psi=fn", "psi.name= "], "psi.name"),
    (["psi=domains", "+psi.weights.nope=1"], "psi.weights.nope"),  # not one of data.domains
    (["psi=domains", "psi.weights.general=-1"], "psi.weights.general"),
    (["psi=domains", "psi.weights.general=nan"], "psi.weights.general"),
    (["psi=domains", "psi.weights.general=0"], "psi.weights"),  # all 0
    (["psi=domains", "~psi.weights.general"], "psi.weights"),  # none
    (["psi=domains", "psi.weights.general=heavy"], "psi.weights.general"),
    (["+psi.weights.tests=1"], "psi.weights"),  # weights without psi=domains
    (["psi.fn=orchestrator.examples.psi_score:next_token_accuracy"], "psi.fn"),  # fn without psi=fn
]


@pytest.mark.parametrize(("overrides", "field"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_is_one_line_naming_the_field(hostile, overrides: list[str], field: str) -> None:
    """Exit 2, one line naming the field, nothing written, nothing started: `hostile` turns Hydra's app, Ray and data
    preparation into a failure, so a case that slipped through fails at once instead of training."""
    refused(hostile, f"error: {field}", "submit", *overrides)
