"""A job's gang of training ranks: one placement group, one Ray actor per rank, a gloo/NCCL rendezvous.

The ranks and their placement group are *detached* from the controller that creates them: a controller killed and
restarted by Ray finds them again by name (`adopt`) while they train on, instead of losing them with its process.

Why our own actor group rather than Ray Train's TorchTrainer: the controller must talk to the ranks at every
evaluation check and grow or shrink the gang through a checkpoint-restart, while Ray Train v2 runs its
own controller that owns the worker lifecycle and failure handling. An actor group keeps one owner: ours.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from orchestrator.config.schema import JobConfig


class WorkerGroup:
    """Create, rendezvous, run and tear down the ranks of one job."""

    def __init__(
        self,
        *,
        job_id: str,
        job: JobConfig,
        job_dict: dict[str, Any],
        prepared: dict[str, Any],
        checkpoint_dir: str,
        controller: Any,
        resume: dict[str, Any] | None = None,
        incarnation: int = 0,
    ) -> None:
        """`job` at the size to start (cluster.num_workers ranks); `resume`: the checkpoint its ranks load first."""
        self.job_id = job_id
        self.job = job
        self.job_dict = job_dict
        self.prepared = prepared
        self.checkpoint_dir = checkpoint_dir
        self.controller = controller
        self.resume = resume
        self.incarnation = incarnation
        self.pg: Any = None
        self.actors: list[Any] = []

    def start(self, timeout_s: float = 120.0) -> list[Any]:
        """Reserve the slots (gang start), create the ranks and launch their loops; returns the run refs."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from orchestrator.worker.trainer import TrainWorker

        c = self.job.cluster
        bundle: dict[str, float] = {"CPU": float(c.cpus_per_worker)}
        if c.gpus_per_worker:
            bundle["GPU"] = float(c.gpus_per_worker)
        self.pg = placement_group(
            [dict(bundle) for _ in range(c.num_workers)],
            strategy="PACK",
            name=self.names()[0],
            lifetime="detached",
        )
        ready, _ = ray.wait([self.pg.ready()], timeout=timeout_s)
        if not ready:
            raise RuntimeError(f"the cluster did not free {c.num_workers} × {bundle} within {timeout_s:.0f} s")
        # Local ranks: order of ranks per node, so each rank picks its own GPU / shm segment.
        table = ray.util.placement_group_table(self.pg)
        nodes = [table["bundles_to_node_id"][i] for i in range(c.num_workers)]
        seen: dict[str, int] = defaultdict(int)
        local_ranks = []
        for node in nodes:
            local_ranks.append(seen[node])
            seen[node] += 1
        remote = ray.remote(TrainWorker)
        for rank in range(c.num_workers):
            actor = remote.options(
                num_cpus=c.cpus_per_worker,
                num_gpus=c.gpus_per_worker,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=rank
                ),
                name=self.names()[1][rank],
                lifetime="detached",
                max_restarts=0,  # a rank that dies is not brought back alone: its gang restarts from a checkpoint
            ).remote(
                rank=rank,
                world_size=c.num_workers,
                local_rank=local_ranks[rank],
                job_id=self.job_id,
                job=self.job_dict,
                prepared=self.prepared,
                checkpoint_dir=self.checkpoint_dir,
                controller=self.controller,
                resume=self.resume,
                incarnation=self.incarnation,
            )
            self.actors.append(actor)
        addr, port = ray.get(self.actors[0].address.remote())
        return [a.run.remote(addr, port) for a in self.actors]

    def names(self) -> tuple[str, list[str]]:
        """Its placement group's and its ranks' Ray names (a restart's apart from the last one's)."""
        suffix = f"-{self.incarnation}" if self.incarnation else ""
        ranks = [f"cpr-{self.job_id}-rank{r}{suffix}" for r in range(self.job.cluster.num_workers)]
        return f"cpr-{self.job_id}{suffix}", ranks

    def adopt(self) -> list[Any] | None:
        """Find this gang's live ranks by name (a restarted controller's view of a running job); returns refs to
        their results (see `TrainWorker.result`), or None when the gang is not all there (then it is shut down)."""
        import ray
        from ray.util import get_placement_group

        pg_name, rank_names = self.names()
        try:
            self.pg = get_placement_group(pg_name)
        except ValueError:
            self.pg = None
        for name in rank_names:
            try:
                self.actors.append(ray.get_actor(name))
            except ValueError:
                self.shutdown()
                return None
        return [a.result.remote() for a in self.actors]

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
