"""One training rank: a Ray actor running a DeepSpeed engine, reporting to the controller, obeying its STOP.

Every `report_interval` steps the ranks all-reduce [loss sum, stop flag]: rank 0 sets the flag when the
controller answered its previous report with a halt (a user stop), so all ranks leave the loop at the same
step. At every evaluation check rank 0 waits for the controller's decision (milliseconds; the check is a
synchronisation point anyway) and the flag travels the same way. On a halt every rank saves its part of a
DeepSpeed checkpoint and returns. The controller may also ask for a *restart* (the flag's value 2): the ranks
checkpoint and return the same way, and the controller starts the job again from that checkpoint at another
world size (a resize) or later (after a pause). A rank given `resume` loads it before its first step.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.config.compose import job_from_dict

INJECT_NONFINITE = "CPR_INJECT_NONFINITE_AT_STEP"
"""Fault injection for drills and tests: from this optimizer step on, every rank's loss is multiplied by NaN before
its backward pass, so NaN gradients really flow through DeepSpeed into the weights (unset: off)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def set_rank_env(addr: str, port: int, rank: int, world_size: int, local_rank: int, *, gpus: bool) -> None:
    """The torch.distributed rendezvous variables DeepSpeed reads, and its CPU accelerator on a CPU rank."""
    os.environ.update(
        MASTER_ADDR=addr,
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        # Ray shows each GPU rank only its own device(s) (CUDA_VISIBLE_DEVICES), so its local index is 0.
        LOCAL_RANK="0" if gpus else str(local_rank),
    )
    if not gpus:
        os.environ["DS_ACCELERATOR"] = "cpu"


