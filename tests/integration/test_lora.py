"""LoRA realised on the engine (orchestrator/worker/lora.py, docs/adapt.md): the `lora` strategy's descriptor, sized
over `linear_shapes(model)` for a 20 % parameter budget, applied with peft and trained 2 steps on 2 CPU ranks (Ray,
gloo, ZeRO 2) with `build_engine(trainable=lora_trainable)`:

- the base model's weights are unchanged bit for bit; every LoRA matrix changed (B starts at zero);
- `training_memory`: the adapters are the only trainable parameters, Adam's two moments and the gradients cover
  exactly them (the ranks' partitions together), and the resource model's cost_per_param predicts those bytes;
- the loss is finite and a DeepSpeed checkpoint saves, with the adapters in its model states.

tests/unit/test_lora_layers.py covers what needs no engine: linear_shapes on Llama and GPT-2, apply_lora's checks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import ray

from orchestrator.config.compose import compose_job, job_from_dict, job_to_dict
from orchestrator.models import build_model
from orchestrator.worker.lora import apply_lora, linear_shapes, lora_trainable
from orchestrator.worker.trainer import free_port, set_rank_env
from tests.integration.cluster import two_ranks

VOCAB, SEQ, BATCH = 1024, 32, 4
FRACTION = 0.2


# --------------------------------------------------------------------------------------------- 2 ranks


class _Rank:
    """One rank: selects the LoRA descriptor, applies it, trains 2 steps under ZeRO 2, measures, checkpoints."""

    def __init__(self, rank: int, world: int, job: dict[str, Any]) -> None:
        self.rank, self.world, self.job = rank, world, job_from_dict(job)

    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port()

    def run(self, addr: str, port: int, checkpoint_dir: str) -> dict[str, Any]:
        set_rank_env(addr, port, self.rank, self.world, self.rank, gpus=False)
        import torch

        from orchestrator.adapt import Budget, SelectionRequest, SubmoduleInput, select
        from orchestrator.blueprints.grouping import group_parameters
        from orchestrator.core.resource_model import resource_model
        from orchestrator.worker.distributed import init_distributed
        from orchestrator.worker.engine import build_engine, token_loss
        from orchestrator.worker.memory import training_memory

        torch.set_num_threads(1)
        init_distributed("gloo")
        job = self.job
        model = build_model(job.model, VOCAB, SEQ, 0)
        named = [(n, p.numel()) for n, p in model.named_parameters()]
        total = sum(n for _, n in named)
        subs = tuple(
            SubmoduleInput(id=gid, n_params=g.n_params, blueprint_norm=1.0, local_norm=1.0)
            for gid, g in group_parameters(named).items()
        )
        resource = resource_model(
            n_params=total,
            optimizer=job.deepspeed.optimizer.value,
            precision=job.deepspeed.precision.value,
            zero_stage=job.deepspeed.zero_stage,
            dp_world_size=self.world,
        )
        request = SelectionRequest(
            submodules=subs, resource=resource, budget=Budget(max_fraction=FRACTION), linear_shapes=linear_shapes(model)
        )
        selection = select("lora", request)
        lora = selection.lora
        assert lora is not None
        engine = build_engine(job, apply_lora(model, lora), trainable=lora_trainable)
        before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
        losses, memory = [], {}
        for step in range(2):
            g = torch.Generator().manual_seed(100 * self.rank + step)
            x = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g)
            loss = token_loss(engine, x[:, :-1], x[:, 1:])
            engine.backward(loss)
            memory = training_memory(engine)  # between backward and step: the gradients are still held
            engine.step()
            losses.append(float(loss.detach()))
        after = dict(engine.module.named_parameters())
        engine.save_checkpoint(checkpoint_dir, tag="lora")
        saved: list[str] = []
        if self.rank == 0:
            states = torch.load(Path(checkpoint_dir, "lora", "mp_rank_00_model_states.pt"), weights_only=False)
            saved = sorted(states["module"])
        return {
            "total": total,
            "rank": lora.rank,
            "params_per_rank": lora.params_per_rank,
            "descriptor_params": lora.trainable_params,
            "selection_params": selection.trainable_params,
            "cost_per_param": resource.cost_per_param,
            "targets": list(lora.targets),
            "base": sorted(n for n in before if not lora_trainable(n)),
            "lora": sorted(n for n in before if lora_trainable(n)),
            "b_zero_at_start": all(not before[n].any() for n in before if ".lora_B." in n),
            "unchanged": sorted(n for n, p in after.items() if torch.equal(before[n], p.detach())),
            "with_grad": sorted(n for n, p in after.items() if p.requires_grad),
            "losses": losses,
            "memory": memory,
            "saved": saved,
        }


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local", logging_level="ERROR")
    yield
    ray.shutdown()


def test_lora_trains_only_the_adapters_on_two_ranks(ray_local: None, tmp_path: Path) -> None:
    job = job_to_dict(compose_job(["+experiment=debug", "deepspeed=zero2"]))
    runs = two_ranks(_Rank, job, str(tmp_path))

    r0 = runs[0]
    total, rank, trainable = r0["total"], r0["rank"], r0["descriptor_params"]
    # The rank that fills 20 % of the parameters over the blocks' linear layers (Σ(d_in + d_out) per rank of r).
    assert rank == int(FRACTION * total // r0["params_per_rank"]) >= 1
    assert trainable == rank * r0["params_per_rank"] == r0["selection_params"] <= FRACTION * total
    for r, run in enumerate(runs):
        assert run["rank"] == rank and run["targets"] == r0["targets"], "every rank selects the same descriptor"
        assert run["b_zero_at_start"]
        assert set(run["base"]) <= set(run["unchanged"]), f"rank {r}: a base weight moved"
        assert not set(run["lora"]) & set(run["unchanged"]), f"rank {r}: a LoRA matrix did not move"
        assert len(run["lora"]) == 2 * len(run["targets"])
        assert run["with_grad"] == run["lora"]
        assert all(math.isfinite(v) for v in run["losses"])
        mem = run["memory"]
        assert mem["trainable_params"] == trainable
        assert mem["total_params"] == total + trainable  # the frozen base model and its adapters

    # Adam's two fp32 moments and the fp32 gradients over exactly the adapters: ZeRO 2 splits both over the ranks.
    state = sum(run["memory"]["optimizer_state_numel"] for run in runs)
    state_bytes = sum(run["memory"]["optimizer_state_bytes"] for run in runs)
    grads = sum(run["memory"]["gradient_numel"] for run in runs)
    grad_bytes = sum(run["memory"]["gradient_bytes"] for run in runs)
    assert state == 2 * trainable and state_bytes == 2 * 4 * trainable
    assert grads == trainable and grad_bytes == 4 * trainable
    # What the selection's resource model charges per trainable parameter and rank (grads + moments, ZeRO 2 over 2).
    assert state_bytes + grad_bytes == pytest.approx(2 * r0["cost_per_param"] * trainable)

    assert set(r0["lora"]) <= set(r0["saved"]), "the checkpoint's model states hold the adapters"
    assert (tmp_path / "lora" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    print(
        f"\nLoRA r={rank} on {len(r0['targets'])} layers: {trainable}/{total} parameters trainable "
        f"({trainable / total:.4f}); per rank optimizer state "
        f"{[run['memory']['optimizer_state_bytes'] for run in runs]} B, gradients "
        f"{[run['memory']['gradient_bytes'] for run in runs]} B (full fine-tuning: {8 * total} B of moments in all); "
        f"losses {[round(v, 4) for v in r0['losses']]}"
    )
