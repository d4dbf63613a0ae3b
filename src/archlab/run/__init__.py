"""Running a study: plan runs (model × repeat), skip finished ones, train the rest.

A run's identity is a hash of everything that determines its numbers (resolved model spec,
training config, data config, seed), so re-running a study only trains what is missing or
changed. Each run checkpoints at every epoch end (weights, optimizer, scheduler and RNG
states, history) with an atomic rename, so a killed run resumes from its last epoch.
"""

from archlab.run.config import RunPlan, canonical_json, derive_seed, plan_runs
from archlab.run.environment import default_threads, environment, resolve_device
from archlab.run.execute import RunContext, execute_run
from archlab.run.layout import DEFAULT_ROOT, study_dir
from archlab.run.lock import LOCK_FILE, StudyBusyError, StudyLock, check_output_dir
from archlab.run.projection import projected_seconds
from archlab.run.ray_executor import RayExecutor
from archlab.run.search import SearchOutcome, run_search, validate_search
from archlab.run.study import Stop, StudyOutcome, run_study

__all__ = [
    "DEFAULT_ROOT",
    "LOCK_FILE",
    "RayExecutor",
    "RunContext",
    "RunPlan",
    "SearchOutcome",
    "Stop",
    "StudyBusyError",
    "StudyLock",
    "StudyOutcome",
    "canonical_json",
    "check_output_dir",
    "default_threads",
    "derive_seed",
    "environment",
    "execute_run",
    "plan_runs",
    "projected_seconds",
    "resolve_device",
    "run_search",
    "run_study",
    "study_dir",
    "validate_search",
]
