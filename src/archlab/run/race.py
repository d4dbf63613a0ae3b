"""Racing a study: seeds in rounds until the ranking is decided (``repeats: {min, max, until:
decided}``).

The driver only decides which runs come next; the runs themselves are ordinary runs of
:func:`~archlab.run.study.run_study`, round after round: ``run_study`` of the models still in the
race, each asking for the seeds the race has reached. Run ids do not depend on how many repeats
a model asks for, so a race's runs are the very runs a fixed number of repeats would train, and
everything ``run_study`` does comes with them: runs the store holds are skipped (a race killed at
any moment, even with ``kill -9``, resumes without losing or repeating a run), ``--jobs``, Ray,
packing (the first round's seeds of a model are one pack), checkpoints and resumption.

Which models stay in the race is decided by :func:`archlab.analysis.racing.race` from the runs
in the store, so a resumed race replays the same decisions. The race is recorded in the store's
meta (``race``: limits, alpha, correction, budget, why it stopped, its runs), from which
``archlab results`` and the report show it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.analysis.racing import SPENDING_POWER, Limits, Race, race
from archlab.data import load_dataset
from archlab.errors import ArchlabError
from archlab.fields import RaceRepeats, repeat_bounds
from archlab.plan import RunPlan
from archlab.run.lock import StudyLock, check_output_dir
from archlab.run.study import Stop, StudyOutcome, run_study
from archlab.spec import Study, dump_study
from archlab.store import DONE, STORE_FILE, RunRecord, RunStatus, Store
from archlab.store.layout import STUDY_FILE, study_dir

__all__ = ["RACE_META", "Budget", "RaceOutcome", "race_limits", "race_study", "run_race"]

#: The store meta key a race is recorded under.
RACE_META = "race"


@dataclass(frozen=True)
class Budget:
    """How much a race may cost: a number of runs (all models, all rounds), or hours of
    training (the runs' recorded wall time). A round that would pass it is not started."""

    runs: int | None = None
    hours: float | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        """'60' or '60 runs' (runs); '2h', '1.5 h', '90min' (time). Raises
        :class:`ArchlabError` (one line) for anything else."""
        s = text.strip().lower()
        if m := re.fullmatch(r"(\d+)\s*(runs?)?", s):
            runs = int(m.group(1))
            if runs >= 1:
                return cls(runs=runs)
        elif m := re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|hours?|min|minutes?)", s):
            value = float(m.group(1))
            hours = value if m.group(2).startswith("h") else value / 60.0
            if hours > 0 and math.isfinite(hours):
                return cls(hours=hours)
        raise ArchlabError(f"--budget: Expected a number of runs (60) or of hours (2h, 90min), "
                           f"received {text!r}")

    @property
    def text(self) -> str:
        if self.runs is not None:
            return f"{self.runs} runs"
        hours = self.hours or 0.0
        return f"{hours:g} h" if hours >= 1 else f"{hours * 60:g} min"

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "hours": self.hours}


def race_limits(study: Study) -> dict[str, Limits] | None:
    """Each model's (min, max) seeds when some model of ``study`` races, else None. A model
    with a fixed number of repeats takes part with min = max = that number."""
    limits: dict[str, Limits] = {}
    racing = False
    for name in study.models:
        repeats = study.train_for(name).repeats
        racing = racing or isinstance(repeats, RaceRepeats)
        low, high = repeat_bounds(repeats)
        limits[name] = Limits(low, high)
    return limits if racing else None


def race_study(study: Study, seeds: dict[str, int], *, search: bool = False) -> Study:
    """``study`` with only the models of ``seeds``, each asking for that many repeats (the
    same runs: the number of repeats is not part of a run's identity); without its search
    unless ``search``."""
    models = {}
    for name, n in seeds.items():
        spec = study.models[name]
        train = spec.train.model_copy(update={"repeats": n})
        models[name] = spec.model_copy(update={"train": train})
    copy = study.model_copy(update={"models": models,
                                    "search": study.search if search else None})
    copy._source = study._source
    return copy


