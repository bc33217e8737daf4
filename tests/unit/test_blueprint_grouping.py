"""group_parameters: Hugging Face Llama and GPT-2 parameter names to blueprint ids, prefixes and counts."""

from __future__ import annotations

import pytest

from orchestrator.blueprints import ParamGroup, coarse_id, group_of, group_parameters

H, F, V, P = 64, 172, 1000, 128  # hidden, ffn, vocab, positions of a tiny model


def llama_names(prefix: str = "") -> list[tuple[str, int]]:
    names = [(f"{prefix}model.embed_tokens.weight", V * H)]
    for i in range(2):
        b = f"{prefix}model.layers.{i}."
        names += [
            (b + "self_attn.q_proj.weight", H * H),
            (b + "self_attn.k_proj.weight", H * H // 4),
            (b + "self_attn.v_proj.weight", H * H // 4),
            (b + "self_attn.o_proj.weight", H * H),
            (b + "mlp.gate_proj.weight", H * F),
            (b + "mlp.up_proj.weight", H * F),
            (b + "mlp.down_proj.weight", F * H),
            (b + "input_layernorm.weight", H),
            (b + "post_attention_layernorm.weight", H),
        ]
    names += [(f"{prefix}model.norm.weight", H), (f"{prefix}lm_head.weight", V * H)]
    return names


def gpt2_names() -> list[tuple[str, int]]:
    names = [("transformer.wte.weight", V * H), ("transformer.wpe.weight", P * H)]
    for i in range(2):
        b = f"transformer.h.{i}."
        names += [
            (b + "ln_1.weight", H),
            (b + "ln_1.bias", H),
            (b + "attn.c_attn.weight", H * 3 * H),
            (b + "attn.c_attn.bias", 3 * H),
            (b + "attn.c_proj.weight", H * H),
            (b + "attn.c_proj.bias", H),
            (b + "ln_2.weight", H),
            (b + "ln_2.bias", H),
            (b + "mlp.c_fc.weight", H * 4 * H),
            (b + "mlp.c_fc.bias", 4 * H),
            (b + "mlp.c_proj.weight", 4 * H * H),
            (b + "mlp.c_proj.bias", H),
        ]
    names += [("transformer.ln_f.weight", H), ("transformer.ln_f.bias", H)]
    return names


def test_llama_ids_prefixes_and_counts():
    groups = group_parameters(llama_names())
    attn = H * H * 2 + 2 * (H * H // 4)
    assert groups == {
        "embed": ParamGroup(id="embed", prefixes=("model.embed_tokens.",), n_params=V * H),
        "attn.0": ParamGroup(id="attn.0", prefixes=("model.layers.0.self_attn.",), n_params=attn),
        "ffn.0": ParamGroup(id="ffn.0", prefixes=("model.layers.0.mlp.",), n_params=3 * H * F),
        "norm.0": ParamGroup(
            id="norm.0",
            prefixes=("model.layers.0.input_layernorm.", "model.layers.0.post_attention_layernorm."),
            n_params=2 * H,
        ),
        "attn.1": ParamGroup(id="attn.1", prefixes=("model.layers.1.self_attn.",), n_params=attn),
        "ffn.1": ParamGroup(id="ffn.1", prefixes=("model.layers.1.mlp.",), n_params=3 * H * F),
        "norm.1": ParamGroup(
            id="norm.1",
            prefixes=("model.layers.1.input_layernorm.", "model.layers.1.post_attention_layernorm."),
            n_params=2 * H,
        ),
        "norm.final": ParamGroup(id="norm.final", prefixes=("model.norm.",), n_params=H),
        "head": ParamGroup(id="head", prefixes=("lm_head.",), n_params=V * H),
    }
    assert list(groups) == ["embed", "attn.0", "ffn.0", "norm.0", "attn.1", "ffn.1", "norm.1", "norm.final", "head"]
    assert sum(g.n_params for g in groups.values()) == sum(n for _, n in llama_names())


def test_gpt2_ids_prefixes_and_counts():
    groups = group_parameters(gpt2_names())
    assert list(groups) == ["embed", "norm.0", "attn.0", "ffn.0", "norm.1", "attn.1", "ffn.1", "norm.final"]
    assert groups["embed"] == ParamGroup(
        id="embed", prefixes=("transformer.wpe.", "transformer.wte."), n_params=V * H + P * H
    )
    assert groups["attn.1"] == ParamGroup(
        id="attn.1", prefixes=("transformer.h.1.attn.",), n_params=3 * H * H + 3 * H + H * H + H
    )
    assert groups["ffn.0"] == ParamGroup(
        id="ffn.0", prefixes=("transformer.h.0.mlp.",), n_params=4 * H * H + 4 * H + 4 * H * H + H
    )
    assert groups["norm.0"] == ParamGroup(
        id="norm.0", prefixes=("transformer.h.0.ln_1.", "transformer.h.0.ln_2."), n_params=4 * H
    )
    assert groups["norm.final"] == ParamGroup(id="norm.final", prefixes=("transformer.ln_f.",), n_params=2 * H)
    assert "other" not in groups and "head" not in groups  # GPT-2 ties lm_head to wte


@pytest.mark.parametrize("wrapper", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefix_is_matched_through_and_kept(wrapper):
    plain = group_parameters(llama_names())
    wrapped = group_parameters(llama_names(wrapper))
    assert list(wrapped) == list(plain)
    for gid, group in wrapped.items():
        assert group.n_params == plain[gid].n_params
        assert group.prefixes == tuple(wrapper + p for p in plain[gid].prefixes)


def test_unmatched_parameters_go_to_other_with_their_module_paths():
    names = [
        *llama_names(),
        ("model.layers.0.adapter.down.weight", 10),
        ("model.layers.0.adapter.down.bias", 2),
        ("model.rotary_scale", 1),
        ("logit_scale", 1),
    ]
    groups = group_parameters(names)
    assert groups["other"] == ParamGroup(
        id="other", prefixes=("logit_scale", "model.layers.0.adapter.down.", "model.rotary_scale"), n_params=14
    )
    # Longest prefix wins: the adapter's weight is "other", the attention weight stays attn.0.
    assert group_of("model.layers.0.adapter.down.weight", groups) == "other"
    assert group_of("model.layers.0.self_attn.q_proj.weight", groups) == "attn.0"
    assert group_of("logit_scale", groups) == "other"
    assert group_of("model.rotary_scale", groups) == "other"
    # "model.rotary_scale" sits directly on "model.": recording "model." would cover every other id too.
    for name, _ in names:
        covering = [gid for gid, g in groups.items() for p in g.prefixes if name == p or name.startswith(p)]
        assert len(covering) == 1, (name, covering)


def test_wrapped_top_level_parameter_does_not_claim_the_whole_model():
    groups = group_parameters([*llama_names("module."), ("module.temperature", 1)])
    assert groups["other"].prefixes == ("module.temperature",)


def test_every_name_is_covered_by_exactly_its_group():
    for names in (llama_names(), gpt2_names(), llama_names("module.")):
        groups = group_parameters(names)
        for name, _ in names:
            covering = [gid for gid, g in groups.items() if any(name.startswith(p) for p in g.prefixes)]
            assert covering == [group_of(name, groups)]


def test_group_of_unknown_name():
    groups = group_parameters(llama_names())
    with pytest.raises(KeyError):
        group_of("encoder.block.0.weight", groups)
    # A prefix must match up to its dot: "model.norm." does not cover "model.normalizer.weight".
    with pytest.raises(KeyError):
        group_of("model.normalizer.weight", groups)


def test_bad_names_and_sizes():
    with pytest.raises(ValueError, match="twice"):
        group_parameters([("lm_head.weight", 1), ("lm_head.weight", 1)])
    with pytest.raises(ValueError, match="size"):
        group_parameters([("lm_head.weight", -1)])
    with pytest.raises(ValueError, match="non-empty"):
        group_parameters([("", 1)])


@pytest.mark.parametrize(
    ("fine", "coarse"),
    [
        ("attn.3", "layer.3"),
        ("ffn.12", "layer.12"),
        ("norm.0", "layer.0"),
        ("norm.final", "norm.final"),
        ("embed", "embed"),
        ("head", "head"),
        ("other", "other"),
        ("attn.x", "attn.x"),
    ],
)
def test_coarse_id(fine, coarse):
    assert coarse_id(fine) == coarse
