"""Every MLflow metric and tag name cpr writes or reads: one home, imported by the tracker, the controller, the
report, `cpr status` and the dashboard's test, so a name is spelled once.

Metrics are per step (the training step of the report or check that produced them); tags hold a run's latest word.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- metrics (logged with a step) -----------------------------------------------------------------------------
TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
VAL_LOSS = "val/loss"
"""The job's own held-out loss at a check, logged whatever Ψ is (the divergence guard reads it too)."""
VAL_LOSS_PREFIX = "val/loss/"
"""psi=domains: each domain's held-out loss, `val/loss/<domain>`."""
PSI = "cpr/psi"
"""Ψ at a check, as the job defines it (`psi=`; its name and units are the run's psi.* params and tags)."""
RATIO = "cpr/ratio"
"""The stop rule's windowed ΔΨ/ΔΓ (budget-aware default: the bound on the gain left per Γ unit left)."""
ETA = "cpr/eta"
CHECKS_BELOW = "cpr/checks_below"
GAIN = "cpr/gain"
"""Ψ gained since the first check after step 0."""
LEFT = "cpr/left"
"""The 95 % upper bound on what the rest of the budget would still buy."""
PSI_AT_BUDGET = "cpr/psi_at_budget"
PSI_INITIAL = "cpr/psi_initial"
"""Ψ of the model as it started, at step 0, before any update: the baseline a run's gain is counted from (not a
check: the stop rule never sees it)."""
VAL_LOSS_INITIAL = "val/loss_initial"
GAMMA_PREFIX = "cpr/gamma/"
"""Γ by kind: `cpr/gamma/energy_kwh`, `cpr/gamma/tokens`, …"""
SCHEDULER_SLOTS = "scheduler/slots"
COOLING = "progress/cooling"
"""1 at a cool-down's checks (its STOP is decided, the LR decays), 0 at its last: the rule never reads these."""
PSI_DECISION = "cpr/cooldown/psi_at_decision"
VAL_LOSS_DECISION = "val/loss_at_decision"
PSI_GAINED = "cpr/cooldown/psi_gained"
"""Logged at a cool-down's end: Ψ and the loss where the STOP was decided, and Ψ gained by the cool-down since. In
a section of their own (`cpr/cooldown`) or one that exists (`val`): MLflow's UI draws only a section's first charts
until scrolled, and `cpr`'s first are Ψ, the ratio and η."""


def gamma(kind: str) -> str:
    """The metric of Γ of one kind (a `ResourceKind` value)."""
    return GAMMA_PREFIX + kind


def domain_loss(domain: str) -> str:
    """The metric of one held-out domain's loss in Ψ's mix."""
    return VAL_LOSS_PREFIX + domain


def gamma_kinds(metrics: Mapping[str, float]) -> dict[str, float]:
    """The Γ-by-kind entries of a metrics dict, keyed by kind."""
    return {k[len(GAMMA_PREFIX) :]: v for k, v in metrics.items() if k.startswith(GAMMA_PREFIX)}


# -- tags (a run's latest word) -------------------------------------------------------------------------------
JOB_ID = "cpr.job_id"
STATE = "cpr.state"
"""A `JobLifecycle` value."""
DECISION = "cpr.decision"
REASON = "cpr.reason"
CHECK = "cpr.check"
SCHEDULE = "cpr.schedule"
COOLDOWN = "cpr.cooldown"
"""Its STOP's cool-down: `steps 408→496 (1-sqrt)`, then with Ψ gained once it ends."""
SLOTS = "cpr.slots"
SWEEP = "cpr.sweep"
MODEL = "cpr.model"
DATA = "cpr.data"
ERROR = "cpr.error"
STOP_REQUESTED = "cpr.stop_requested"
CHECKPOINT = "cpr.checkpoint"
INTERRUPTED_BY = "cpr.interrupted_by"
"""The signal that interrupted the job's attached client (SIGTERM, SIGINT)."""
CONTROLLER = "cpr.controller"
"""Where the job's controller runs (JSON: host, pid, its process's start time, Ray's GCS address): what `cpr status`
checks to tell a live job from a `lost` one."""
STATE_DIR = "cpr.state_dir"
"""The job's store folder (`<runs_dir>/jobs/<job_id>`): its files' times are its last report."""
RESUMED = "cpr.resumed"
"""How often `cpr submit +resume` continued it, and from which step last."""
RESTARTS = "cpr.restarts"
LAST_RESTART = "cpr.last_restart"
ABSENT_SOURCES = "cpr.absent_sources"
FALLBACKS = "cpr.fallbacks"
PROBE_WARNING = "cpr.probe_warning"
BLUEPRINT_ERROR = "cpr.blueprint_error"
KIND = "cpr.kind"
"""What kind of run a non-training cpr job made: "select" (`cpr select`); absent for training jobs."""
SELECTION = "cpr.selection"
"""The id of the selection manifest a `cpr select` run wrote."""
BLUEPRINT_MODEL_ID = "cpr.blueprint.model_id"
BLUEPRINT_VERSIONS = "cpr.blueprint.versions"
BLUEPRINT_LATEST = "cpr.blueprint.latest"
NOTIFY = "cpr.notify"
"""Its notifications' deliveries: "N sent, M failed (last: <channel>: <error>)" (docs/notify.md)."""
REPORT = "cpr.report"
SWEEP_REPORT = "cpr.sweep_report"
N_PARAMS = "cpr.n_params"
PSI_NAME = "cpr.psi.name"
"""What Ψ is (also the param psi.name): runs are compared, and ranked, only on the same Ψ."""
PSI_UNITS = "cpr.psi.units"
HYDRA_OUTPUT_DIR = "cpr.hydra_output_dir"
EVAL_SET = "cpr.eval_set"
"""The fingerprint of the data Ψ is measured on (a run param, set at submission): the held-out split of the
tokenized corpus (files, split, tokenizer), Ψ's domains, how many sequences of which length a check evaluates, and
Ψ's definition. `cpr leaderboard` ranks runs against each other only when it is the same."""
HARDWARE = "cpr.hardware"
"""What the job's telemetry measured on and how: one `<kind>: <detail>` per distinct source (GPU names with NVML
counter or power, codecarbon's CPU model with RAPL or its TDP estimate), ` | `-separated."""
LEADERBOARD = "cpr.leaderboard"
"""Where the sweep's leaderboard page is among the artifacts of its last job to end (or why it is not)."""
ADAPT_STRATEGY = "cpr.adapt.strategy"
"""An adapt job's selection strategy (`cpr adapt`, docs/adapt.md)."""
ADAPT_CHOSEN = "cpr.adapt.chosen"
"""The submodules it trains (S_adapt), comma-separated; `lora` for LoRA."""
ADAPT_PREFIX = "adapt/"
"""An adapt job's selection figures (per submodule: `adapt/<figure>/<id>`) and its measured memory."""
