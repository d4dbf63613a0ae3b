"""Running a study: plan runs (model × repeat), skip finished ones, train the rest.

A run's identity is a hash of everything that determines its numbers (resolved model spec,
training config, data config, seed), so re-running a study only trains what is missing or
changed. Each run checkpoints at every epoch end (weights, optimizer, scheduler and RNG
states, history) with an atomic rename, so a killed run resumes from its last epoch.

The library installs no signal handler: the caller says when to stop (``stop``), and the
CLI decides what Ctrl-C means.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.data import RawDataset, load_dataset, prepare_tensors
from archlab.errors import ArchlabError, DiskFullError, is_disk_full
from archlab.plan import RunPlan, plan_runs
from archlab.run.environment import PRECISIONS, default_threads, resolve_device
from archlab.run.execute import RunContext, failure_reason
from archlab.run.lock import StudyLock, check_output_dir, disk_full_error
from archlab.run.pack import execute_pack, should_pack
from archlab.run.pool import record_unfinished, run_parallel
from archlab.run.ray_executor import RayExecutor, run_on_ray
from archlab.run.single import run_one
from archlab.spec import Study, dump_study
from archlab.store import DONE, STORE_FILE, RunStatus, Store
from archlab.store.layout import STUDY_FILE, study_dir

__all__ = ["Stop", "StudyOutcome", "run_study"]

#: When to stop: a callable polled before every batch, an Event, or None (never).
Stop = Callable[[], bool] | threading.Event | None


@dataclass
class StudyOutcome:
    """What a call to :func:`run_study` did."""

    directory: Path
    planned: list[RunPlan]
    skipped: list[str]
    statuses: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # why each failed run failed
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        """Run ids that failed in this call (the store holds why)."""
        return [rid for rid, s in self.statuses.items() if s == RunStatus.FAILED.value]


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
    stop: Stop = None,
    dataset: RawDataset | None = None,
    pack: bool = True,
    precision: str = "fp32",
    executor: RayExecutor | None = None,
) -> StudyOutcome:
    """Train every run of ``study`` that the store in ``out`` does not already hold.

    Finished (and diverged) runs are skipped; failed, interrupted and half-done runs are
    retried, resuming from their last epoch checkpoint. ``progress`` is a
    :class:`archlab.cli.progress.ProgressView` (or None for silence). When ``stop`` becomes
    true, runs stop at their next batch (checkpoints kept) and ``interrupted`` is set.
    ``dataset`` is the study's dataset if the caller has loaded it already (else it is loaded
    here, before the study directory is created). ``pack``: train a model's repeats as one
    packed model where a timed probe finds that faster (docs/packing.md); False: separately.
    ``threads`` (torch threads per run) is honoured exactly; left out,
    :func:`~archlab.run.environment.default_threads` picks it from the cores other processes
    leave free (recorded in each run's environment; a resumed run keeps its checkpoint's).
    ``precision``: "fp32" or "bf16" (autocast; in the runs' identity when not fp32).
    ``executor``: a :class:`~archlab.run.ray_executor.RayExecutor` runs each run as a Ray
    task (docs/ray.md; ``jobs`` and packing do not apply, ``threads`` and ``device`` come
    from its resources); None: this machine's processes. A study whose models race
    (``repeats: {min, max, until: decided}``) runs its plan here: the race's first round;
    :func:`archlab.run.run_study` (and ``archlab.run_study``) race it.

    Raises :class:`ArchlabError` (nothing written) for bad counts, an unusable output path or
    a missing or corrupt dataset; :class:`~archlab.run.lock.StudyBusyError` when another
    process uses the directory; :class:`~archlab.errors.DiskFullError` when the disk fills
    up (finished runs are kept: free space and call again).
    """
    _check_count("jobs", jobs)
    if threads is not None:
        _check_count("threads", threads)
    if precision not in PRECISIONS:
        raise ArchlabError(f"precision: expected one of {', '.join(PRECISIONS)}, received "
                           f"{precision!r}")
    directory = study_dir(study, out)
    check_output_dir(directory)
    if dataset is not None and dataset.name != study.data.dataset_name:
        raise ValueError(f"dataset is {dataset.name!r}, the study trains on "
                         f"{study.data.dataset_name!r}")
    raw = dataset
    if study.data.source is not None:
        # A user's data is read first: its fingerprint is part of every run's identity, so
        # a changed folder plans new runs instead of mixing old and new results.
        raw = raw if raw is not None else _load(study, data_dir)
        study = study.with_dataset(raw.info)
    plans = plan_runs(study, repeats=repeats, precision=precision)  # type: ignore[arg-type]
    device = resolve_device(device) if executor is None else executor.device
    if executor is not None:
        if threads is not None and threads != executor.threads:
            raise ArchlabError(f"threads: Expected {executor.threads} (a Ray run's torch threads "
                               f"are its CPUs, cpus_per_run), received {threads}")
        threads = executor.threads
    stop_requested = _as_callable(stop)
    # Data errors are raised here, once, before any output exists (not by each worker).
    if raw is None and not (directory / STORE_FILE).exists():
        raw = _load(study, data_dir)
    with StudyLock(directory):
        try:
            outcome = _run_locked(study, directory, plans, raw, data_dir=data_dir, jobs=jobs,
                                  threads=threads or default_threads(jobs),
                                  threads_from="given" if threads else "default",
                                  progress=progress,
                                  device=device, stop_requested=stop_requested,
                                  pack=pack and precision == "fp32",  # packs train in fp32
                                  executor=executor)
            if study.search is not None and study.search.base in study.models \
                    and not outcome.interrupted:
                from archlab.run.search import run_search

                searched = run_search(study, directory, raw, data_dir=data_dir, jobs=jobs,
                                      threads=threads or default_threads(jobs),
                                      progress=progress, device=device,
                                      stop_requested=stop_requested, statuses=outcome.statuses,
                                      errors=outcome.errors,
                                      threads_from="given" if threads else "default")
                outcome.planned += searched.planned
                outcome.interrupted = stop_requested()
            return outcome
        except DiskFullError:
            raise
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full_error(directory, _one_line(exc)) from None
            raise


def _run_locked(study: Study, directory: Path, plans: list[RunPlan], raw: RawDataset | None,
                *, data_dir: str | Path | None, jobs: int, threads: int, progress: Any,
                device: str, stop_requested: Callable[[], bool],
                pack: bool = True, threads_from: str | None = None,
                executor: RayExecutor | None = None) -> StudyOutcome:
    with Store(directory) as store:
        done = {r.run_id for r in store.runs() if r.status in DONE}
    todo = [p for p in plans if p.run_id not in done]
    if todo and raw is None:
        raw = _load(study, data_dir)  # an existing study: only needed if there is work
    with Store(directory) as store:
        store.set_meta(study=study.name, source=study.source, spec=dump_study(study),
                       plan=[p.run_id for p in plans], updated_at=time.time())
    _write_atomic(directory / STUDY_FILE, dump_study(study))
    outcome = StudyOutcome(directory, plans, [p.run_id for p in plans if p.run_id in done])
    if not todo:
        return outcome
    report = progress.event if progress is not None else (lambda rid, ev: None)
    if progress is not None:
        progress.start(todo, len(outcome.skipped))
    try:
        if executor is not None:  # each run a Ray task; this process writes the store
            assert raw is not None
            run_on_ray(executor, study, todo, directory,
                       prepare_tensors(raw, study.data, study.seed), report, stop_requested,
                       outcome.statuses, outcome.errors)
        elif jobs <= 1:
            assert raw is not None
            data = prepare_tensors(raw, study.data, study.seed).to(device)
            ctx = RunContext(directory, data, threads, report, stop_requested, device,
                             threads_from=threads_from)
            for group in _packs(study, todo, threads, device) if pack else [[p] for p in todo]:
                if stop_requested():
                    break
                if len(group) > 1:
                    statuses = _run_pack(study, group, ctx, report, outcome.errors)
                    if statuses is not None:
                        outcome.statuses.update(statuses)
                        continue
                for plan in group:
                    if stop_requested():
                        break
                    outcome.statuses[plan.run_id] = run_one(study, plan, ctx, report,
                                                             outcome.errors)
        else:
            del raw  # verified; each worker loads its own copy
            run_parallel(study, todo, directory, data_dir, jobs, threads, report,
                         stop_requested, outcome.statuses, outcome.errors, device,
                         threads_from=threads_from)
    finally:
        if progress is not None:
            progress.stop()
    outcome.interrupted = stop_requested()
    return outcome


def _packs(study: Study, todo: list[RunPlan], threads: int, device: str) -> list[list[RunPlan]]:
    """``todo`` in order, a model's repeats as one group where packing them pays."""
    import torch

    torch.set_num_threads(threads)  # the probe's timings are per thread count
    groups: list[list[RunPlan]] = []
    for plan in todo:
        if groups and groups[-1][0].model == plan.model:
            groups[-1].append(plan)
        else:
            groups.append([plan])
    out: list[list[RunPlan]] = []
    for group in groups:
        if len(group) > 1 and should_pack(study, group[0].model, len(group), device=device):
            out.append(group)
        else:
            out.extend([p] for p in group)
    return out


def _run_pack(study: Study, group: list[RunPlan], ctx: RunContext,
              report: Callable[[str, dict[str, Any]], None],
              errors: dict[str, str]) -> dict[str, str] | None:
    try:
        statuses = execute_pack(study, group, ctx)
    except Exception as exc:
        if isinstance(exc, ArchlabError) or is_disk_full(exc):
            for plan in group:
                record_unfinished(ctx.directory, plan, ctx.threads, ctx.device,
                                  f"stopped: {_one_line(exc)}", RunStatus.INTERRUPTED)
            raise
        reason = failure_reason(exc)
        for plan in group:
            record_unfinished(ctx.directory, plan, ctx.threads, ctx.device, reason,
                              RunStatus.FAILED)
            report(plan.run_id, {"kind": "done", "status": "failed", "error": reason})
            errors[plan.run_id] = reason
        return {plan.run_id: RunStatus.FAILED.value for plan in group}
    if statuses is None:
        return None
    return {rid: s.value for rid, s in statuses.items()}


def _load(study: Study, data_dir: str | Path | None) -> RawDataset:
    return load_dataset(study.data.dataset, data_dir)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchlabError(f"{name}: expected a whole number >= 1, received {value!r}")


def _as_callable(stop: Stop) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
