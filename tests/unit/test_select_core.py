"""The pure core of `cpr select` (orchestrator/select): windows, f_φ and its Spearman report, the length
correction, the kept fraction, the manifest and the cross-influence map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.errors import InputError
from orchestrator.select import SelectionManifest, choose, cross_influence, cut_windows, fit_predictor, load_manifest
from orchestrator.select.manifest import check_corpus
from orchestrator.select.scores import corrected, length_bias
from orchestrator.select.windows import doc_bounds, kept_tokens
from tests.conftest import made_manifest

EOS = 0


def corpus(lengths: list[int], seed: int = 0) -> np.ndarray:
    """Documents of the given token counts (EOS included), ids 1..99."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.append(rng.integers(1, 100, n - 1), EOS) for n in lengths]).astype(np.uint16)


def test_windows_never_cross_a_document_and_cover_it() -> None:
    toks = corpus([4, 9, 2, 20])
    w = cut_windows(toks, EOS, seq_len=3)
    starts, ends = doc_bounds(toks, EOS)
    for s, n, d in zip(w.start, w.length, w.doc, strict=True):
        assert starts[d] <= s and s + n <= ends[d]
        assert 2 <= n <= 4
    # every token of every document is in exactly one window (no window is shorter than 2 here but a 1-token tail)
    covered = np.zeros(toks.size, dtype=int)
    for s, n in zip(w.start, w.length, strict=True):
        covered[s : s + n] += 1
    assert covered.max() == 1
    assert covered.sum() == toks.size - 1  # the 9-token document's last window would be 1 token (9 = 4 + 4 + 1)


def test_min_tokens_drops_short_tails_and_a_document_without_eos_ends_the_array() -> None:
    toks = np.append(corpus([10, 3]), [5, 6, 7]).astype(np.uint16)
    w = cut_windows(toks, EOS, seq_len=4, min_tokens=3)
    assert all(n >= 3 for n in w.length)
    assert w.doc.max() == 2  # the trailing document without EOS is a document


def test_kept_tokens_separates_windows_that_were_not_adjacent() -> None:
    toks = corpus([9, 9])
    w = cut_windows(toks, EOS, seq_len=3)  # doc 0 → [0,4) [4,8), doc 1 → [9,13) [13,17); 1-token tails dropped
    keep = w.take(np.array([0, 1, 3]))
    stream = kept_tokens(toks, keep, EOS)
    np.testing.assert_array_equal(stream[:8], toks[:8])  # adjacent windows run on
    assert stream[8] == EOS and stream.size == 8 + 1 + 4  # a separator before the non-adjacent one


def test_predictor_ranks_held_out_windows_it_can_explain_and_says_so() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))
    log_j = x @ np.array([1.0, -0.5, 0.2, 0.0, 0.0]) + 0.1 * rng.normal(size=300)
    _, good = fit_predictor(x, log_j, holdout=0.25, seed=0, feature_names="x")
    assert good.spearman > 0.9 and good.n_holdout == 75 and good.n_fit == 225
    _, noise = fit_predictor(x, rng.normal(size=300), holdout=0.25, seed=0, feature_names="x")
    assert abs(noise.spearman) < 0.3


def test_length_correction_removes_a_length_trend_from_the_ranking() -> None:
    rng = np.random.default_rng(1)
    length = rng.integers(16, 130, 2000)
    quality = rng.normal(size=2000)
    log_score = -0.8 * np.log(length) + 0.3 * quality  # short windows score high: the raw gradient norm's bias
    bias = length_bias(log_score, length)
    assert bias.slope == pytest.approx(-0.8, abs=0.05)
    assert bias.rho_before < -0.7 and abs(bias.rho_after) < 0.05
    kept_raw = choose(log_score, 2000, 0.3, 0)
    kept_fixed = choose(corrected(log_score, length, bias), 2000, 0.3, 0)
    assert length[kept_raw].mean() < length.mean() - 20  # raw: the shortest windows
    assert abs(length[kept_fixed].mean() - length.mean()) < 5
    assert quality[kept_fixed].mean() > quality[kept_raw].mean()


def test_choose_keeps_the_top_fraction_or_a_seeded_draw() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    assert choose(s, 5, 0.4, 0).tolist() == [1, 3]
    assert choose(s, 5, 1.0, 0).tolist() == [0, 1, 2, 3, 4]
    assert choose(s, 5, 0.01, 0).tolist() == [1]  # at least one
    assert choose(None, 100, 0.3, 7).tolist() == choose(None, 100, 0.3, 7).tolist()
    assert len(choose(None, 100, 0.3, 7)) == 30
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            choose(s, 5, bad, 0)
    assert choose(s, 5, 0.4, 0, skip_top=0.2).tolist() == [2, 3]  # 1 (0.9) passed over; 3 (0.9), 2 (0.5) kept
    assert choose(s, 5, 0.4, 0, skip_top=0.6).tolist() == [0, 4]
    with pytest.raises(ValueError):
        choose(s, 5, 0.5, 0, skip_top=0.6)


