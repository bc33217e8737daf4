"""Submitting pretraining jobs: the one API behind `cpr submit`, cpr's Hydra launcher, the tests and benchmarks.

In order, so that bad input never takes a resource: `plan_job` composes the config and checks every value (once);
`preflight` checks the outside world without writing anything; `open_run_dir` makes Hydra's output folder;
`prepare` reaches the tracking store, tokenizes the data and checks the model's memory; `start` joins or starts Ray
and hands the job to the controller; `follow` waits for its end. `plan_resume` and `start_resumed` continue an
interrupted or lost job. Sweeps: `plan_sweep` (or `plan_sweep_jobs` from another Hydra app's configs), then
`queue_sweep`.
"""

from orchestrator.submission.output_dir import job_env, open_run_dir, open_sweep_dir
from orchestrator.submission.plan import JobPlan, plan_config, plan_job, plan_of
from orchestrator.submission.preflight import check_capacity, check_memory, check_writable_dir, preflight
from orchestrator.submission.prepare import Prepared, Submission, new_job_id, prepare
from orchestrator.submission.ray_cluster import disconnect, init_ray, start_local_head
from orchestrator.submission.resume import ResumePlan, plan_resume, split_resume
from orchestrator.submission.run import Outcome, Started, drain, follow, request_stop, start, start_resumed
from orchestrator.submission.sweep import (
    MAX_SWEEP_JOBS,
    Queued,
    Sweep,
    SweepPlan,
    expand_sweep,
    new_sweep_id,
    plan_sweep,
    plan_sweep_jobs,
    queue_sweep,
)

__all__ = [
    "MAX_SWEEP_JOBS",
    "JobPlan",
    "Outcome",
    "Prepared",
    "Queued",
    "ResumePlan",
    "Started",
    "Submission",
    "Sweep",
    "SweepPlan",
    "check_capacity",
    "check_memory",
    "check_writable_dir",
    "disconnect",
    "drain",
    "expand_sweep",
    "follow",
    "init_ray",
    "job_env",
    "new_job_id",
    "new_sweep_id",
    "open_run_dir",
    "open_sweep_dir",
    "plan_config",
    "plan_job",
    "plan_of",
    "plan_resume",
    "plan_sweep",
    "plan_sweep_jobs",
    "preflight",
    "prepare",
    "queue_sweep",
    "request_stop",
    "split_resume",
    "start",
    "start_local_head",
    "start_resumed",
]
