"""`cpr blueprint validate|show|diff|aggregate`: output, --json, CSV, and one line + exit 2 for every bad file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from orchestrator.blueprints import (
    LocalBlueprintStore,
    add_gaussian_noise,
    as_schema_1_0,
    dp_release,
    dumps_blueprint,
    load_blueprint,
)
from tests.conftest import assert_one_line_error
from tests.unit.test_blueprint_model import BAD_FILES, full_doc
from tests.unit.test_blueprint_privacy import probed

PAPER_FILE = str(Path(__file__).resolve().parents[1] / "assets" / "paper_appendix_a.json")


@pytest.fixture
def full_file(tmp_path) -> str:
    path = tmp_path / "full.json"
    path.write_text(json.dumps(full_doc()))
    return str(path)


def test_validate_prints_one_ok_line_per_file(cli, full_file):
    r = cli("blueprint", "validate", PAPER_FILE, full_file)
    assert r.code == 0 and r.err == ""
    lines = r.out.splitlines()
    assert [line for line in lines if not line.startswith("  ")] == [
        f"OK {PAPER_FILE} (3 layers, schema paper-A.1)",
        f"OK {full_file} (3 layers, schema 1.0)",
    ]
    # The paper's own example: its γ does not follow from its α (the App. A erratum), and validate says so.
    assert lines[1:4] == [
        "  note: layers[0] (attn.0): gamma 0.6 is not 1 − α/(1+α) = 0.405 for alpha 1.47",
        "  note: layers[1] (ffn.0): gamma 0.53 is not 1 − α/(1+α) = 0.472 for alpha 1.12",
        "  note: layers[2] (attn.1): gamma 0.6 is not 1 − α/(1+α) = 0.400 for alpha 1.5",
    ]


def test_validate_warns_on_entries_whose_fit_supports_no_recommendation(cli, tmp_path):
    """A degenerate entry (an exponential sample: CSN finds only a short far tail) gets a warning line with the
    file's reason; --strict exits 1."""
    import numpy as np

    from orchestrator.blueprints import build_blueprint, dumps_blueprint
    from orchestrator.core.gradmass import MagnitudeHistogram
    from orchestrator.core.resource_model import resource_model

    rng = np.random.default_rng(0)
    hists = {
        "heavy": MagnitudeHistogram.of(rng.pareto(0.5, 20_000) + 1),
        "thin": MagnitudeHistogram.of(rng.exponential(1.0, 20_000)),
    }
    rm = resource_model(n_params=1000, activation_bytes=1000.0)
    bp = build_blueprint(
        model_id="m",
        training_checkpoint=0.5,
        samples={k: [1.0, 2.0] for k in hists},
        histograms=hists,
        resource_model=rm,
        created_at="2025-01-31T12:00:00Z",
    )
    path = tmp_path / "bp.json"
    path.write_text(dumps_blueprint(bp))
    r = cli("blueprint", "validate", str(path))
    warnings = [line for line in r.out.splitlines() if line.startswith("  warning:")]
    assert r.code == 0 and len(warnings) == 1
    assert warnings[0].startswith("  warning: layers[1] (thin): no recommendation: tail too small: ")
    assert cli("blueprint", "validate", "--strict", str(path)).code == 1
    assert cli("blueprint", "validate", "--strict", PAPER_FILE).code == 0  # notes are not warnings


def test_an_old_file_warns_on_a_k_star_resting_on_alpha_below_1(cli, tmp_path):
    doc = full_doc()
    doc["layers"][0].update(alpha=0.4, k_star=0.5)
    doc["layers"][0].pop("recommendation", None)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    r = cli("blueprint", "validate", str(path))
    assert r.code == 0 and "  warning: layers[0] (" in r.out and "rests on alpha 0.4 <= 1" in r.out


def test_validate_a_stored_file(cli, tmp_path):
    _, path = LocalBlueprintStore(tmp_path).publish(as_schema_1_0(load_blueprint(PAPER_FILE)))
    r = cli("blueprint", "validate", str(path))
    assert r.code == 0 and r.out.splitlines()[0] == f"OK {path} (3 layers, schema 1.2)"


def test_show_prints_the_privacy_guarantee(cli, tmp_path):
    """A dp release shows its ε, δ, accountant, adjacency and withheld fields; a noise release says it has none."""
    built, samples = probed()
    dp = tmp_path / "dp.json"
    dp.write_text(dumps_blueprint(dp_release(built, samples, clip=1.0, noise_multiplier=1.0, delta=1e-5)))
    r = cli("blueprint", "show", str(dp))
    epsilon = load_blueprint(dp).privacy.epsilon
    assert r.code == 0 and f"ε {epsilon:.4g}, δ 1e-05 (dp-accounting " in r.out and "3 queries" in r.out
    assert "adjacency: replace one validation batch" in r.out and "withheld: ci_low, ci_high" in r.out
    noisy = tmp_path / "noise.json"
    noisy.write_text(dumps_blueprint(add_gaussian_noise(built, clip=1.0, noise_multiplier=1.0)))
    r = cli("blueprint", "show", str(noisy))
    assert r.code == 0 and "no stated ε, δ" in r.out and "withheld" not in r.out