def test_cross_influence_keeps_the_energy_of_a_low_rank_map() -> None:
    rng = np.random.default_rng(2)
    groups = ["embed", "attn.0", "ffn.0", "head"]
    blocks = ["a", "b", "c", "empty"]
    g = np.array([1.0, 2.0, 3.0, 0.5])
    scale = {"a": 1.0, "b": 2.0, "c": 0.5}
    labels = rng.choice(["a", "b", "c"], size=200)
    norms = np.stack([g * scale[b] * (1 + 0.01 * rng.normal()) for b in labels])
    ci = cross_influence(norms, labels.tolist(), groups, blocks, rank=2, block_kind="folder")
    assert ci.blocks == ("a", "b", "c") and sum(ci.examples) == 200  # a block without examples is left out
    assert ci.energy > 0.999 and ci.rank == 2
    assert list(ci.singular_values) == sorted(ci.singular_values, reverse=True)
    t = ci.approx()
    assert t[3, 1] == pytest.approx(0.5 * 2.0, rel=0.02)  # head × b
    w = ci.group_weights({"b": 1.0})
    assert max(w, key=w.get) == "ffn.0"
    assert ci.from_dict(json.loads(json.dumps(ci.to_dict()))) == ci


def _manifest(toks: np.ndarray, fp: str = "abc") -> SelectionManifest:
    w = cut_windows(toks, EOS, seq_len=3)
    kept = np.zeros(len(w), dtype=bool)
    kept[::2] = True
    return made_manifest(
        w,
        {"fingerprint": fp, "source": "text_dir", "n_train_tokens": int(toks.size)},
        kept,
        seq_len=3,
        scores=np.arange(len(w), dtype=float),
        base={"folder": "/x", "job_id": None, "step": None},
        score="predicted",
        length_correction=True,
        loss=np.linspace(1, 2, len(w)),
        predicted=-np.log(w.length.astype(float)),
    )


def test_a_manifest_round_trips_and_its_id_is_its_content(tmp_path) -> None:
    toks = corpus([9, 9, 5])
    m = _manifest(toks)
    path = m.write(tmp_path / "m.json")
    back = load_manifest(path)
    assert back.id == m.id
    np.testing.assert_array_equal(back.kept, m.kept)
    np.testing.assert_array_equal(back.windows.start, m.windows.start)
    assert back.summary()["kept"] == int(m.kept.sum())
    assert _manifest(toks, fp="other").id != m.id
    check_corpus(back, path, "abc", int(toks.size))
    with pytest.raises(InputError) as err:
        check_corpus(back, path, "zzz", int(toks.size))
    assert err.value.field == "data.selection" and "another corpus or tokenizer" in err.value.problem


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.update(format="x"), "not a cpr-selection manifest"),
        (lambda d: d.update(format_version=9), "format_version"),
        (lambda d: d["windows"]["kept"].append(1), "differ in length"),
        (lambda d: d["windows"]["start"].__setitem__(0, 10**6), "outside the corpus"),
        (lambda d: d["windows"].update(kept=[0] * len(d["windows"]["kept"])), "keeps no window"),
        (lambda d: d.pop("corpus"), "malformed"),
    ],
)
def test_a_bad_manifest_is_one_line_naming_data_selection(tmp_path, edit, problem) -> None:
    d = _manifest(corpus([9, 9, 5])).to_dict()
    edit(d)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(d))
    with pytest.raises(InputError) as err:
        load_manifest(path)
    assert err.value.field == "data.selection" and problem in err.value.problem
    with pytest.raises(InputError, match="does not exist"):
        load_manifest(tmp_path / "none.json")


def test_a_rescored_manifest_is_the_selection_of_another_score_from_the_same_pass() -> None:
    m = _manifest(corpus([30, 7, 40, 3, 25]))
    by_loss = m.rescored("loss", length_correction=False, fraction=0.5)
    assert by_loss.kept.sum() == np.ceil(0.5 * len(m.windows))
    assert by_loss.loss[by_loss.kept].min() >= by_loss.loss[~by_loss.kept].max()
    raw = m.rescored("predicted", length_correction=False, fraction=0.3)
    assert raw.windows.length[raw.kept].max() <= raw.windows.length[~raw.kept].min()  # the shortest (the bias)
    fixed = m.rescored("predicted", length_correction=True, fraction=0.3)
    assert fixed.length_bias is not None and fixed.length_bias["slope"] == pytest.approx(-1.0)
    drawn = m.rescored("random", length_correction=False, fraction=0.5)
    assert drawn.id == m.rescored("random", length_correction=False, fraction=0.5).id != by_loss.id
