"""A study's search in the report and in ``archlab results``: Optuna's history, the parameter
importances and the confirmed ranking.

Everything comes from files written at run time: ``search.json`` (Optuna's trials and
importances, written by run/search.py) and the store (the confirmation runs, through
:func:`archlab.analysis.results.collect`). The confirmed ranking is archlab's: the objective's
mean, 95 % CI and paired t-test over the confirmation seeds (analysis/multiplicity.rank), so a
winner is never one lucky seed. Nothing here trains, loads data or opens Optuna.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archlab.analysis.multiplicity import rank
from archlab.analysis.results import ModelResult, StudyResults
from archlab.analysis.stats import Comparison, Summary
from archlab.errors import StoreError
from archlab.report.figures import RC, Image, _figure, _png, text_width

__all__ = ["IMPORTANCE_TRIALS", "ConfirmedRow", "SearchData", "SearchSection", "TrialRow",
           "gather_search", "rich_search_tables", "search_lines", "search_section"]

SEARCH_FILE = "search.json"  # run/search.py writes it (run/ imports report/, not the reverse)
#: Fewer complete trials than this and the parameter importances come with a caveat: Optuna
#: rates each parameter from the trials' spread, which a handful of points barely sample.
IMPORTANCE_TRIALS = 20


@dataclass(frozen=True)
class TrialRow:
    """One Optuna trial: its model, state (COMPLETE, PRUNED, FAIL, RUNNING), objective value,
    params and per-epoch reported values."""

    number: int
    model: str
    state: str
    value: float | None
    params: dict[str, Any]
    intermediate: dict[int, float]
    pruned_epoch: int | None


@dataclass(frozen=True)
class ConfirmedRow:
    """A confirmed trial: its objective and test accuracy over the confirmation seeds."""

    model: str
    trial: int
    objective: Summary | None
    test_accuracy: Summary | None
    comparison: Comparison | None  # the winner against this one (None for the winner)


@dataclass(frozen=True)
class SearchData:
    base: str
    objective: str
    direction: str
    target: int  # trials asked for
    repeats: int  # confirmation seeds (a race: the most it may give a trial)
    trials: list[TrialRow]
    importances: dict[str, float]
    confirmed: list[ConfirmedRow]  # best first
    winner: str | None  # named only when every confirmed model has >= 2 finished seeds
    complete: bool
    #: a racing confirmation (search.json's confirm_race): seeds given, drops, its cost
    race: dict[str, Any] | None = None

    @property
    def counted(self) -> int:
        return sum(t.state in ("COMPLETE", "PRUNED") for t in self.trials)


def _bad(path: Path, what: str) -> StoreError:
    return StoreError(f"{path}: damaged search file ({what})")


def _trial(path: Path, t: Any) -> TrialRow:
    if not isinstance(t, dict) or not isinstance(t.get("number"), int) \
            or not isinstance(t.get("model"), str) or not isinstance(t.get("state"), str) \
            or not isinstance(t.get("params"), dict):
        raise _bad(path, "a trial without number, model, state or params")
    value = t.get("value")
    inter = t.get("intermediate") or {}
    try:
        intermediate = {int(k): float(v) for k, v in inter.items()}
        value = None if value is None else float(value)
    except (TypeError, ValueError, AttributeError):
        raise _bad(path, f"trial {t['number']}'s values") from None
    pruned = t.get("pruned_epoch")
    return TrialRow(t["number"], t["model"], t["state"], value, dict(t["params"]), intermediate,
                    pruned if isinstance(pruned, int) else None)


def _objective(m: ModelResult, metric: str) -> list[float]:
    return [v for r in m.finished if (v := r.metrics.get(metric)) is not None
            and math.isfinite(v)]


def gather_search(directory: Path, results: StudyResults | None = None) -> SearchData | None:
    """The search of the study in ``directory`` (None when it has no search.json);
    ``results`` are its collected results, when the caller has them."""
    path = Path(directory) / SEARCH_FILE
    if not path.is_file():
        return None
    if results is None:
        from archlab.analysis.results import collect

        results = collect(directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _bad(path, f"{exc.__class__.__name__}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("trials"), list) \
            or not isinstance(data.get("search"), dict):
        raise _bad(path, "no trials")
    spec = data["search"]
    objective = str(spec.get("objective", "val_accuracy"))
    direction = "maximize" if data.get("direction") == "maximize" else "minimize"
    trials = [_trial(path, t) for t in data["trials"]]
    importances = {str(k): float(v) for k, v in (data.get("importances") or {}).items()
                   if isinstance(v, int | float)}
    confirm = spec.get("confirm") or {}
    numbers = {t.model: t.number for t in trials}
    by_name = {m.model: m for m in results.models}
    models = [by_name[n] for n in data.get("confirmed") or [] if n in by_name]
    values = {m.model: _objective(m, objective) for m in models}
    seeds = {m.model: [r.seed for r in m.finished if r.metrics.get(objective) is not None]
             for m in models}
    ranked = {k: v for k, v in values.items() if v}
    ranking = rank(ranked, higher_is_better=direction == "maximize", seeds=seeds) \
        if ranked else []
    order = ([ranking[0].best] + [c.other for c in ranking]) if ranking else list(ranked)
    order += [m.model for m in models if m.model not in order]
    against = {c.other: c for c in ranking}
    rows = [ConfirmedRow(name, numbers.get(name, -1), by_name[name].metrics.get(objective),
                         by_name[name].metrics.get("test_accuracy"), against.get(name))
            for name in order]
    winner = order[0] if rows and all(len(values[r.model]) >= 2 for r in rows) else None
    return SearchData(str(data.get("base", "")), objective, direction,
                      int(spec.get("trials", len(trials))), _confirm_seeds(confirm),
                      trials, importances, rows, winner, bool(data.get("complete")),
                      data.get("confirm_race") if isinstance(data.get("confirm_race"), dict)
                      else None)


def _confirm_seeds(confirm: dict[str, Any]) -> int:
    """A confirmation's seeds: its count, or a race's max."""
    repeats = confirm.get("repeats", 0)
    return int(repeats.get("max", 0) if isinstance(repeats, dict) else repeats)


# ---------------------------------------------------------------------------------------------
# Text


def _pct(objective: str, x: float) -> str:
    return f"{x * 100:.2f}%" if objective.endswith("accuracy") else f"{x:.4f}"


def _summary(objective: str, s: Summary | None) -> str:
    if s is None:
        return "–"
    if s.n < 2:
        return f"{_pct(objective, s.mean)} (n = 1)"
    return (f"{_pct(objective, s.mean)} ± {_pct(objective, s.std)} "
            f"[{_pct(objective, s.ci_low)}, {_pct(objective, s.ci_high)}] (n = {s.n})")


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _seeds(c: Comparison) -> str:
    """'the 3 confirmation seeds', or a raced pair's 'their 5 and 3 confirmation seeds'."""
    if c.n_best == c.n_other:
        return f"the {c.n_best} confirmation seeds"
    return f"their {c.n_best} and {c.n_other} confirmation seeds"


