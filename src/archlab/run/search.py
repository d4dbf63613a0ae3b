"""Running a study's search: Optuna ask/tell over archlab runs, pruning per epoch, resumable.

Optuna keeps the search in ``search.db`` (its RDB storage, SQLite) in the study directory,
under the study's name. Each trial is an ordinary archlab run of a model built from the base
(``mlp.trial007``: Optuna's trial number), seed of repeat 0, trained through the same
``--jobs`` pool as any run. Its objective (``val_accuracy`` or ``val_loss``) is reported to
Optuna at each epoch end, where the pruner may stop it: the run is then recorded ``pruned``
and the trial told PRUNED. Workers open the same storage to report and ask.

A search killed at any moment resumes: trials Optuna still has as RUNNING are taken up again
with the same params, so the same run, from its last epoch checkpoint (a run the store already
holds as finished or pruned is only told), and new trials are asked only while complete and
pruned trials (with those in flight) are fewer than ``trials``: the count is exact. The sampler
is seeded per ask from the study seed and the number of trials so far, so with ``--jobs 1``
a search (interrupted or not) asks the same trials.

Then the ``confirm.top`` best trials are re-run with ``confirm.repeats`` seeds (repeat i of every
model shares a seed; repeat 0 is the trial itself): the winner is named by the report from
these runs, with archlab's CIs and paired tests. At the end, ``search.json`` holds Optuna's
history and parameter importances, so the report never opens Optuna.

This module is the search's driver (the ask/tell loop, resuming, the confirmation, search.json);
the Optuna adapters (storage, pruner, sampler, distributions, :class:`TrialCheck`, importances)
are in ``_optuna.py``, a trial's study, the checked points, the projection and the fingerprint
in ``_search_plan.py``: the names those export are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.analysis.racing import Limits, Race, race
from archlab.data import RawDataset, load_dataset, prepare_tensors
from archlab.errors import ArchlabError
from archlab.fields import RaceRepeats, repeat_bounds
from archlab.plan import RunPlan, plan_runs
from archlab.run._optuna import (
    TrialCheck,
    _distribution,
    _importances,
    _pruner,
    _quiet_optuna,
    _sampler,
    _sampler_seed,
    _storage,
)
from archlab.run._search_plan import (
    _epochs,
    _fingerprint,
    search_projection,
    search_studies,
    trial_study,
    validate_search,
)
from archlab.run.execute import RunContext
from archlab.run.pool import Task, run_parallel
from archlab.run.single import run_one
from archlab.spec import Study
from archlab.spec.search import grid_values, trial_name
from archlab.store import DONE, RunStatus, Store

__all__ = ["SEARCH_DB", "SEARCH_FILE", "SearchOutcome", "TrialCheck", "run_search",
           "search_projection", "search_studies", "storage_url", "trial_study",
           "validate_search"]

SEARCH_DB = "search.db"
SEARCH_FILE = "search.json"

Report = Callable[[str, dict[str, Any]], None]


def storage_url(directory: Path) -> str:
    return f"sqlite:///{Path(directory).resolve() / SEARCH_DB}"


@dataclass
class SearchOutcome:
    """What :func:`run_search` did: every run it planned (trials, then confirmations)."""

    planned: list[RunPlan] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)  # model names, best trial first
    complete: bool = False  # every trial told and every confirmation run done


class _Search:
    """The ask/tell loop's state; also the pool's Feed (next / ended)."""

    def __init__(self, study: Study, directory: Path, outcome: SearchOutcome, report: Report,
                 progress: Any, stop_requested: Callable[[], bool]) -> None:
        import optuna

        assert study.search is not None
        self.study, self.spec, self.directory = study, study.search, directory
        self.outcome, self.report = outcome, report
        self.progress, self.stop_requested = progress, stop_requested
        self.url = storage_url(directory)
        self.optuna = optuna.create_study(
            storage=_storage(self.url), study_name=study.name, load_if_exists=True,
            direction=self.spec.direction, pruner=_pruner(self.spec.pruner, _epochs(study)))
        fingerprint = _fingerprint(study)
        found = self.optuna.user_attrs.get("fingerprint")
        if found is None:
            self.optuna.set_user_attr("fingerprint", fingerprint)
        elif found != fingerprint:
            raise ArchlabError(f"{directory / SEARCH_DB}: holds a search of another base model, "
                               "space, sampler, pruner, objective or training than the study's "
                               "search; delete it to start the search over, or run the study "
                               "as it was")
        self.distributions = {p: _distribution(v) for p, v in self.spec.space.items()}
        state = optuna.trial.TrialState
        # Trials a killed process left running: taken up first, same params, same runs.
        self.queue = [t for t in self.optuna.get_trials(deepcopy=False, states=(state.RUNNING,))]
        self.inflight: dict[str, int] = {}
        self.failures = 0
        self.importances: dict[str, float] | None = None
        self.race: Race | None = None  # a racing confirmation's state, once it has run

    def race_json(self) -> dict[str, Any]:
        """A racing confirmation, as search.json and the report show it."""
        state = self.race
        assert state is not None
        return {"finished": state.finished, "reason": state.reason, "winner": state.winner,
                "runs": state.runs, "fixed_runs": state.fixed_runs,
                "seeds": dict(state.targets), "looks": len(state.looks),
                "models": {m: state.model_text(m) for m in state.models}}

    # -- trials ---------------------------------------------------------------------------

    def _counted(self) -> int:
        from optuna.trial import TrialState

        return len(self.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                  TrialState.PRUNED)))

    def _next_grid_point(self) -> dict[str, Any] | None:
        """The grid's next unvisited point, in an order shuffled once by the study seed (what
        Optuna's GridSampler does; archlab enqueues the point itself, as GridSampler's own
        choice does not reach ``ask`` with fixed distributions: it repeated points)."""
        import itertools
        import random

        names = list(self.spec.space)
        grid = list(itertools.product(*(grid_values(self.spec.space[p]) or [] for p in names)))
        random.Random(_sampler_seed(self.study.seed, -1)).shuffle(grid)
        visited = {tuple(t.params.get(p) for p in names)
                   for t in self.optuna.get_trials(deepcopy=False)}
        point = next((g for g in grid if g not in visited), None)
        return None if point is None else dict(zip(names, point, strict=True))

    def _plan(self, number: int, params: dict[str, Any]) -> tuple[Study, RunPlan]:
        name = trial_name(self.spec.base, number)
        study = trial_study(self.study, name, params)
        return study, plan_runs(study, repeats=1)[0]

    def next(self) -> Task | None:
        import optuna

        while not self.stop_requested():
            if self.queue:
                frozen = self.queue.pop(0)
                number, trial_id, params = frozen.number, frozen._trial_id, frozen.params
            elif self._counted() + len(self.inflight) < self.spec.trials \
                    and self.failures < self.spec.trials:
                n = len(self.optuna.get_trials(deepcopy=False))
                self.optuna.sampler = _sampler(self.spec, _sampler_seed(self.study.seed, n))
                if self.spec.sampler == "grid":
                    point = self._next_grid_point()
                    if point is None:
                        return None  # every point of the grid has been asked
                    self.optuna.enqueue_trial(point)  # ask() then takes exactly these values
                trial = self.optuna.ask(self.distributions)
                number, trial_id, params = trial.number, trial._trial_id, trial.params
            else:
                return None
            try:
                trial_study_, plan = self._plan(number, params)
            except ValueError:  # values the checked points did not cover and the spec refuses
                self.failures += 1
                self._told(number, state=optuna.trial.TrialState.FAIL,
                                 skip_if_finished=True)
                continue
            optuna.trial.Trial(self.optuna, trial_id).set_user_attr("run_id", plan.run_id)
            self._add_plan(plan)
            with Store(self.directory) as store:
                status = store.status(plan.run_id)
            if status in DONE:  # trained before a kill, never told
                self._tell(number, plan.run_id, status.value)  # type: ignore[union-attr]
                continue
            self.inflight[plan.run_id] = number
            if self.progress is not None and hasattr(self.progress, "add"):
                self.progress.add([plan])
            return Task(plan, trial_study_, TrialCheck(
                self.url, self.study.name, trial_id, self.spec.objective, self.spec.pruner,
                _epochs(self.study)))
        return None

    def ended(self, run_id: str, status: str) -> None:
        number = self.inflight.pop(run_id, None)
        if number is not None:
            self._tell(number, run_id, status)

    def _told(self, number: int, *args: Any, **kwargs: Any) -> None:
        """``Study.tell``. Optuna's grid sampler calls ``Study.stop`` once the grid is used
        up, which raises outside ``Study.optimize`` (archlab asks and tells itself); the trial
        is stored by then (tell's ``finally``), and the trial count ends the search anyway."""
        try:
            self.optuna.tell(number, *args, **kwargs)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise

    def _tell(self, number: int, run_id: str, status: str) -> None:
        from optuna.trial import TrialState

        if status == RunStatus.INTERRUPTED.value or (
                status == RunStatus.FAILED.value and self.stop_requested()):
            return  # stays RUNNING in Optuna: the next `archlab run` takes it up again
        if status == RunStatus.PRUNED.value:
            self._told(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif status == RunStatus.FINISHED.value:
            with Store(self.directory) as store:
                value = next(iter(store.runs(run_ids=[run_id])), None)
            metric = value.metrics.get(self.spec.objective) if value is not None else None
            if metric is None or not math.isfinite(metric):
                self.failures += 1
                self._told(number, state=TrialState.FAIL, skip_if_finished=True)
            else:
                self._told(number, metric, skip_if_finished=True)
        elif status == RunStatus.DIVERGED.value:
            # A diverged trial is a point to avoid: told as the worst value there is.
            worst = -math.inf if self.spec.direction == "maximize" else math.inf
            self._told(number, worst, skip_if_finished=True)
        else:  # failed: replaced by a new trial (at most `trials` failures in all)
            self.failures += 1
            self._told(number, state=TrialState.FAIL, skip_if_finished=True)
        self.write()

    def _add_plan(self, *plans: RunPlan) -> None:
        """Count ``plans`` in the study's plan (what results and the report show)."""
        known = {p.run_id for p in self.outcome.planned}
        new = [p for p in plans if p.run_id not in known]
        if not new:
            return
        self.outcome.planned += new
        with Store(self.directory) as store:
            current = list(store.meta().get("plan") or [])
            store.set_meta(plan=current + [p.run_id for p in new if p.run_id not in current])

    def add_earlier_trials(self) -> None:
        """The runs of trials an earlier `archlab run` told: still part of the study."""
        queued = {t.number for t in self.queue}
        self._add_plan(*(self._plan(t.number, t.params)[1]
                         for t in self.optuna.get_trials(deepcopy=False)
                         if t.user_attrs.get("run_id") and t.number not in queued))

    # -- confirmation -------------------------------------------------------------------------

    def best(self) -> list[Any]:
        """The complete trials with a finite value, best first (ties: lower number)."""
        from optuna.trial import TrialState

        done = [t for t in self.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
        sign = -1.0 if self.spec.direction == "maximize" else 1.0
        return sorted(done, key=lambda t: (sign * t.value, t.number))

    def confirm_tasks(self, seeds: dict[str, int] | None = None) -> list[Task]:
        """The confirmation runs not yet done: the ``top`` best trials, each with
        ``confirm.repeats`` seeds, or (a racing confirmation) with the seeds ``seeds`` gives
        the trials still in the race."""
        tasks = []
        self.outcome.confirmed = []
        fewest = repeat_bounds(self.spec.confirm.repeats)[0]
        for frozen in self.best()[: self.spec.confirm.top]:
            name = trial_name(self.spec.base, frozen.number)
            self.outcome.confirmed.append(name)
            n = fewest if seeds is None else seeds.get(name)
            if n is None:
                continue  # out of the race: no more seeds
            study = trial_study(self.study, name, frozen.params)
            for plan in plan_runs(study, repeats=n):
                self._add_plan(plan)
                tasks.append(Task(plan, study))
        with Store(self.directory) as store:
            done = {r.run_id for r in store.runs(run_ids=[t.plan.run_id for t in tasks])
                    if r.status in DONE}
        return [t for t in tasks if t.plan.run_id not in done]

    def confirm_values(self) -> dict[str, dict[int, float | None]]:
        """The confirmation runs' objective by repeat, higher better (val_loss negated): a
        race's input; None for a run done without a value (diverged)."""
        sign = 1.0 if self.spec.direction == "maximize" else -1.0
        names = set(self.outcome.confirmed)
        plans = {p.run_id: p for p in self.outcome.planned if p.model in names}
        out: dict[str, dict[int, float | None]] = {n: {} for n in self.outcome.confirmed}
        with Store(self.directory) as store:
            for r in store.runs(run_ids=list(plans)):
                if r.status not in DONE:
                    continue
                value = r.metrics.get(self.spec.objective)
                ok = value is not None and math.isfinite(value)
                out[r.model][plans[r.run_id].repeat] = sign * value if ok else None  # type: ignore[operator]
        return out

    # -- search.json ----------------------------------------------------------------------

    def write(self, *, final: bool = False) -> None:
        """Optuna's history (and, at the end, its parameter importances) as search.json."""
        from optuna.trial import TrialState

        if final and self.importances is None:
            self.importances = _importances(self.optuna)
        trials = []
        for t in self.optuna.get_trials(deepcopy=False):
            steps = sorted(t.intermediate_values)
            trials.append({
                "number": t.number, "model": trial_name(self.spec.base, t.number),
                "run_id": t.user_attrs.get("run_id"), "state": t.state.name,
                "value": t.value if t.value is not None and math.isfinite(t.value) else None,
                "params": t.params,
                "intermediate": {str(s): t.intermediate_values[s] for s in steps},
                "pruned_epoch": steps[-1] if t.state == TrialState.PRUNED and steps else None})
        data = {"study": self.study.name, "base": self.spec.base, "search": self.spec.to_config(),
                "direction": self.spec.direction, "trials": trials,
                "importances": self.importances, "confirmed": self.outcome.confirmed,
                "complete": self.outcome.complete,
                **({"confirm_race": self.race_json()} if self.race is not None else {})}
        path = self.directory / SEARCH_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)


def run_search(study: Study, directory: Path, raw: RawDataset | None, *,
               data_dir: str | Path | None, jobs: int, threads: int, progress: Any,
               device: str, stop_requested: Callable[[], bool],
               statuses: dict[str, str], errors: dict[str, str],
               threads_from: str | None = None) -> SearchOutcome:
    """Run (or resume) ``study``'s search in ``directory`` (the caller holds its lock): the
    trials, then the confirmation runs, then search.json. Fills ``statuses`` and ``errors``
    as runs end."""

    _quiet_optuna()
    outcome = SearchOutcome()
    search = _Search(study, directory, outcome,
                     progress.event if progress is not None else (lambda rid, ev: None),
                     progress, stop_requested)
    report = search.report
    data: Any = None

    def run_tasks(feed: Any, tasks: list[Task]) -> None:
        nonlocal data, raw
        if jobs > 1:
            run_parallel(study, tasks, directory, data_dir, jobs, threads, report,  # type: ignore[arg-type]
                         stop_requested, statuses, errors, device, feed=feed,
                         threads_from=threads_from)
            return
        pending = list(tasks)
        while not stop_requested():
            task = pending.pop(0) if pending else (feed.next() if feed is not None else None)
            if task is None:
                return
            if data is None:
                raw = raw if raw is not None else load_dataset(study.data.dataset, data_dir)
                data = prepare_tensors(raw, study.data, study.seed).to(device)
            ctx = RunContext(directory, data, threads, report, stop_requested, device,
                             epoch_check=task.epoch_check)
            if threads_from is not None and hasattr(ctx, "threads_from"):
                ctx.threads_from = threads_from
            status = run_one(task.study, task.plan, ctx, report, errors)
            statuses[task.plan.run_id] = status
            if feed is not None:
                feed.ended(task.plan.run_id, status)

    search.add_earlier_trials()
    if progress is not None:
        progress.start([], 0)
    try:
        run_tasks(search, [])
        if stop_requested() or search.inflight or search._counted() < study.search.trials:  # type: ignore[union-attr]
            search.write()
            return outcome
        if isinstance(study.search.confirm.repeats, RaceRepeats):  # type: ignore[union-attr]
            outcome.complete = _race_confirmation(search, run_tasks, progress, stop_requested)
        else:
            confirm = search.confirm_tasks()
            if progress is not None and hasattr(progress, "add"):
                progress.add([t.plan for t in confirm])
            run_tasks(None, confirm)
            outcome.complete = not stop_requested() and not any(
                statuses.get(t.plan.run_id) not in (s.value for s in DONE) for t in confirm)
        search.write(final=True)
    finally:
        if progress is not None:
            progress.stop()
    return outcome


def _race_confirmation(search: _Search, run_tasks: Callable[[Any, list[Task]], None],
                       progress: Any, stop_requested: Callable[[], bool]) -> bool:
    """Race the best trials (``confirm.repeats: {min, max, until: decided}``): ``min`` seeds
    each, then a seed per round for those not significantly worse than the best on the
    objective (analysis/racing.py: paired tests, alpha spent over the looks, Holm over every
    pair), until one is separated from the others or each has ``max``. The race is replayed
    from the store, so a killed search resumes it where it was. True when it finished."""
    spec = search.spec.confirm.repeats
    assert isinstance(spec, RaceRepeats)
    seeds: dict[str, int] | None = None  # None: the first round, min seeds each
    while True:
        tasks = search.confirm_tasks(seeds)
        limits = {name: Limits(spec.min, spec.max) for name in search.outcome.confirmed}
        if progress is not None and hasattr(progress, "add"):
            progress.add([t.plan for t in tasks])
        run_tasks(None, tasks)
        if stop_requested():
            return False
        search.race = race(search.confirm_values(), limits)
        if search.race.finished:
            return True
        wanted = search.race.pending()
        if wanted == seeds:  # the last round's runs are not all done: a run failed
            return False
        seeds = wanted
