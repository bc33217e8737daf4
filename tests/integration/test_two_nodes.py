"""Multi-node: a real job (Ray, DeepSpeed ZeRO-2, codecarbon, MLflow) on two Ray nodes started on this machine.

A head with no CPU and two nodes of one CPU each: a 2-rank job of one CPU per rank cannot fit on one node, so its
PACK placement group spreads it, one rank per node. Its energy is then aggregated per node and per job: each node
names its own telemetry sources (host name + Ray node id), and the job's Γ is the sum over both nodes.
"""

from __future__ import annotations

import math

import pytest
import ray
from ray.cluster_utils import Cluster

from orchestrator.config.compose import compose_job
from orchestrator.controller.actor import controller_handle
from orchestrator.submission import plan_of, prepare
from orchestrator.tracking.writer import metric_name
from tests.integration.cluster import SHORT_JOB, wait_all

pytestmark = pytest.mark.slow

NAMESPACE = "cpr-two-nodes-test"
STEPS = 320


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The job's end on a 0 + 1 + 1 CPU cluster, and the ids of the two nodes that have a CPU."""
    runs = tmp_path_factory.mktemp("two_nodes") / "cpr_runs"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
        try:
            controller = controller_handle(NAMESPACE, detached=False)
            job = [*SHORT_JOB, "telemetry=default", "cluster.num_workers=2", "cluster.cpus_per_worker=1"]
            # 320 steps, not SHORT_JOB's 80: long enough that codecarbon's readings reach the train reports MLflow
            # logs (80 steps could end within the first reading on an idle machine, leaving a node at 0 there)
            job.append(f"train.max_tokens={STEPS * 1024}")
            sent = prepare(plan_of(compose_job([*job, f"runs_dir={runs}", "name=two-nodes"]))).submission
            sent.send(controller)
            result, _ = wait_all(controller, [sent.job_id], timeout_s=240)
            yield {
                "runs": runs,
                "result": result.get(sent.job_id),
                "cpu_nodes": {w.node_id for w in workers},
            }
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def test_a_job_spans_two_ray_nodes_and_its_energy_adds_up_per_node_and_per_job(two_nodes: dict) -> None:
    end = two_nodes["result"]
    assert end is not None, "the job did not end within 240 s"
    assert end["state"] == "finished", end["error"]
    s = end["summary"]
    assert s["reason"] == "budget" and s["step"] == STEPS
    # one rank per node: the scheduler had to spread the PACK placement group over both one-CPU nodes
    workers = s["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert {w["node_id"] for w in workers} == two_nodes["cpu_nodes"]
    nodes = {w["node"] for w in workers}
    assert len(nodes) == 2, "two Ray nodes on one host must name their telemetry sources apart"
    # per node: codecarbon's cpu and ram meters of each rank, under its node's name
    by_node = s["energy_kwh_by_node"]
    assert set(by_node) == nodes and all(kwh > 0 for kwh in by_node.values())
    # per job: Γ (energy) is the sum over the nodes
    assert s["gamma"]["energy_kwh"] == pytest.approx(math.fsum(by_node.values()), rel=1e-9)
    # the same in MLflow: a metric per source of each node, and the job total their sum
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(f"sqlite:///{two_nodes['runs'] / 'mlflow.db'}").get_run(end["run_id"]).data.metrics
    per_source = {}
    for w in workers:
        for meter in ("cpu", "ram"):
            key = metric_name(f"energy/{w['node']}/rank{w['rank']}/{meter}_kwh")
            assert key in metrics, f"{key} not among {sorted(k for k in metrics if k.startswith('energy/'))}"
            per_source[key] = metrics[key]
    sources = {k for k in metrics if k.startswith("energy/") and k != "energy/total_kwh"}
    assert sources == set(per_source)
    assert metrics["energy/total_kwh"] == pytest.approx(math.fsum(per_source.values()), rel=1e-9)
    for node in nodes:  # MLflow's figures are the last train report's: the ranks' final readings came after it
        node_sum = math.fsum(v for k, v in per_source.items() if k.startswith(metric_name(f"energy/{node}/")))
        assert 0 < node_sum <= by_node[node] * (1 + 1e-9)