def search_lines(s: SearchData) -> list[str]:
    """The search in sentences: trials, pruning, the confirmed winner and its verdicts."""
    states: dict[str, int] = {}
    for t in s.trials:
        states[t.state.lower()] = states.get(t.state.lower(), 0) + 1
    lines = [f"Search over {s.base}: {s.counted} of {s.target} trials done ("
             + ", ".join(f"{v} {k}" for k, v in states.items()) + f"), objective {s.objective} "
             f"({s.direction})."]
    if s.winner is not None:
        best = s.confirmed[0]
        seeds = best.objective.n if best.objective is not None else s.repeats
        lines.append(f"Confirmed winner: {best.model} (trial {best.trial}), {s.objective} "
                     f"{_summary(s.objective, best.objective)} over {seeds} seeds; test "
                     f"accuracy {_summary('test_accuracy', best.test_accuracy)}.")
        lines += [f"On {s.objective} over {_seeds(c.comparison)}: {c.comparison.verdict}"
                  for c in s.confirmed[1:] if c.comparison is not None]
    elif s.confirmed:
        lines.append("No winner named yet: the confirmation runs are not all done (rerun the "
                     "same command).")
    elif s.counted >= s.target:
        lines.append("No winner named: no trial completed with a finite objective.")
    if s.race is not None:
        lines.append(f"The confirmation raced (seeds until decided): {s.race.get('runs')} runs "
                     f"of the {s.race.get('fixed_runs')} a fixed confirmation at its max "
                     f"seeds would take" + ("" if s.race.get("finished") else "; unfinished")
                     + ".")
        lines += [f"{m}: {text}" for m, text in (s.race.get("models") or {}).items()]
    return lines


