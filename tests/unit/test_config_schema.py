"""The typed config: the schema holds every default (conf/ only overrides), its enums agree with the code that reads
them, its field constraints name the field, and the derived values are computed by the config itself."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from orchestrator.blueprints.builder import FIT_METHODS, STATISTICS
from orchestrator.config import schema
from orchestrator.config.compose import GROUPS, compose_job, config_dir, job_from_dict, job_to_dict
from orchestrator.config.schema import JobConfig, check_fields
from orchestrator.core import stop_rule
from orchestrator.data.sources import SOURCES
from orchestrator.errors import InputError

HINTS = typing.get_type_hints(JobConfig)


def _restated(node: Any, default: Any, where: str) -> list[str]:
    """The keys of a YAML node whose value equals the schema default it would override."""
    if isinstance(node, dict) and dataclasses.is_dataclass(default):
        return [k for key, v in node.items() for k in _restated(v, getattr(default, key), f"{where}.{key}")]
    return [where] if node == default else []


def _option_files() -> list[Path]:
    return sorted(p for g in GROUPS if g != "experiment" for p in (config_dir() / g).glob("*.yaml"))


@pytest.mark.parametrize("path", _option_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_group_option_states_only_what_differs_from_the_schema(path: Path) -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(path)) or {}
    if "@package _global_" in path.read_text():
        restated = _restated(node, JobConfig(), "")
    else:
        restated = _restated(node, HINTS[path.parent.name](), path.parent.name)
    assert restated == [], f"{path.name} restates the schema's defaults of {restated}"


def test_the_default_job_is_the_schemas() -> None:
    """config.yaml picks options and sets nothing: the composed default job is JobConfig() with the stdlib domains."""
    job = compose_job([])
    assert dataclasses.replace(job, data=dataclasses.replace(job.data, domains={})) == JobConfig()
    assert set(job.data.domains) == {"tests", "docs"}


def test_the_stop_defaults_are_read_from_the_core() -> None:
    stop = schema.StopConfig()
    assert (stop.window, stop.patience, stop.min_checks) == (
        stop_rule.DEFAULT_WINDOW,
        stop_rule.DEFAULT_PATIENCE,
        stop_rule.DEFAULT_MIN_CHECKS,
    )
    assert stop.rule_config().max_loss == stop_rule.DEFAULT_MAX_LOSS


def test_the_enums_are_the_values_their_readers_accept() -> None:
    assert [s.value for s in schema.DataSource] == list(SOURCES)
    assert [s.value for s in schema.Statistic] == list(STATISTICS)
    assert [s.value for s in schema.FitMethod] == list(FIT_METHODS)
    for enum in (schema.Arch, schema.Precision, schema.Optimizer, schema.Schedule, schema.Backend, schema.FitMethod):
        assert all(member.name == member.value for member in enum)  # OmegaConf reads and prints the name


def test_a_job_survives_the_dict_and_json_round_trip() -> None:
    job = compose_job(["deepspeed=zero3-bf16", "probe.fit_method=rank-lstsq", "model=gpt2-small"])
    again = job_from_dict(json.loads(json.dumps(job_to_dict(job))))
    assert again == job and again.deepspeed.precision == "bf16" and again.model.arch == schema.Arch.gpt2


@pytest.mark.parametrize(
    ("part", "change", "field"),
    [
        ("train", {"lr": float("nan")}, "train.lr"),
        ("train", {"micro_batch": 0}, "train.micro_batch"),
        ("cluster", {"metrics_export_port": 70_000}, "cluster.metrics_export_port"),
        ("probe", {"checkpoints": [0.5, 1.5]}, "probe.checkpoints[1]"),
        ("telemetry", {"country_iso_code": "U"}, "telemetry.country_iso_code"),
        ("stop", {"window": 10**16}, "stop.window"),
    ],
)
def test_a_field_constraint_names_the_field(part: str, change: dict[str, Any], field: str) -> None:
    job = compose_job([])
    bad = dataclasses.replace(job, **{part: dataclasses.replace(getattr(job, part), **change)})
    with pytest.raises(InputError) as caught:
        check_fields(bad)
    assert caught.value.field == field


def test_the_failed_constraint_shows_the_default() -> None:
    job = compose_job([])
    with pytest.raises(InputError, match=r"default: 0\.005"):
        check_fields(dataclasses.replace(job, train=dataclasses.replace(job.train, lr=-1.0)))


@pytest.mark.parametrize(
    ("domains", "field"),
    [
        ({"general": {"source": "stdlib"}}, "data.domains.general"),
        ({"a b": {"source": "stdlib"}}, "data.domains.a b"),
        ({"web": {"source": "ftp"}}, "data.domains.web.source"),
        ({"web": {"source": "text_dir", "pth": "/x"}}, "data.domains.web.pth"),
        ({"web": {"source": "text_dir"}}, "data.domains.web.path"),
        ({"web": {"source": "stdlib", "max_files": True}}, "data.domains.web.max_files"),
        ({"web": "text"}, "data.domains.web"),
    ],
)
def test_a_bad_domain_names_its_field(domains: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        schema.DataConfig(domains=domains).domain_configs()
    assert caught.value.field == field


def test_domains_become_typed_configs() -> None:
    domains = compose_job([]).data.domain_configs()
    assert domains["tests"] == schema.DomainConfig(source=schema.DataSource.stdlib, glob="test/test_*.py", max_files=40)


def test_tokens_per_step_and_resizing_keep_the_global_batch() -> None:
    job = compose_job(["cluster.num_workers=2", "cluster.min_workers=1", "cluster.max_workers=4", "train.grad_accum=2"])
    t = job.train
    assert job.tokens_per_step == t.seq_len * t.micro_batch * t.grad_accum * 2
    assert job.total_steps == t.max_tokens // job.tokens_per_step
    assert job.world_sizes() == [1, 2, 3, 4]
    for world in (1, 2, 4):
        other = job.resized(world)
        assert other.cluster.num_workers == world and other.tokens_per_step == job.tokens_per_step
    assert job.resized(1).train.grad_accum == 4


def test_slot_unit_and_resource_model_follow_the_cluster() -> None:
    job = compose_job([])
    assert job.slot_unit() == ("CPU", 1)
    assert compose_job(["cluster=ray"]).slot_unit() == ("GPU", 1)
    model = job.resource_model(1_000_000)
    assert (model.zero_stage, model.dp_world_size, model.precision) == (2, 2, "fp32")


def test_checkpoint_steps_default_to_every_fourth_check() -> None:
    t = compose_job([]).train
    assert t.checkpoint_steps() == 4 * t.eval_interval
    assert dataclasses.replace(t, checkpoint_interval=0).checkpoint_steps() == 0


def test_probe_domains_and_histogram_bins() -> None:
    job = compose_job(["probe.domains=[docs,docs]"])
    assert job.probe_domains() == ["docs"]
    assert job.probe.histogram.spec().n_bins > 0
    with pytest.raises(InputError, match=r"probe\.domains"):
        compose_job(["probe.domains=[nope]"]).probe_domains()
    with pytest.raises(InputError, match=r"probe\.histogram\.bins_per_decade"):
        compose_job(["probe.histogram.bins_per_decade=1000"]).probe.histogram.spec()


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["+experiment=debug", "probe=off", "telemetry=off"],  # the experiment's probe settings are not the user's
        ["train.schedule=cosine", "train.min_lr_fraction=0.2"],
        ["data=memmap", "data.path=/data/tokens"],  # the option's own max_files=null is the schema's neutral value
        ["data.glob=test/test_*.py"],  # the stdlib corpus reads data.glob
        ["data=text_dir", "data.path=/data/corpus", "data.tokenizer=/models/base"],  # text_dir's own tokenizer_vocab
    ],
)
def test_a_config_that_sets_nothing_ignored_is_accepted(overrides: list[str]) -> None:
    from orchestrator.config.validate import refuse_ignored

    refuse_ignored(compose_job(overrides), overrides)


def test_an_ignored_key_set_by_a_config_file_is_refused_only_when_it_selects_data() -> None:
    """A data key the source ignores is refused wherever it was set (it would silently train on other data); a
    switched-off group's settings only when the user named them."""
    from orchestrator.config.validate import ignored_keys, refuse_ignored

    job = compose_job(["+experiment=debug", "probe=off"])
    listed = {key: by_value for key, _, _, by_value in ignored_keys(job)}
    assert listed["probe.interval"] is False
    refuse_ignored(job)
    job = compose_job(["data.source=stdlib"])
    job.data.path = "/data/corpus"
    with pytest.raises(InputError, match=r"data\.path: is ignored by data\.source=stdlib"):
        refuse_ignored(job)


@pytest.mark.parametrize(
    ("overrides", "field", "why"),
    [
        (["data=memmap", "data.path=/data/tokens", "data.tokenizer=/models/base"], "data.tokenizer", "memmap"),
        (["data.tokenizer=/models/base", "data.tokenizer_vocab=8192"], "data.tokenizer_vocab", "data.tokenizer set"),
    ],
)
def test_a_given_tokenizer_is_refused_where_it_or_the_vocab_size_is_ignored(
    overrides: list[str], field: str, why: str
) -> None:
    """A memmap corpus's ids are already made (refused whoever set data.tokenizer); with a given tokenizer none is
    trained, so a tokenizer_vocab given on the command line would do nothing."""
    from orchestrator.config.validate import refuse_ignored

    job = compose_job(overrides)
    with pytest.raises(InputError, match=why) as err:
        refuse_ignored(job, overrides if field == "data.tokenizer_vocab" else ())
    assert err.value.field == field