class TrainWorker:
    """Ray actor body (wrapped with ray.remote by `WorkerGroup`)."""

    def __init__(
        self,
        *,
        rank: int,
        world_size: int,
        local_rank: int,
        job_id: str,
        job: dict[str, Any],
        prepared: dict[str, Any],
        checkpoint_dir: str,
        controller: Any,
        resume: dict[str, Any] | None = None,
        incarnation: int = 0,
    ) -> None:
        """`resume`: {"dir", "tag", "universal"} of the checkpoint to start from; `incarnation`: how many times
        the job has been restarted (it keeps the telemetry sources of each restart apart)."""
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.job_id = job_id
        self.job = job_from_dict(job)
        self.prepared = prepared
        self.checkpoint_dir = checkpoint_dir
        self.controller = controller
        self.resume = resume
        self.incarnation = incarnation
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._result: dict[str, Any] | None = None

    def result(self) -> dict[str, Any] | None:
        """What `run` returned. A restarted controller (which lost `run`'s reference) calls this: the actor runs one
        call at a time, so it waits until `run` has returned."""
        return self._result

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port: rank 0 hosts the process group's rendezvous."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    # -- controller calls ---------------------------------------------------------------------------------
    def _send(self, ref: Any) -> None:
        """Keep fire-and-forget refs so they can be awaited at the end (nothing is lost on exit).

        Called from the training loop and the telemetry thread alike, hence the lock."""
        import ray

        done: list[Any] = []
        with self._lock:
            self._pending.append(ref)
            if len(self._pending) > 64:
                done, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0)
        if done:
            ray.get(done)  # surfaces a controller error instead of piling refs up

    def _telemetry_sink(self, samples: list[Any]) -> None:
        self._send(self.controller.telemetry.remote(self.job_id, [s.to_dict() for s in samples]))

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self, master_addr: str, master_port: int) -> dict[str, Any]:
        job = self.job
        gpus = job.cluster.gpus_per_worker > 0
        backend = job.cluster.backend or ("nccl" if gpus else "gloo")
        set_rank_env(master_addr, master_port, self.rank, self.world_size, self.local_rank, gpus=gpus)
        import ray
        import torch
        import torch.distributed as dist

        torch.set_num_threads(job.train.threads_per_worker or job.cluster.cpus_per_worker)

        from orchestrator.core.reports import EvalReport, TrainReport
        from orchestrator.data.batches import TrainBatches, val_batches
        from orchestrator.data.prepare import PreparedData
        from orchestrator.models import build_model
        from orchestrator.telemetry.clock import steady_time  # report stamps on the telemetry's step-free clock
        from orchestrator.worker.distributed import init_distributed
        from orchestrator.worker.engine import build_engine, cool, current_lr, lr_schedule, token_loss
        from orchestrator.worker.memory import training_memory
        from orchestrator.worker.psi import PsiMeter

        init_distributed(backend)
        t = job.train
        prepared = PreparedData.from_dict(self.prepared)
        bare = self.controller is None  # benchmarks/overhead: the same loop with no reports, telemetry or rule
        adapted = None
        if job.adapt.enabled:  # `cpr adapt`: the base model, S_adapt selected, the rest frozen (docs/adapt.md)
            from orchestrator.worker.adapting import adapt_model

            def broadcast(obj: Any) -> Any:
                box = [obj]
                dist.broadcast_object_list(box, src=0)
                return box[0]

            adapted = adapt_model(job, prepared, self.rank, self.world_size, broadcast)
            model = adapted.model
            if self.rank == 0 and not bare:
                record = {"selection": adapted.selection, "base": job.adapt.base, "blueprint": job.adapt.blueprint}
                self._send(self.controller.adapted.remote(self.job_id, record))
        else:
            model = build_model(job.model, prepared.vocab_size, t.seq_len, job.seed)
        per_step = job.tokens_per_step  # the group starts each rank with its world size as cluster.num_workers
        total_steps = job.total_steps
        resume = self.resume
        engine = build_engine(
            job,
            model,
            load_universal=bool(resume and resume["universal"]),
            trainable=None if adapted is None else adapted.trainable,
        )
        lisa = None if adapted is None else adapted.lisa
        batches = TrainBatches(prepared, t.seq_len, t.micro_batch, t.grad_accum, self.rank, self.world_size, job.seed)
        step, tokens = 0, 0
        if resume is not None:
            # Weights, optimizer and LR-scheduler states; a universal checkpoint re-shards them for this world size.
            path, client = engine.load_checkpoint(resume["dir"], tag=resume["tag"])
            if path is None:
                raise RuntimeError(f"no DeepSpeed checkpoint {resume['tag']!r} in {resume['dir']}")
            step, tokens = int(client["step"]), int(client["tokens"])
            batches.load_state_dict({"step": step, "micro": 0})

        sampler = None
        if job.telemetry.enabled and not bare:
            from orchestrator.telemetry.sampler import TelemetrySampler, node_name

            tel = job.telemetry
            # A restarted rank is a new source: its counters start again from 0 and its sample ids again from 1.
            restart = f"-{self.incarnation}" if self.incarnation else ""
            sampler = TelemetrySampler(
                source_prefix=f"{node_name()}/rank{self.rank}{restart}",
                sink=self._telemetry_sink,
                interval_s=tel.interval_s,
                nvml=tel.nvml and gpus,
                codecarbon=tel.codecarbon,
                country_iso_code=tel.country_iso_code,
                codecarbon_measure_s=tel.codecarbon_measure_s,
            )
            sampler.start()
            ray.get(self.controller.sources.remote(self.job_id, self.rank, [asdict(s) for s in sampler.sources()]))

        probe, probe_sets, probe_steps, probe_s, sizing = None, {}, {}, 0.0, None
        if job.probe.enabled and not bare:
            from orchestrator.core.probe_sizing import periodic_due, probe_budget_s
            from orchestrator.worker.probe import GradientProbe

            pc = job.probe
            probe = GradientProbe(engine, pc.histogram.spec())
            sizing = pc.sizing()
            n_seq = pc.batches * t.micro_batch * self.world_size
            for domain in ["general", *job.probe_domains()]:
                split = "val" if domain == "general" else domain
                windows = val_batches(prepared, t.seq_len, t.micro_batch, n_seq, split=split)
                probe_sets[domain] = windows[self.rank :: self.world_size][: pc.batches]
            # Blueprint checkpoints: the first step at or past each fraction of the budget.
            probe_steps = {max(1, math.ceil(f * total_steps - 1e-9)): f"{f:g}" for f in sorted(pc.checkpoints)}
        last_probe = step  # a periodic probe is due `probe.interval` steps after the last probe of any kind

        def run_probe(step: int, tokens: int, label: str | None) -> float:
            """Probe the general set (and at a blueprint checkpoint every domain), each within its share of the time
            budget (`core/probe_sizing.py`); rank 0 reports them at once."""
            assert sizing is not None
            t0 = time.perf_counter()
            domains = [d for d in probe_sets if d == "general" or label is not None]
            loop_s = t0 - t_loop
            reports = []
            for i, domain in enumerate(domains):
                budget = probe_budget_s(
                    sizing, loop_s=loop_s, probe_s=probe_s + time.perf_counter() - t0, domains_left=len(domains) - i
                )
                r = probe.measure(
                    probe_sets[domain],
                    step=step,
                    tokens=tokens,
                    domain=domain,
                    label=label,
                    sizing=sizing,
                    budget_s=budget,
                )
                if r is not None:
                    reports.append(r.to_dict())
            if reports:
                self._send(self.controller.probe.remote(self.job_id, reports))
            return time.perf_counter() - t0

        def all_reduce(values: list[float]) -> list[float]:
            tensor = torch.tensor(values, dtype=torch.float64)
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            return tensor.tolist()

        meter = PsiMeter(job, prepared, engine, rank=self.rank, world_size=self.world_size, all_reduce=all_reduce)

        def flag(answer: dict[str, Any]) -> float:
            """The controller's answer as the number the ranks all-reduce: 0 go on, 1 stop, 2 restart."""
            return 2.0 if answer.get("restart") else 1.0 if answer["halt"] else 0.0

        check_wait = {"n": 0, "total_s": 0.0, "max_s": 0.0, "last_s": 0.0}
        """Rank 0's waits for the controller's answer at its checks; the last is its STOP's, when a STOP ended it."""
        spent = dict.fromkeys(("eval", "check", "report", "checkpoint", "probe", "probe_blueprint"), 0.0)
        """Seconds of this rank's loop in each part besides the training steps (benchmarks/overhead's breakdown):
        the evaluation itself, the check's round trip and all-reduce, reports, periodic checkpoints, probes."""

        def check(step: int, tokens: int, final: bool) -> tuple[float, bool, bool]:
            """The evaluation check: (the controller's answer as a flag, whether the validation loss was finite,
            whether a cool-down starts here). A STOP into a cool-down comes as `cooldown`: [start step, steps]; every
            rank's schedule decays from then on (a restarted gang's checkpoint may carry it already)."""
            if sampler is not None:
                sampler.flush()  # the readings reach the controller while this rank evaluates, before its report
            t_eval = time.perf_counter()
            val_loss, psi, domain_losses = meter.measure(step)
            t_check = time.perf_counter()
            spent["eval"] += t_check - t_eval
            finite = math.isfinite(val_loss)
            halt, start, steps = 0.0, 0.0, 0.0
            if bare:
                return 0.0, finite, False
            if self.rank == 0:
                report = EvalReport(
                    step=step,
                    tokens=tokens,
                    val_loss=val_loss,
                    t_s=steady_time(),
                    final=final,
                    psi=psi,
                    psi_name=meter.spec.name,
                    domain_losses=domain_losses,
                )
                t0 = time.perf_counter()
                answer = ray.get(self.controller.eval.remote(self.job_id, report.to_dict()))
                waited = time.perf_counter() - t0
                halt = flag(answer)
                start, steps = answer.get("cooldown") or (0, 0)
                check_wait["n"] += 1
                check_wait["total_s"] += waited
                check_wait["max_s"] = max(check_wait["max_s"], waited)
                check_wait["last_s"] = waited
            said, start, steps = all_reduce([halt, float(start), float(steps)])
            schedule = lr_schedule(engine)
            begins = steps > 0 and schedule.cooldown_start != int(start)
            if begins:
                cool(engine, int(start), int(steps))
            spent["check"] += time.perf_counter() - t_check
            return said, finite, begins and int(start) == step

        def save(step: int, tokens: int) -> Path:
            tag = f"step{step}"
            engine.save_checkpoint(
                self.checkpoint_dir,
                tag=tag,
                client_state={
                    "step": step,
                    "tokens": tokens,
                    "batches": batches.state_dict(),
                    # Lets `ds_to_universal` convert it, so a later run can resume at another world size.
                    "universal_checkpoint_info": {"universal_checkpoint_version": 0.2},
                },
            )
            dist.barrier()  # every rank's part is on disk before anyone calls it a checkpoint
            return Path(self.checkpoint_dir) / tag

        if not bare and resume is None and step == 0:
            # Ψ of the model as it starts, before any step: the baseline a run's gain is counted from (`cpr
            # leaderboard`'s CPR). Not a check: the stop rule never sees it.
            val_loss0, psi0, _ = meter.measure(0)
            if self.rank == 0:
                self._send(self.controller.initial.remote(self.job_id, {"psi": psi0, "val_loss": val_loss0}))

        # The latest checkpoint of a finite state: a periodic one, else the one this gang started from.
        every = t.checkpoint_steps()
        finite_ckpt = str(Path(resume["dir"]) / resume["tag"]) if resume is not None else None
        periodic: list[Path] = []
        finite = True  # the latest train report's loss and evaluation check were finite

        reason = "budget"
        start_tokens = tokens
        interval_loss, interval_steps, t_mark, tokens_mark = 0.0, 0, time.perf_counter(), tokens
        last_answer: Any = None
        poison_from = int(os.environ.get(INJECT_NONFINITE) or 0)
        engine.train()
        t_loop, cpu_loop = time.perf_counter(), time.process_time()
        # An adapt job's first step measures its memory (training_memory reads ZeRO 0-2's tensors, not ZeRO 3's).
        measured = adapted is None or bare or job.deepspeed.zero_stage >= 3
        before_step: dict[str, int] = {}
        while step < total_steps:
            if lisa is not None:
                lisa.at(step)
            for micro in range(t.grad_accum):
                x, y = next(batches)
                loss = token_loss(engine, x.to(engine.device), y.to(engine.device))
                if poison_from and step + 1 >= poison_from:
                    loss = loss * math.nan
                engine.backward(loss)
                if not measured and micro == t.grad_accum - 1:
                    before_step = training_memory(engine)  # the gradients this step uses
                lr_used = current_lr(engine)  # the LR this optimizer step trains with (engine.step moves it on)
                engine.step()
                interval_loss = interval_loss + loss.detach() / t.grad_accum  # no host sync per step
            step += 1
            tokens += per_step
            interval_steps += 1
            if not measured:  # an adapt job's memory, as its engine holds it at its first step
                from orchestrator.worker.adapting import measure

                measured = True
                if self.rank == 0:
                    assert adapted is not None
                    base_params = adapted.selection["total_params"]  # LoRA's adapters aside
                    m = measure(before_step, training_memory(engine), step, base_params)
                    self._send(self.controller.adapted.remote(self.job_id, {"measured": m}))
            halt = False
            if not bare and (step % t.report_interval == 0 or step == total_steps):
                t_report = time.perf_counter()
                user_halt = 0.0
                if self.rank == 0 and last_answer is not None:
                    ready, _ = ray.wait([last_answer], timeout=0)
                    if ready:
                        user_halt = flag(ray.get(ready[0]))
                loss_sum, said = all_reduce([float(interval_loss), user_halt])
                finite = math.isfinite(loss_sum)
                if sampler is not None and sampler.ensure_alive():
                    print(f"rank {self.rank}: telemetry sampler restarted at step {step}", flush=True)
                if self.rank == 0:
                    now = time.perf_counter()
                    report = TrainReport(
                        step=step,
                        tokens=tokens,
                        loss=loss_sum / (self.world_size * interval_steps),
                        lr=lr_used,
                        tokens_per_s=(tokens - tokens_mark) / max(now - t_mark, 1e-9),
                        t_s=steady_time(),
                    )
                    last_answer = self.controller.train.remote(self.job_id, report.to_dict())
                    self._send(last_answer)
                    t_mark, tokens_mark = now, tokens
                interval_loss, interval_steps = 0.0, 0
                if said > 0:
                    halt, reason = True, "restart" if said > 1 else "user"
                spent["report"] += time.perf_counter() - t_report
            cooling_begins = False
            # A restart still takes this step's check: the rule's window must not lose a point to a resize.
            if (not halt or reason == "restart") and (step % t.eval_interval == 0 or step == total_steps):
                said, checked_finite, cooling_begins = check(step, tokens, final=step == total_steps)
                finite = finite and checked_finite
                if said > 0:
                    halt, reason = True, "restart" if said > 1 else "controller"
                elif every and step % every == 0 and finite and not bare:
                    # A periodic checkpoint, of a state the check just found finite: what a lost rank restarts from.
                    t_save = time.perf_counter()
                    periodic.append(save(step, tokens))
                    finite_ckpt = str(periodic[-1])
                    if self.rank == 0:
                        record = {"step": step, "tokens": tokens, "path": finite_ckpt, "world_size": self.world_size}
                        self._send(self.controller.checkpointed.remote(self.job_id, record))
                        for old in periodic[: -job.train.keep_checkpoints]:
                            shutil.rmtree(old, ignore_errors=True)
                    del periodic[: -job.train.keep_checkpoints]
                    spent["checkpoint"] += time.perf_counter() - t_save
            if probe is not None:
                # A STOP's blueprint ("stop", after its cool-down, and "decision" where a cool-down began); a restart
                # is not an end and publishes nothing.
                label = probe_steps.get(step) or ("stop" if halt and reason != "restart" else None)
                label = label or ("decision" if cooling_begins else None)
                if label is not None or periodic_due(step, last_probe, job.probe.interval):
                    last_probe = step
                    took = run_probe(step, tokens, label)
                    probe_s += took
                    spent["probe" if label is None else "probe_blueprint"] += took
            if halt:
                break
        train_s, train_cpu_s = time.perf_counter() - t_loop, time.process_time() - cpu_loop

        # A diverged state is not saved: the job keeps its last finite checkpoint (None if it never had one).
        if finite and finite_ckpt != str(Path(self.checkpoint_dir) / f"step{step}"):
            finite_ckpt = str(save(step, tokens))
        if sampler is not None:
            sampler.stop()  # one last reading, sent before we return
        with self._lock:
            pending, self._pending = self._pending, []
        ray.get(pending)
        dist.barrier()
        from orchestrator.telemetry.sampler import node_name

        self._result = {
            "rank": self.rank,
            "node_id": ray.get_runtime_context().get_node_id(),
            "node": node_name(),  # the first part of this rank's telemetry sources' names
            "step": step,
            "tokens": tokens,
            "ended_by": reason if step < total_steps else "budget",
            "checkpoint": finite_ckpt,
            "finite": finite,
            "train_s": train_s,
            "train_cpu_s": train_cpu_s,  # every thread of this rank's process: the loop's and its helpers'
            "probe_s": probe_s,
            "world_size": self.world_size,
            "tokens_per_s": (tokens - start_tokens) / train_s if train_s > 0 else None,
            "telemetry_errors": list(sampler.errors) if sampler is not None else [],
            "check_wait": check_wait,
            "spent": spent,
        }
        return self._result
