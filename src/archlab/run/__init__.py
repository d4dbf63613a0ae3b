"""Running a study: plan runs (model × repeat), skip finished ones, train the rest.

A run's identity is a hash of everything that determines its numbers (resolved model spec,
training config, data config, seed), so re-running a study only trains what is missing or
changed. Each run checkpoints at every epoch end (weights, optimizer, scheduler and RNG
states, history) with an atomic rename, so a killed run resumes from its last epoch.
"""

from typing import Any

from archlab.plan import RunPlan, canonical_json, derive_seed, plan_runs
from archlab.run import study as _study
from archlab.run.environment import default_threads, environment, resolve_device
from archlab.run.execute import RunContext, execute_run
from archlab.run.lock import LOCK_FILE, StudyBusyError, StudyLock, check_output_dir
from archlab.run.projection import projected_seconds
from archlab.run.race import RaceOutcome, race_limits, run_race
from archlab.run.ray_executor import RayExecutor
from archlab.run.search import SearchOutcome, run_search, validate_search
from archlab.run.study import Stop, StudyOutcome
from archlab.store.layout import DEFAULT_ROOT, study_dir

__all__ = [
    "DEFAULT_ROOT",
    "LOCK_FILE",
    "RaceOutcome",
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
    "run_race",
    "run_search",
    "run_study",
    "study_dir",
    "validate_search",
]


def run_study(study: Any, out: Any = None, **options: Any) -> StudyOutcome:
    """Train a study (:func:`archlab.run.study.run_study`; its arguments). A study whose models
    race (``repeats: {min, max, until: decided}``) and no ``repeats`` given is raced
    (:func:`archlab.run.race.run_race`, its budget and correction at their defaults)."""
    if options.get("repeats") is None and race_limits(study) is not None:
        options.pop("repeats", None)
        return run_race(study, out, **options)
    return _study.run_study(study, out, **options)