@dataclass
class RaceOutcome(StudyOutcome):
    """What :func:`run_race` did: a :class:`StudyOutcome` (the race's runs, in ``planned``)
    with the race as the store's runs decide it."""

    race: Race | None = None
    #: why the race stopped before it was decided or ran out of seeds: 'budget', 'failed'
    #: (a run failed: rerun to retry it), 'interrupted'; None when it ended on its own
    stopped: str | None = None
    budget: Budget | None = None
    rounds: int = 0  # the rounds this call went through (resumed rounds included)
    statuses_by_round: list[dict[str, str]] = field(default_factory=list, repr=False)


def _values(directory: Path, plans: dict[tuple[str, int], RunPlan]
            ) -> tuple[dict[str, dict[int, float | None]], list[RunRecord]]:
    """Each model's test accuracies by repeat (None: done without one), from the store."""
    with Store(directory) as store:
        records = store.runs(run_ids=[p.run_id for p in plans.values()])
    by_id = {r.run_id: r for r in records}
    values: dict[str, dict[int, float | None]] = {}
    for (model, repeat), plan in plans.items():
        record = by_id.get(plan.run_id)
        if record is None or record.status not in DONE:
            continue
        acc = record.metrics.get("test_accuracy") if record.status is RunStatus.FINISHED \
            else None
        values.setdefault(model, {})[repeat] = (
            float(acc) if acc is not None and math.isfinite(acc) else None)
    return values, records


def _over_budget(budget: Budget | None, state: Race, records: list[RunRecord]) -> bool:
    """Whether the race's next round would pass ``budget``."""
    if budget is None:
        return False
    next_runs = state.pending()
    if budget.runs is not None:
        return state.runs > budget.runs  # every model's seeds once the next round is done
    spent: dict[str, list[float]] = {}
    for r in records:
        if r.wall_seconds is not None and math.isfinite(r.wall_seconds):
            spent.setdefault(r.model, []).append(r.wall_seconds)
    total = sum(sum(v) for v in spent.values())
    every = [t for v in spent.values() for t in v]
    mean_all = sum(every) / len(every) if every else 0.0
    have = {m: len(spent.get(m, [])) for m in next_runs}
    estimate = sum(max(0, n - have[m]) * (sum(spent[m]) / len(spent[m]) if spent.get(m)
                                          else mean_all)
                   for m, n in next_runs.items())
    return total + estimate > (budget.hours or 0.0) * 3600.0


