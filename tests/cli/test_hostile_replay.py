"""Bad curves for `cpr replay`: each is refused in one line naming the file, row and column, exit 2,
nothing written; random CSV text either replays cleanly or is refused that way, never with a warning or traceback.
"""

from __future__ import annotations

import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.replay import MAX_CURVE_BYTES, MAX_MAGNITUDE
from tests.cli.conftest import assert_one_line, refused, run_cli, tree

GOOD = "step,loss,tokens\n" + "".join(f"{10 * i},{5 - 0.1 * i},{1000 * i}\n" for i in range(1, 20))


def _good_with(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


BAD_CURVES: list[tuple[str, str | bytes, str]] = [
    ("no-known-columns", "x,y\n1,2\n", "column 'step': is missing"),
    ("no-step-column", "loss,tokens\n1,2\n", "column 'step'"),
    ("no-psi-or-loss", "step,tokens\n1,2\n", "column 'psi' or 'loss': is missing"),
    ("psi-and-loss", "step,loss,psi,tokens\n1,2,3,4\n", "both psi and loss"),
    ("no-resource-column", "step,loss\n1,2\n", "has no resource column"),
    ("unknown-column", "step,loss,tokens,watts\n1,2,3,4\n", "column 'watts'"),
    ("repeated-column", "step,loss,loss,tokens\n1,2,3,4\n", "column 'loss': appears twice"),
    ("text-cell", _good_with("4.9,", "abc,"), "line 2, column 'loss'"),
    ("nul-cell", "step,loss,tokens\n1,\x00,2\n", "line 2, column 'loss'"),
    ("nan-resource", _good_with(",2000\n", ",nan\n"), "line 3, column 'tokens'"),
    ("inf-resource", _good_with(",2000\n", ",inf\n"), "line 3, column 'tokens'"),
    ("overflowing-resource", _good_with(",2000\n", ",1e400\n"), "line 3, column 'tokens'"),
    ("huge-resource", _good_with(",2000\n", ",1e308\n"), "line 3, column 'tokens'"),
    ("huge-loss", _good_with("4.8,", "-1e300,"), "line 3, column 'loss'"),
    ("negative-resource", _good_with(",2000\n", ",-2000\n"), "line 3, column 'tokens'"),
    ("decreasing-resource", _good_with(",3000\n", ",1500\n"), "line 4, column 'tokens': Γ decreases"),
    ("fractional-step", _good_with("\n10,", "\n10.5,"), "line 2, column 'step'"),
    ("negative-step", _good_with("\n10,", "\n-10,"), "line 2, column 'step'"),
    ("nan-step", _good_with("\n10,", "\nnan,"), "line 2, column 'step'"),
    ("5000-digit-step", "step,loss,tokens\n" + "9" * 5000 + ",1,2\n", "line 2, column 'step'"),
    ("decreasing-step", _good_with("\n20,", "\n5,"), "line 3, column 'step'"),
    ("short-row", GOOD + "1,2\n", "line 21: has 2 cells"),
    ("unclosed-quote", 'step,loss,tokens\n"1,2,3\n', "line 2"),
    ("cell-over-the-csv-field-limit", "step,loss,tokens\n1," + "1" * 200_000 + ",3\n", "c.csv"),
    ("empty-file", "", "is empty"),
    ("blank-lines-only", "\n \n\n", "is empty"),
    ("header-only", "step,loss,tokens\n", "has a header but no rows"),
    ("fewer-rows-than-the-window", "step,loss,tokens\n1,2,3\n", "fewer than the window"),
    ("semicolons", GOOD.replace(",", ";"), "column 'step'"),
    ("binary-garbage", bytes(range(256)) * 16, "not a UTF-8 CSV file"),
    ("utf16", GOOD.encode("utf-16"), "not a UTF-8 CSV file"),
]


@pytest.mark.parametrize(
    ("data", "needle"),
    [c[1:] for c in BAD_CURVES],
    ids=[f"{i + 1:02d}-{c[0]}" for i, c in enumerate(BAD_CURVES)],
)
def test_bad_curve_is_refused_in_one_line(hostile, data, needle):
    path = hostile / "c.csv"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    out = refused(hostile, needle, "replay", "c.csv")
    assert out.err.startswith("cpr: error: c.csv")
    refused(hostile, needle, "replay", "c.csv", "--json", "--resource", "tokens", "--window", "2")


def test_there_are_bad_curves_of_every_kind():
    assert len(BAD_CURVES) >= 20 and len({c[0] for c in BAD_CURVES}) == len(BAD_CURVES)


def test_a_huge_file_is_refused_by_its_size(hostile):
    with open(hostile / "big.csv", "wb") as fh:
        fh.truncate(MAX_CURVE_BYTES + 1)  # sparse
    refused(hostile, f"over the {MAX_CURVE_BYTES} byte cap", "replay", "big.csv")


def test_a_directory_and_a_missing_file(hostile):
    (hostile / "d").mkdir()
    refused(hostile, "d: is a directory", "replay", "d")
    refused(hostile, "nope.csv: cannot read", "replay", "nope.csv")


def test_a_spreadsheets_byte_order_mark_is_not_an_error(hostile):
    (hostile / "c.csv").write_text("\ufeff" + GOOD, encoding="utf-8")
    out = run_cli("replay", "c.csv", "--resource", "tokens")
    assert out.code == 0 and out.err == "", out


def test_extreme_but_valid_values_replay_without_warnings(hostile):
    rows = "".join(f"{i},{5 - 1e-3 * i},{i * 1e-320}\n" for i in range(1, 30))  # subnormal Γ: slopes overflow
    (hostile / "c.csv").write_text("step,loss,tokens\n" + rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = run_cli("replay", "c.csv", "--eta-rel", "0.5", "--window", "3")
    assert out.code == 0 and out.err == "", out
    assert MAX_MAGNITUDE >= 1e25  # room for a frontier run's FLOPs


_CELL = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "1e-320", "abc", '"', '"1,2"', "\x00", "9" * 400]),
)
_HEADER = st.one_of(
    st.permutations(["step", "loss", "tokens", "energy_kwh"]).map(list),
    st.lists(st.sampled_from(["step", "loss", "psi", "tokens", "flops", "x", "", "step"]), min_size=1, max_size=5),
)


@st.composite
def random_csv(draw: st.DrawFn) -> str:
    """CSV-ish text: a plausible or broken header, then rows of numbers, NaN/inf, garbage and quoting."""
    header = draw(_HEADER)
    width = st.integers(max(1, len(header) - 1), len(header) + 1)
    rows = draw(st.lists(width.flatmap(lambda n: st.lists(_CELL, min_size=n, max_size=n)), max_size=12))
    lines = [",".join(header), *(",".join(row) for row in rows)]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=30)))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=random_csv())
def test_random_csv_text_replays_or_is_refused_in_one_line(hostile, text):
    (hostile / "r.csv").write_bytes(text.encode("utf-8", "surrogatepass"))
    before = tree(hostile)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numeric warning would reach the user's terminal
        out = run_cli("replay", "r.csv", "--window", "2")
    if out.code == 0:
        assert out.err == "" and "cpr replay r.csv" in out.out, out
    else:
        assert_one_line(out, "r.csv")
    assert tree(hostile) == before
    assert not os.path.exists(hostile / "cpr_runs")
