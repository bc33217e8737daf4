"""The gradient probe on real DeepSpeed engines (2 CPU ranks on Ray, gloo) under ZeRO 0, 2 and 3:

- its per-submodule norms and histograms equal a single-process plain-PyTorch reference on the same batches and
  weights (within 1e-4 relative; the correctness bar of the blueprint issue);
- training with a probe in the middle follows the same loss trajectory as training without it (same seed);
- only [batches × groups] and [groups × bins] numbers cross ranks: the bytes do not grow with the parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import ray

from orchestrator.blueprints.grouping import group_of, group_parameters
from orchestrator.config.compose import compose_job, job_from_dict, job_to_dict
from orchestrator.core.gradmass import HistogramSpec, MagnitudeHistogram
from orchestrator.core.probe_sizing import ProbeSizing
from orchestrator.worker.trainer import free_port, set_rank_env
from tests.integration.cluster import two_ranks

VOCAB, SEQ, BATCH = 1024, 32, 4
SPEC = HistogramSpec(lo=1e-12, hi=1e4, bins_per_decade=8)


def _batch(seed: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g)
    return x[:, :-1], x[:, 1:]


class _Rank:
    """One rank: trains 4 steps, evaluating and then probing (or not) after step 2; returns losses, the report
    and the weights at the probe."""

    def __init__(self, rank: int, world: int, job: dict[str, Any]) -> None:
        self.rank, self.world, self.job = rank, world, job_from_dict(job)

    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port()

    def run(self, addr: str, port: int, probe: bool) -> dict[str, Any]:
        set_rank_env(addr, port, self.rank, self.world, self.rank, gpus=False)
        import deepspeed
        import torch

        from orchestrator.models import build_model
        from orchestrator.worker.distributed import init_distributed
        from orchestrator.worker.engine import build_engine, evaluate, token_loss
        from orchestrator.worker.probe import GradientProbe

        torch.set_num_threads(1)
        init_distributed("gloo")
        engine = build_engine(self.job, build_model(self.job.model, VOCAB, SEQ, 0))
        gp = GradientProbe(engine, SPEC)
        probe_batches = [_batch(1000 + 10 * self.rank + i) for i in range(2)]
        losses, report, weights, sized = [], None, None, None
        for step in range(4):
            x, y = _batch(100 * self.rank + step)
            loss = token_loss(engine, x, y)
            engine.backward(loss)
            engine.step()
            losses.append(float(loss))
            if step == 1:
                evaluate(engine, [_batch(7)])  # as in training: an evaluation check precedes a probe
            if probe and step == 1:
                with deepspeed.zero.GatheredParameters(
                    list(engine.module.parameters()), modifier_rank=None, enabled=self.job.deepspeed.zero_stage == 3
                ):
                    weights = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
                # Two probes back to back, as at a blueprint checkpoint (general set, then a domain).
                r = gp.measure(probe_batches, step=2, tokens=0, domain="general", label=None)
                report = r.to_dict() if r is not None else None
                gp.measure(probe_batches[:1], step=2, tokens=0, domain="other", label=None)
                # A sized probe out of time: both ranks stop after the floor's one batch, together.
                floor = ProbeSizing(min_batches=1, max_batches=2, ci_target=None, ci_level=0.95, max_share=0.02)
                s = gp.measure(
                    probe_batches, step=2, tokens=0, domain="general", label=None, sizing=floor, budget_s=0.0
                )
                sized = s.to_dict() if s is not None else None
        return {"losses": losses, "report": report, "weights": weights, "batches": probe_batches, "sized": sized}


def _two_ranks(job: dict[str, Any], probe: bool) -> list[dict[str, Any]]:
    return two_ranks(_Rank, job, probe)


def _reference(job_dict: dict[str, Any], weights: dict[str, Any], batches: list[tuple[Any, Any]]):
    """Plain PyTorch, one process: per-batch sums of squares per group and the merged histograms."""
    import torch.nn.functional as F

    from orchestrator.models import build_model

    job = job_from_dict(job_dict)
    model = build_model(job.model, VOCAB, SEQ, 0)
    model.load_state_dict(weights)
    model.eval()
    named = list(model.named_parameters())
    groups = group_parameters((n, p.numel()) for n, p in named)
    sumsq = {gid: [] for gid in groups}
    hists = {gid: MagnitudeHistogram.empty(SPEC) for gid in groups}
    for x, y in batches:
        model.zero_grad()
        logits = model(input_ids=x).logits
        F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1)).backward()
        per = dict.fromkeys(groups, 0.0)
        for n, p in named:
            g = p.grad.detach().double().numpy()
            gid = group_of(n, groups)
            per[gid] += float(np.dot(g.ravel(), g.ravel()))
            hists[gid].add(g)
        for gid in groups:
            sumsq[gid].append(per[gid])
    return groups, sumsq, hists


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local", logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_probe_equals_reference_and_leaves_training_alone(ray_local: None, stage: int) -> None:
    job = job_to_dict(compose_job(["+experiment=debug", f"deepspeed=zero{stage}"]))
    probed = _two_ranks(job, probe=True)
    plain = _two_ranks(job, probe=False)

    # Same seed, same batches: the probe must not change a single training loss.
    for r in range(2):
        assert probed[r]["losses"] == plain[r]["losses"], f"rank {r}"

    report = probed[0]["report"]
    assert probed[1]["report"] is None  # only rank 0 gets the combined report
    # Rank-major order: rank 0's batches, then rank 1's (the all-gather's order).
    batches = probed[0]["batches"] + probed[1]["batches"]
    groups, ref_sumsq, ref_hists = _reference(job, probed[0]["weights"], batches)
    assert report["ids"] == list(groups)
    assert report["nonfinite"] == 0
    for gid in groups:
        got = np.square(np.asarray(report["batch_norms"][gid]))
        np.testing.assert_allclose(got, ref_sumsq[gid], rtol=1e-4, err_msg=gid)
        h = MagnitudeHistogram.from_dict(report["histograms"][gid])
        ref = ref_hists[gid]
        assert h.count == ref.count == 4 * groups[gid].n_params  # every element of every batch's gradient
        # A value on a bin edge may round to the neighbouring bin: allow 1e-4 of the count to move.
        assert np.abs(h.counts - ref.counts).sum() <= max(1, 1e-4 * ref.count), gid
        np.testing.assert_allclose(h.sums.sum(), ref.sums.sum(), rtol=1e-4, err_msg=gid)
        np.testing.assert_allclose(h.sumsq, ref.sumsq, rtol=1e-4, err_msg=gid)
    sized = probed[0]["sized"]
    for gid in groups:  # each rank's first batch only: rank-major, rank 0's first, then rank 1's
        got = np.square(np.asarray(sized["batch_norms"][gid]))
        np.testing.assert_allclose(got, [ref_sumsq[gid][0], ref_sumsq[gid][2]], rtol=1e-4, err_msg=gid)
        assert MagnitudeHistogram.from_dict(sized["histograms"][gid]).count == 2 * groups[gid].n_params
    # Collectives: 2 batches × G sums of squares, G × bins counts and sums, one non-finite count; no gradients.
    g, b = len(groups), SPEC.n_bins
    assert report["bytes_communicated"] == 8 * (2 * g + 2 * g * b + 1)