def _record(directory: Path, study: Study, state: Race | None, plans: list[RunPlan], *,
            correction: str, alpha: float, budget: Budget | None, stopped: str | None,
            extra_plan: list[str] | None = None) -> None:
    """The race in the store's meta, and the whole study (its race, not a round) as the
    directory's study file and the plan that results and the report read."""
    ids = [p.run_id for p in plans]
    with Store(directory) as store:
        current = list(store.meta().get("plan") or [])
        plan = ids + [r for r in (extra_plan if extra_plan is not None else current)
                      if r not in ids]
        store.set_meta(study=study.name, source=study.source, spec=dump_study(study),
                       plan=plan, correction=correction, **{RACE_META: {
                           "limits": {m: [lim.min, lim.max] for m, lim in
                                      (state.limits.items() if state else [])},
                           "alpha": alpha, "correction": correction,
                           "power": SPENDING_POWER,
                           "budget": budget.to_json() if budget else None,
                           "stopped": stopped, "plan": ids}})
    path = directory / STUDY_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(dump_study(study))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def run_race(
    study: Study,
    out: str | Path | None = None,
    *,
    budget: Budget | None = None,
    correction: str = "holm",
    alpha: float = 0.05,
    data_dir: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
    progress: Any = None,
    device: str | None = None,
    stop: Stop = None,
    dataset: Any = None,
    pack: bool = True,
    precision: str = "fp32",
    executor: Any = None,
) -> RaceOutcome:
    """Race ``study``'s models: ``min`` seeds each, then one more seed per round for the models
    still in the race, until one is separated from all the others, each has ``max`` seeds, or
    ``budget`` would be passed (see :mod:`archlab.analysis.racing` for the decisions and
    docs/statistics.md for their guarantee). ``correction`` (holm, bh or none) and ``alpha``
    are the drop rule's. The other arguments are :func:`~archlab.run.study.run_study`'s, applied
    to every round. Runs already in the store are kept, so a killed race resumes where it was.
    After the race, a study's ``search`` runs as it would with fixed repeats.

    Raises :class:`ArchlabError` when no model races, or when ``budget`` does not cover the
    first round (every model's ``min`` seeds).
    """
    limits = race_limits(study)
    if limits is None:
        raise ArchlabError(f"{study.source}: Expected a model with repeats {{min, max, until: "
                           "decided}} to race, received fixed repeats only")
    first = sum(lim.min for lim in limits.values())
    if budget is not None and budget.runs is not None and budget.runs < first:
        raise ArchlabError(f"--budget: Expected at least the race's first round, {first} runs "
                           f"(each model's min seeds), received {budget.runs}")
    directory = study_dir(study, out)
    check_output_dir(directory)
    stop_requested: Callable[[], bool] = (
        (lambda: False) if stop is None else stop.is_set if hasattr(stop, "is_set")
        else stop)  # type: ignore[assignment]
    before: set[str] = set()
    if (directory / STORE_FILE).exists():
        with Store(directory) as store:
            before = {r.run_id for r in store.runs() if r.status in DONE}
    outcome = RaceOutcome(directory, [], [], budget=budget)
    plans: dict[tuple[str, int], RunPlan] = {}
    seeds = {m: lim.min for m, lim in limits.items()}
    state: Race | None = None
    with StudyLock(directory):
        while True:
            if dataset is None and (outcome.rounds or study.data.source is not None
                                    or not (directory / STORE_FILE).exists()):
                dataset = load_dataset(study.data.dataset, data_dir)  # once, not every round
            done = run_study(race_study(study, seeds), directory, data_dir=data_dir, jobs=jobs,
                             threads=threads, progress=progress, device=device, stop=stop,
                             dataset=dataset, pack=pack, precision=precision,
                             executor=executor)
            outcome.rounds += 1
            outcome.statuses.update(done.statuses)
            outcome.errors.update(done.errors)
            for p in done.planned:
                plans[(p.model, p.repeat)] = p
            values, records = _values(directory, plans)
            state = race(values, limits, alpha=alpha, correction=correction)
            ordered = sorted(plans.values(), key=lambda p: (list(limits).index(p.model),
                                                           p.repeat))
            if done.interrupted or stop_requested():
                outcome.stopped = "interrupted"
            elif done.failed or (not state.finished and state.pending() == seeds):
                outcome.stopped = "failed"  # a run of this round did not finish: rerun
            elif not state.finished and _over_budget(budget, state, records):
                outcome.stopped = "budget"
            _record(directory, study, state, ordered, correction=correction, alpha=alpha,
                    budget=budget, stopped=outcome.stopped)
            if outcome.stopped is not None or state.finished:
                break
            seeds = state.pending()
        outcome.race = state
        outcome.planned = ordered
        outcome.interrupted = outcome.stopped == "interrupted"
        outcome.skipped = [p.run_id for p in ordered if p.run_id in before]
        if study.search is not None and study.search.base in study.models \
                and outcome.stopped is None:
            final = {m: state.targets[m] for m in limits}
            searched = run_study(race_study(study, final, search=True), directory,
                                 data_dir=data_dir, jobs=jobs, threads=threads,
                                 progress=progress, device=device, stop=stop, pack=pack,
                                 precision=precision, executor=executor, dataset=dataset)
            outcome.statuses.update(searched.statuses)
            outcome.errors.update(searched.errors)
            known = {p.run_id for p in ordered}
            outcome.planned += [p for p in searched.planned if p.run_id not in known]
            outcome.interrupted = searched.interrupted
            with Store(directory) as store:
                extra = list(store.meta().get("plan") or [])
            _record(directory, study, state, ordered, correction=correction, alpha=alpha,
                    budget=budget, stopped=outcome.stopped, extra_plan=extra)
    return outcome