def rich_search_tables(s: SearchData) -> list[Any]:
    """``archlab results``: the trials, then the confirmed ranking (rich tables)."""
    from rich.markup import escape
    from rich.table import Table

    paths = list(dict.fromkeys(p for t in s.trials for p in t.params))
    trials = Table(title=f"search over {s.base}: trials ({s.objective}, {s.direction})",
                   title_justify="left")
    for col in ("trial", "model", "state", s.objective, *paths):
        trials.add_column(escape(col), justify="left" if col in ("model", "state") else "right")
    for t in s.trials:
        state = t.state.lower() + (f" at epoch {t.pruned_epoch}" if t.pruned_epoch else "")
        value = _pct(s.objective, t.value) if t.value is not None else "–"
        trials.add_row(str(t.number), escape(t.model), state, value,
                       *(escape(_value(t.params.get(p, "–"))) for p in paths))
    out: list[Any] = [trials]
    if s.confirmed:
        seeds = f"{s.repeats} seeds" if s.race is None else f"raced, up to {s.repeats} seeds"
        confirmed = Table(title=f"confirmed ranking ({seeds}; mean ± std [95% CI])",
                          title_justify="left")
        for col in ("rank", "model", s.objective, "test accuracy", "vs winner"):
            confirmed.add_column(col, justify="left" if col in ("model", "vs winner")
                                 else "right")
        for i, c in enumerate(s.confirmed, 1):
            vs = "–" if c.comparison is None else (
                ("significant" if c.comparison.significant else "not significant")
                + (f", p = {c.comparison.p_value:.3g}" if math.isfinite(c.comparison.p_value)
                   else ""))
            confirmed.add_row(str(i), escape(c.model), _summary(s.objective, c.objective),
                              _summary("test_accuracy", c.test_accuracy), vs)
        out.append(confirmed)
    return out


# ---------------------------------------------------------------------------------------------
# Figures


def history_figure(s: SearchData) -> Image:
    """Each trial's objective by trial number (pruned ones at their last reported value) and
    the best so far."""
    fig, (ax,) = _figure(7.2, 2.6, margins=(0.08, 0.98, 0.17, 0.88))
    done = [t for t in s.trials if t.state == "COMPLETE" and t.value is not None]
    pruned = [t for t in s.trials if t.state == "PRUNED" and t.intermediate]
    ax.scatter([t.number for t in done], [t.value for t in done], s=14, label="complete",
               color="tab:blue", zorder=3)
    if pruned:
        ax.scatter([t.number for t in pruned],
                   [t.intermediate[max(t.intermediate)] for t in pruned], s=14, marker="x",
                   color="tab:gray", label="pruned (last reported)", zorder=3)
    if done:
        pick = max if s.direction == "maximize" else min
        best, xs, ys = None, [], []
        for t in sorted(done, key=lambda t: t.number):
            best = t.value if best is None else pick(best, t.value)  # type: ignore[type-var]
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(s.objective)
    ax.set_title(f"optimisation history ({s.base})")
    ax.legend(loc="best")
    return _png(fig, "search_history", f"{s.objective} of each trial of the search")