def test_validate_stops_at_the_first_bad_file(cli, tmp_path, full_file):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_id": "m", "training_checkpoint": 0.5, "layers": [{"id": "a", "gradient_norm": -1.0}]}')
    r = cli("blueprint", "validate", PAPER_FILE, str(bad), full_file)
    assert_one_line_error(r, f"{bad}: layers[0].gradient_norm: must be >= 0")
    assert r.out.splitlines()[0] == f"OK {PAPER_FILE} (3 layers, schema paper-A.1)"
    assert not any(line.startswith("OK") for line in r.out.splitlines()[1:])


def test_show_table_and_json(cli, full_file):
    r = cli("blueprint", "show", PAPER_FILE)
    assert r.code == 0
    assert "foundation-7b" in r.out and "paper-A.1" in r.out
    for token in ("attn.0", "ffn.0", "attn.1", "0.052", "1.47", "bio=0.79"):
        assert token in r.out
    r = cli("blueprint", "show", PAPER_FILE, "--json")
    assert r.code == 0 and json.loads(r.out) == json.loads(Path(PAPER_FILE).read_text())
    r = cli("blueprint", "show", full_file)
    assert r.code == 0 and "tiny-llama" in r.out and "v3" in r.out and "privacy: gaussian" in r.out
    assert "[0.04, 0.06]" in r.out and "4,096" in r.out
    r = cli("blueprint", "show", full_file, "--json")
    assert json.loads(r.out) == full_doc()


def test_diff_table_and_json(cli, tmp_path):
    doc = json.loads(Path(PAPER_FILE).read_text())
    for layer, norm in zip(doc["layers"], (0.01, 0.03, 0.02), strict=True):
        layer["gradient_norm"] = norm  # attn.0 < attn.1 < ffn.0: the paper's order reversed
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    r = cli("blueprint", "diff", PAPER_FILE, str(other), "--json")
    assert r.code == 0
    data = json.loads(r.out)
    assert data["spearman_rho"] == pytest.approx(-1.0) and data["n_common"] == 3
    assert {c["id"]: c["rank_change"] for c in data["common"]} == {"attn.0": 2, "ffn.0": -2, "attn.1": 0}
    r = cli("blueprint", "diff", PAPER_FILE, PAPER_FILE)
    assert r.code == 0 and "Spearman ρ of the ranks: 1.0000" in r.out and "attn.1" in r.out


def test_aggregate_table_and_csv(cli, tmp_path, full_file):
    r = cli("blueprint", "aggregate", PAPER_FILE, full_file, PAPER_FILE)
    assert r.code == 0
    assert "6 rows from 3 file(s); 3 key(s) overwritten by later files" in r.out
    out = tmp_path / "t.csv"
    r = cli("blueprint", "aggregate", PAPER_FILE, full_file, "--csv", str(out))
    assert r.code == 0 and "0 key(s) overwritten" in r.out
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["layer_id"] for row in rows] == ["attn.0", "ffn.0", "attn.1", "attn.0", "ffn.0", "head"]
    assert {"model_id", "training_checkpoint", "gradient_norm", "k_star", "source", "domain:bio"} <= set(rows[0])
    r = cli("blueprint", "aggregate", PAPER_FILE, "--csv", "-")
    assert r.code == 0 and r.out.startswith("model_id,training_checkpoint,layer_id,")


def test_help_texts(cli):
    for argv in (
        ["blueprint", "--help"],
        *[["blueprint", v, "--help"] for v in ("validate", "show", "diff", "aggregate")],
    ):
        r = cli(*argv)
        assert r.code == 0 and "usage: cpr blueprint" in r.out


@pytest.mark.parametrize(("text", "field", "problem"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
@pytest.mark.parametrize("verb", ["validate", "show", "diff", "aggregate"])
def test_every_bad_file_is_one_line_and_exit_2(cli, tmp_path, verb, text, field, problem):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    args = {
        "validate": [str(bad)],
        "show": [str(bad)],
        "diff": [PAPER_FILE, str(bad)],
        "aggregate": [PAPER_FILE, str(bad)],
    }
    r = cli("blueprint", verb, *args[verb])
    assert_one_line_error(r, field.replace("bad.json", str(bad)))
    assert problem in r.err


def test_oversized_file_is_one_line(cli, tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(17 * 1024 * 1024)
    assert_one_line_error(cli("blueprint", "validate", str(big)), "byte cap")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["blueprint", "validate", "/no/such/file.json"], "no such file"),
        (["blueprint", "show", "."], "is a directory"),
        (["blueprint"], "required"),
        (["blueprint", "validate"], "FILE"),
        (["blueprint", "frobnicate"], "invalid choice"),
        (["blueprint", "diff", PAPER_FILE], "B"),
    ],
)
def test_usage_errors_are_one_line(cli, argv, needle):
    assert_one_line_error(cli(*argv), needle)


def test_csv_to_an_unwritable_place_is_one_line(cli, tmp_path):
    assert_one_line_error(
        cli("blueprint", "aggregate", PAPER_FILE, "--csv", str(tmp_path / "no" / "dir" / "t.csv")), "--csv"
    )
