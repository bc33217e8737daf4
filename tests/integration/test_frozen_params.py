"""Frozen parameters get no optimizer state (Algorithm 1 step (4), docs/adapt.md): real DeepSpeed engines, 2 CPU ranks
on Ray with gloo, ZeRO 0 and 2, trained 2 steps with half the submodules frozen by `build_engine(trainable=...)`:

- frozen parameters are unchanged bit for bit and hold no gradient; every trainable one changed;
- the optimizer's exp_avg / exp_avg_sq hold exactly the trainable parameters (under ZeRO 2: the ranks' fp32
  partitions, less DeepSpeed's alignment padding);
- the optimizer-state bytes (`orchestrator.worker.memory.training_memory`) are the all-trainable engine's times
  the trainable share.
"""

from __future__ import annotations

from typing import Any

import pytest
import ray

from orchestrator.config.compose import compose_job, job_from_dict, job_to_dict
from orchestrator.worker.trainer import free_port, set_rank_env
from tests.integration.cluster import two_ranks

VOCAB, SEQ, BATCH = 1024, 32, 4


def _batch(seed: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g)
    return x[:, :-1], x[:, 1:]


class _Rank:
    """One rank: builds the engine (all trainable, or only `trainable_ids`), trains 2 steps, reports."""

    def __init__(self, rank: int, world: int, job: dict[str, Any]) -> None:
        self.rank, self.world, self.job = rank, world, job_from_dict(job)

    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port()

    def run(self, addr: str, port: int, trainable_ids: list[str] | None) -> dict[str, Any]:
        set_rank_env(addr, port, self.rank, self.world, self.rank, gpus=False)
        import torch

        from orchestrator.adapt import trainable_names
        from orchestrator.blueprints.grouping import group_parameters
        from orchestrator.models import build_model
        from orchestrator.worker.distributed import init_distributed
        from orchestrator.worker.engine import build_engine, token_loss
        from orchestrator.worker.memory import training_memory

        torch.set_num_threads(1)
        init_distributed("gloo")
        model = build_model(self.job.model, VOCAB, SEQ, 0)
        named = [(n, p.numel()) for n, p in model.named_parameters()]
        groups = group_parameters(named)
        names = None if trainable_ids is None else trainable_names([n for n, _ in named], groups, trainable_ids)
        engine = build_engine(self.job, model, trainable=names)
        before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
        for step in range(2):
            x, y = _batch(100 * self.rank + step)
            engine.backward(token_loss(engine, x, y))
            engine.step()
        after = dict(engine.module.named_parameters())
        memory = training_memory(engine)
        return {
            "groups": {gid: g.n_params for gid, g in groups.items()},
            "total": sum(n for _, n in named),
            "trainable": sorted(names) if names is not None else sorted(before),
            "unchanged": sorted(n for n, p in after.items() if torch.equal(before[n], p.detach())),
            "with_grad": sorted(n for n, p in after.items() if p.requires_grad),
            "trainable_numel": sum(p.numel() for p in after.values() if p.requires_grad),
            "state_numel": memory["optimizer_state_numel"],
            "state_bytes": memory["optimizer_state_bytes"],
        }


def _two_ranks(job: dict[str, Any], trainable_ids: list[str] | None) -> list[dict[str, Any]]:
    return two_ranks(_Rank, job, trainable_ids)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local", logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.parametrize("stage", [0, 2])
def test_frozen_submodules_keep_their_weights_and_get_no_optimizer_state(ray_local: None, stage: int) -> None:
    job = job_to_dict(compose_job(["+experiment=debug", f"deepspeed=zero{stage}"]))
    full = _two_ranks(job, None)
    ids = list(full[0]["groups"])
    keep = ids[1::2]  # every other submodule: attn.0, norm.0, ffn.1, ... (half of them)
    part = _two_ranks(job, keep)

    total = full[0]["total"]
    trainable = sum(full[0]["groups"][gid] for gid in keep)
    assert 0 < trainable < total
    for r in range(2):
        p = part[r]
        frozen = sorted(set(full[r]["trainable"]) - set(p["trainable"]))
        assert frozen, "some parameters are frozen"
        assert set(frozen) <= set(p["unchanged"]), f"rank {r}: a frozen parameter moved"
        assert not set(p["trainable"]) & set(p["unchanged"]), f"rank {r}: a trainable parameter did not move"
        assert p["with_grad"] == p["trainable"]
        assert p["trainable_numel"] == trainable
        assert full[r]["trainable_numel"] == total

    # Adam's two moments over exactly the trainable parameters: each rank's all under ZeRO 0, a partition under 2.
    for runs, n in ((full, total), (part, trainable)):
        per_rank = [r["state_numel"] for r in runs]
        if stage == 0:
            assert per_rank == [2 * n, 2 * n]  # every rank keeps both moments of every trainable parameter
        else:
            assert sum(per_rank) == 2 * n  # the ranks' partitions together
        assert [r["state_bytes"] for r in runs] == [4 * k for k in per_rank]  # fp32 moments, padding left out
    full_bytes = sum(r["state_bytes"] for r in full)
    part_bytes = sum(r["state_bytes"] for r in part)
    # Smaller by exactly the frozen share (training_memory leaves DeepSpeed's alignment padding out).
    assert part_bytes * total == full_bytes * trainable
    print(
        f"\nZeRO {stage}: optimizer state {full_bytes} B all trainable, {part_bytes} B with "
        f"{trainable}/{total} parameters trainable ({part_bytes / full_bytes:.4f} vs {trainable / total:.4f})"
    )
