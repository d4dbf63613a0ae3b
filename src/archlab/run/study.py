"""Running a study: plan runs (model × repeat), skip finished ones, train the rest.

A run's identity is a hash of everything that determines its numbers (resolved model spec,
training config, data config, seed), so re-running a study only trains what is missing or
changed. Each run checkpoints at every epoch end (weights, optimizer, scheduler and RNG
states, history) with an atomic rename, so a killed run resumes from its last epoch.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.data import load_dataset, prepare_tensors
from archlab.errors import ArchlabError
from archlab.run.config import RunPlan, plan_runs
from archlab.run.environment import default_threads, environment, resolve_device
from archlab.run.execute import RunContext, execute_run
from archlab.run.layout import study_dir
from archlab.run.pool import run_parallel
from archlab.spec import Study, dump_study
from archlab.store import DONE, Store


@dataclass
class StudyOutcome:
    directory: Path
    planned: list[RunPlan]
    skipped: list[str]
    statuses: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False




def run_study(
    study: Study,
    out: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    repeats: int | None = None,
    jobs: int = 1,
    threads: int | None = None,
    progress: Any = None,
    device: str | None = None,
) -> StudyOutcome:
    """Train every run of ``study`` that the store in ``out`` does not already hold.

    Finished (and diverged) runs are skipped; failed, interrupted and half-done runs are
    retried, resuming from their last epoch checkpoint. ``progress`` is a
    :class:`archlab.cli.progress.ProgressView` (or None for silence).
    """

    directory = study_dir(study, out)
    directory.mkdir(parents=True, exist_ok=True)
    plans = plan_runs(study, repeats=repeats)
    with Store(directory) as store:
        store.set_meta(study=study.name, source=study.source, spec=dump_study(study),
                       plan=[p.run_id for p in plans],
                       updated_at=time.time())
        done = {r.run_id for r in store.runs() if r.status in DONE}
    (directory / "study.yaml").write_text(dump_study(study))
    todo = [p for p in plans if p.run_id not in done]
    outcome = StudyOutcome(directory, plans, [p.run_id for p in plans if p.run_id in done])
    if not todo:
        return outcome
    threads = threads or default_threads(jobs)
    device = resolve_device(device)
    report = progress.event if progress is not None else (lambda rid, ev: None)
    if progress is not None:
        progress.start(todo, len(outcome.skipped))
    stopper = _StopOnSigint()
    try:
        if jobs <= 1:
            raw = load_dataset(study.data.dataset, data_dir)
            data = prepare_tensors(raw, study.data, study.seed).to(device)
            ctx = RunContext(directory, data, threads, report, stopper.requested, device)
            for plan in todo:
                if stopper.requested():
                    break
                try:
                    outcome.statuses[plan.run_id] = execute_run(study, plan, ctx)
                except ArchlabError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one broken run must not end the study
                    reason = f"{exc.__class__.__name__}: {str(exc).strip()[-500:]}"
                    with Store(directory) as store:  # recorded even if it died before start
                        store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed,
                                        plan.config.to_json(), environment(threads, device))
                        store.fail_run(plan.run_id, reason)
                    report(plan.run_id, {"kind": "done", "status": "failed", "error": reason})
                    outcome.statuses[plan.run_id] = "failed"
        else:
            run_parallel(study, todo, directory, data_dir, jobs, threads, report,
                         stopper.requested, outcome.statuses, device)
    finally:
        stopper.restore()
        if progress is not None:
            progress.stop()
    outcome.interrupted = stopper.requested()
    return outcome


class _StopOnSigint:
    """First Ctrl-C: finish cleanly (runs stop at the next batch; checkpoints are kept).
    Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.count = 0
        self._old = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, *_: Any) -> None:
        self.count += 1
        if self.count >= 2:
            os._exit(130)

    def requested(self) -> bool:
        return self.count > 0

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._old)


