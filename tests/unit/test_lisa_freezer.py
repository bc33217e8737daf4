"""LISA applied to a model (orchestrator/worker/adapting.py::LisaFreezer): at each draw only the always-on ids and
the drawn blocks require grad, a block leaving the draw drops its gradient, and an optimizer step (torch's AdamW, as
the engine's under ZeRO 0) leaves every inactive parameter as it was. A tiny Llama built from config; no engine."""

from __future__ import annotations

import torch

from orchestrator.adapt import Budget, SelectionRequest, SubmoduleInput, select
from orchestrator.blueprints.grouping import group_of, group_parameters
from orchestrator.config.schema import ModelConfig
from orchestrator.core.resource_model import resource_model
from orchestrator.models import build_model
from orchestrator.worker.adapting import LisaFreezer


def test_each_draw_trains_its_blocks_only_and_inactive_ones_do_not_move() -> None:
    model = build_model(ModelConfig(num_layers=4), 300, 16, 0)
    groups = group_parameters((n, p.numel()) for n, p in model.named_parameters())
    subs = tuple(
        SubmoduleInput(id=g, n_params=x.n_params, blueprint_norm=1.0, local_norm=1.0) for g, x in groups.items()
    )
    rm = resource_model(n_params=sum(s.n_params for s in subs), optimizer="adamw", precision="fp32", zero_stage=0,
                        dp_world_size=1)  # fmt: skip
    sel = select("lisa", SelectionRequest(submodules=subs, resource=rm, budget=Budget(max_fraction=0.8),
                                          lisa_interval=2, seed=3))  # fmt: skip
    assert sel.schedule is not None and sel.schedule.n_active < len(sel.schedule.blocks)
    lisa = LisaFreezer(model, sel.schedule, groups)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randint(0, 300, (2, 16))
    seen: set[frozenset[str]] = set()
    for step in range(12):
        changed = lisa.at(step)
        assert changed == (step == 0 or sel.schedule.active(step) != sel.schedule.active(step - 1))
        active = sel.schedule.active(step)
        seen.add(active)
        for name, p in model.named_parameters():
            assert p.requires_grad == (group_of(name, groups) in active), name
            if not p.requires_grad:
                assert p.grad is None, name  # a zero gradient would still move it through Adam's moments
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model(input_ids=x).logits.float().mean().backward()
        opt.step()
        for name, p in model.named_parameters():
            moved = not torch.equal(before[name], p.detach())
            assert moved == p.requires_grad or (p.requires_grad and p.grad is not None and not p.grad.any()), name
        opt.zero_grad(set_to_none=False)  # kept, as some engines keep them: the freezer drops the inactive ones
    assert len(seen) > 1  # the draw changed
