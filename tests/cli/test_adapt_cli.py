"""`cpr adapt`'s refusals, before anything starts (one line naming the field, exit 2, no Ray): a blueprint whose ids or
sizes do not match the model, a memory budget below the frozen model, a = outside [0, 1], an empty S_adapt, a
missing or corrupt base, a strategy that needs a blueprint without one. The base is a Hugging Face folder made here:
a tiny Llama built from config (`save_pretrained`), a tokenizer trained on a few texts, a blueprint written beside it.
`--cfg` shows the resolved job: the base's model and tokenizer, the blueprint's path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.blueprints.model import Blueprint, LayerEntry, dumps_blueprint
from tests.cli.conftest import assert_one_line, refused, run_cli

DEBUG_MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 172}


def make_base(root: Path, *, blueprint_ids: dict[str, int] | None = None) -> Path:
    """root/base: a save_pretrained llama-tiny, its tokenizer.json, and blueprints/v1.json matching its groups."""
    from orchestrator.blueprints.grouping import group_parameters
    from orchestrator.config.schema import ModelConfig
    from orchestrator.data.prepare import EOS, train_tokenizer
    from orchestrator.models import build_model

    base = root / "base"
    tok = train_tokenizer([f"def f{i}(x):\n    return x + {i}\n{EOS}" for i in range(200)], 300)
    model = build_model(ModelConfig(**DEBUG_MODEL), tok.get_vocab_size(), 64, 0)  # type: ignore[arg-type]
    model.save_pretrained(base)
    tok.save(str(base / "tokenizer.json"))
    groups = blueprint_ids or {
        gid: g.n_params for gid, g in group_parameters((n, p.numel()) for n, p in model.named_parameters()).items()
    }
    layers = tuple(LayerEntry(id=g, gradient_norm=1.0 + i, n_params=n) for i, (g, n) in enumerate(groups.items()))
    (base / "blueprints").mkdir()
    (base / "blueprints" / "v1.json").write_text(
        dumps_blueprint(Blueprint(model_id="base", training_checkpoint=1.0, layers=layers, blueprint_version=1))
    )
    return base


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_base(tmp_path_factory.mktemp("adapt"))


@pytest.fixture
def work(tmp_path: Path, base_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(base_folder, tmp_path / "base")
    return tmp_path


def test_cfg_shows_the_base_model_tokenizer_and_blueprint(work: Path) -> None:
    done = run_cli("adapt", "base", "--cfg", "adapt.max_fraction=0.3")
    assert done.code == 0, done.err
    job = yaml.safe_load(done.out)
    assert job["model"]["hidden_size"] == 64 and job["model"]["vocab_size"] <= 300
    assert job["data"]["tokenizer"] == str((work / "base" / "tokenizer.json").resolve())
    assert job["adapt"]["base"] == str((work / "base").resolve()) and job["adapt"]["max_fraction"] == 0.3
    assert job["adapt"]["blueprint"] == str((work / "base" / "blueprints" / "v1.json").resolve())
    assert job["probe"]["enabled"] is False


def test_a_blueprint_of_other_ids_is_refused_listing_the_first_missing(work: Path) -> None:
    other = make_base(work / "other", blueprint_ids={"embed": 1, "attn.0": 2, "attn.7": 3})
    out = refused(work, "adapt.blueprint", "adapt", "base", f"adapt.blueprint={other / 'blueprints' / 'v1.json'}")
    assert "ffn.0" in out.err and "attn.7" in out.err


def test_a_blueprint_of_another_size_is_refused(work: Path) -> None:
    sizes = {"embed": 10, "attn.0": 1, "ffn.0": 1, "norm.0": 1, "attn.1": 1, "ffn.1": 1, "norm.1": 1,
             "norm.final": 1, "head": 1}  # fmt: skip
    other = make_base(work / "other", blueprint_ids=sizes)
    out = refused(work, "adapt.blueprint", "adapt", "base", f"adapt.blueprint={other / 'blueprints' / 'v1.json'}")
    assert "n_params" in out.err


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("adapt.a=1.5", "adapt.a"),
        ("adapt.a=-0.1", "adapt.a"),
        ("adapt.memory_gb=0.000001", "adapt.memory_gb"),
        ("adapt.max_fraction=0.0001", "selects nothing"),
        ("adapt.strategy=sideways", "adapt.strategy"),
        ("model.hidden_size=128", "model.hidden_size"),
        ("adapt=lisa", "adapt.strategy"),  # ZeRO-2, the default: LISA needs zero0
        ("probe=default", "probe.enabled"),
    ],
)
def test_bad_adapt_settings_are_refused(work: Path, override: str, field: str) -> None:
    refused(work, field, "adapt", "base", override)


def test_a_missing_base_is_refused(work: Path) -> None:
    refused(work, "adapt.base", "adapt", "no-such-job")
    refused(work, "adapt.base", "adapt")  # none given


def test_a_corrupt_base_is_refused(work: Path) -> None:
    (work / "base" / "config.json").write_text("{not json")
    refused(work, "adapt.base", "adapt", "base")


def test_a_base_without_weights_or_tokenizer_is_refused(work: Path) -> None:
    for f in (work / "base").glob("*.safetensors"):
        f.unlink()
    assert "weights" in refused(work, "adapt.base", "adapt", "base").err
    make_base(work / "again")
    (work / "again" / "base" / "tokenizer.json").unlink()
    assert "tokenizer" in refused(work, "adapt.base", "adapt", "again/base").err


def test_a_strategy_that_needs_a_blueprint_is_refused_without_one(work: Path) -> None:
    shutil.rmtree(work / "base" / "blueprints")
    refused(work, "adapt.blueprint", "adapt", "base")
    done = run_cli("adapt", "base", "--cfg", "adapt=local")  # the local sample alone needs none
    assert done.code == 0, done.err


def test_a_blueprint_reference_not_in_the_store_is_refused(work: Path) -> None:
    refused(work, "adapt.blueprint", "adapt", "base", "adapt.blueprint=nobody:v2")


def test_adapt_keys_without_a_base_are_refused_by_submit(work: Path) -> None:
    out = run_cli("submit", "adapt.a=0.3")
    assert_one_line(out, "adapt.a")
