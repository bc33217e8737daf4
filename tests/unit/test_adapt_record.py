"""What an adapt job logs of its selection (orchestrator/adapt/record.py): metric names per submodule, the chosen
set as a tag, the summary's entry. Pure."""

from __future__ import annotations

from orchestrator.adapt import Budget, SelectionRequest, SubmoduleInput, select
from orchestrator.adapt.record import chosen_tag, measured_metrics, selection_metrics, summary_of
from orchestrator.core.resource_model import resource_model

SUBS = tuple(
    SubmoduleInput(id=i, n_params=n, blueprint_norm=b, local_norm=g, ci_low=b * 0.9, ci_high=b * 1.1)
    for i, n, b, g in [("embed", 400, 1.0, 1.2), ("attn.0", 100, 3.0, 2.5), ("ffn.0", 200, 2.0, 2.2),
                       ("head", 400, 4.0, 3.0)]
)  # fmt: skip


def _selection(strategy: str = "blueprint") -> dict:
    req = SelectionRequest(
        submodules=SUBS,
        resource=resource_model(n_params=1100, optimizer="adamw", precision="fp32", zero_stage=0, dp_world_size=1),
        budget=Budget(max_fraction=0.5),
    )
    return select(strategy, req).to_dict()


def test_every_submodules_figures_become_metrics_under_adapt() -> None:
    sel = _selection()
    m = selection_metrics(sel)
    for sub in SUBS:
        for figure in ("blueprint_norm", "local_norm", "blueprint_share", "local_share", "blended", "ci_width",
                       "ci_weight", "trained_fraction"):  # fmt: skip
            assert f"adapt/{figure}/{sub.id}" in m
    assert m["adapt/blueprint_norm/head"] == 4.0 and m["adapt/local_norm/attn.0"] == 2.5
    assert m["adapt/trainable_share"] == sel["trainable_params"] / 1100 <= 0.5
    assert m["adapt/drift"] == (1.0 if sel["drift"] else 0.0) and m["adapt/rho"] == sel["rho"]
    assert sum(m[f"adapt/trained_fraction/{s.id}"] > 0 for s in SUBS) == len(sel["chosen"])


def test_the_chosen_tag_and_the_summary_name_what_was_trained() -> None:
    sel = _selection()
    assert chosen_tag(sel).split(", ") == list(sel["chosen"])
    assert chosen_tag({"chosen": {"attn.0": 1.0, "ffn.0": 0.25}}) == "attn.0, ffn.0@0.25"
    lora = {"lora": {"rank": 4, "targets": ["m.layers.0.q_proj", "m.layers.0.v_proj", "m.layers.1.q_proj"]}}
    assert chosen_tag(lora) == "lora(r=4: 3 layers: q_proj, v_proj)"
    s = summary_of({"selection": sel, "base": "/b", "measured": {"optimizer_state_bytes": 8.0}})
    assert s["strategy"] == "blueprint" and s["chosen"] == sel["chosen"] and s["measured"]["optimizer_state_bytes"]


def test_measured_metrics_keep_finite_numbers_only() -> None:
    got = measured_metrics({"optimizer_state_bytes": 8, "gradient_bytes": None, "memory_saved_bytes": float("nan")})
    assert got == {"adapt/optimizer_state_bytes": 8.0}