def importance_figure(s: SearchData) -> Image:
    items = sorted(s.importances.items(), key=lambda kv: kv[1])
    done = sum(t.state == "COMPLETE" and t.value is not None for t in s.trials)
    height = 1.2 + 0.3 * len(items)
    left = text_width([k for k, _ in items], RC["ytick.labelsize"]) + 0.2
    fig, (ax,) = _figure(7.2, height, margins=(left / 7.2, 0.97, 0.45 / height,
                                               1 - 0.3 / height))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlabel("importance (Optuna, PED-ANOVA)")
    rough = " (few trials: a rough hint)" if done < IMPORTANCE_TRIALS else ""
    ax.set_title(f"parameter importances from {done} complete trials{rough}")
    return _png(fig, "search_importances", "importance of each searched parameter, from "
                f"{done} complete trials{rough}")


def confirmed_figure(s: SearchData) -> Image:
    rows = [c for c in s.confirmed if c.objective is not None]
    height = 1.2 + 0.35 * len(rows)
    left = text_width([c.model for c in rows], RC["ytick.labelsize"]) + 0.2
    fig, (ax,) = _figure(7.2, height, margins=(left / 7.2, 0.97, 0.45 / height,
                                               1 - 0.3 / height))
    ys = list(range(len(rows)))[::-1]
    for y, c in zip(ys, rows, strict=True):
        o = c.objective
        assert o is not None
        err = [[o.mean - o.ci_low], [o.ci_high - o.mean]] if o.n > 1 else None
        ax.errorbar([o.mean], [y], xerr=err, fmt="o", capsize=3,
                    color="tab:orange" if c.model == s.winner else "tab:blue")
    ax.set_yticks(ys, [c.model for c in rows])
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_xlabel(f"{s.objective} (mean, 95% CI over each trial's confirmation seeds)")
    ax.set_title("confirmed ranking")
    return _png(fig, "search_confirmed", "the confirmed trials' objective with 95% CIs")


@dataclass
class SearchSection:
    """The report's Search section: the search in sentences, its caveats and its figures."""

    data: SearchData
    lines: list[str]
    notes: list[str]
    images: list[Image]


def importance_caveat(s: SearchData) -> str | None:
    """A caveat for importances rated from fewer than :data:`IMPORTANCE_TRIALS` trials."""
    done = sum(t.state == "COMPLETE" and t.value is not None for t in s.trials)
    if not s.importances or done >= IMPORTANCE_TRIALS:
        return None
    return (f"The parameter importances are rated from only {done} complete trial"
            f"{'s' if done != 1 else ''}: treat them as a rough hint, not a ranking (a few more "
            f"trials, or other ones, can reorder them; {IMPORTANCE_TRIALS} or more make them "
            "steadier).")


def search_section(directory: Path, results: StudyResults | None,
                   warn: Callable[[str], None]) -> SearchSection | None:
    """The study's search for the report's own Search section (None for a study without a
    search; a damaged search.json is a warning and no section)."""
    if not (Path(directory) / SEARCH_FILE).is_file():
        return None
    try:
        s = gather_search(directory, results)
    except StoreError as exc:
        warn(str(exc))
        return None
    if s is None:
        return None
    notes: list[str] = []
    images = [history_figure(s)] if s.trials else []
    if s.importances:
        images.append(importance_figure(s))
        caveat = importance_caveat(s)
        if caveat:
            notes.append(caveat)
    elif s.complete:
        notes.append("No parameter importances: too few complete trials for Optuna to rate "
                     "the parameters.")
    if any(c.objective is not None for c in s.confirmed):
        images.append(confirmed_figure(s))
    return SearchSection(s, search_lines(s), notes, images)
