"""Conclusions written from the data: pure functions of :class:`StudyResults`, no I/O.

Every sentence is derived from the numbers ``collect()`` computed from the store: the best model
and its margin (with the t-test verdict from ``results.ranking`` when there are repeats, and a
plain "no claim" when there are not), ties, the most over-fitting model, the most time-efficient
model, models that diverged, failed or are stuck at chance level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from archlab.analysis.machine_load import SHARED_LOAD, machine_load
from archlab.analysis.results import ModelResult, StudyResults, accuracy_ci
from archlab.analysis.stats import Comparison
from archlab.layers import Dense
from archlab.store import RunStatus

__all__ = [
    "CHANCE_MARGIN",
    "OVERFIT_NOTICEABLE",
    "Conclusion",
    "chance_level",
    "conclusions",
    "num_classes",
    "points",
    "race_summary",
    "stuck_at_chance",
    "tests_used",
]

CHANCE_MARGIN = 0.02  # "stuck at chance": test accuracy <= 1/classes + 2 pp (11.35 % on MNIST)
OVERFIT_NOTICEABLE = 0.005  # a train - validation accuracy gap below 0.5 pp is not over-fitting
_TIE = 1e-9  # accuracies are fractions of a test set: equal means are equal to rounding


@dataclass(frozen=True)
class Conclusion:
    """One finding. ``kind`` is one of: ``empty``, ``single``, ``best``, ``tie``, ``all-chance``,
    ``significance``, ``effect-sizes``, ``race``, ``no-claim``, ``chance``, ``diverged``,
    ``failed``, ``overfit``, ``no-overfit``, ``efficiency``. ``models`` names the models it
    is about."""

    kind: str
    text: str
    models: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _pp(x: float) -> str:
    return f"{x * 100:.2f} pp"


def _acc(m: ModelResult) -> str:
    """'98.12% (n = 1)' or '98.12 ± 0.10% (n = 5, 95 % CI 97.99 to 98.25%)'."""
    s = m.metrics["test_accuracy"]
    if s.n < 2:
        return f"{_pct(s.mean)} (n = 1)"
    ci, clipped = accuracy_ci(s)
    why = ", clipped to 0-100 %" if clipped else ""
    return f"{s.mean * 100:.2f} ± {s.std * 100:.2f}% (n = {s.n}, 95 % CI {ci}{why})"


def _acc_short(m: ModelResult) -> str:
    """'98.12%, n = 1' or '98.12 ± 0.10%, n = 5' (for use inside parentheses)."""
    s = m.metrics["test_accuracy"]
    if s.n < 2:
        return f"{_pct(s.mean)}, n = 1"
    return f"{s.mean * 100:.2f} ± {s.std * 100:.2f}%, n = {s.n}"


def _names(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def num_classes(results: StudyResults) -> int:
    """The number of classes: the dataset's (recorded at run time), else the output Dense's
    units of the first model, else 10."""
    sizes = results.meta.get("data_sizes")
    if isinstance(sizes, dict) and isinstance(sizes.get("classes"), int) and sizes["classes"] > 1:
        return int(sizes["classes"])
    for m in results.models:
        for r in m.runs:
            dense = [layer for layer in r.config.layers if isinstance(layer, Dense)]
            if dense:
                return int(dense[-1].units)
    return 10


def tests_used(comparisons: Iterable[Comparison]) -> str:
    """The t-test(s) actually used, named: "paired t-tests", "Welch's t-tests" or both."""
    methods = {c.method for c in comparisons}
    names = [name for method, name in (("paired", "paired t-tests (runs matched by seed)"),
                                       ("welch", "Welch's t-tests")) if method in methods]
    return " and ".join(names) or "t-tests"


def chance_level(classes: int) -> float:
    return 1.0 / classes


def stuck_at_chance(m: ModelResult, classes: int, margin: float = CHANCE_MARGIN) -> bool:
    """True when the model's mean test accuracy is at most chance (1/classes) + ``margin``."""
    s = m.metrics.get("test_accuracy")
    return s is not None and s.mean <= chance_level(classes) + margin


def _best_and_ties(results: StudyResults, scored: list[ModelResult]) -> tuple[str, list[str]]:
    """The best model's name and the names of models whose mean equals it."""
    if results.ranking:
        best = results.ranking[0].best
        ties = [c.other for c in results.ranking if abs(c.diff) <= _TIE]
        return best, ties
    top = max(scored, key=lambda m: m.metrics["test_accuracy"].mean)
    mean = top.metrics["test_accuracy"].mean
    ties = [m.model for m in scored
            if m is not top and abs(m.metrics["test_accuracy"].mean - mean) <= _TIE]
    return top.model, ties


def _winner(results: StudyResults, by: dict[str, ModelResult], scored: list[ModelResult],
            classes: int, margin: float) -> list[Conclusion]:
    out: list[Conclusion] = []
    best_name, ties = _best_and_ties(results, scored)
    best = by[best_name]
    if all(stuck_at_chance(m, classes, margin) for m in scored):
        return [Conclusion("all-chance", f"Every model is stuck at chance level (test accuracy at "
                           f"most {_pct(chance_level(classes) + margin)} with {classes} "
                           "classes): there is no meaningful winner.",
                           tuple(m.model for m in scored))]
    if ties:
        tied = [best_name, *ties]
        text = (f"{_names(tied)} tie for the highest mean test accuracy, "
                f"{_pct(best.metrics['test_accuracy'].mean)}.")
        rest = [c for c in results.ranking if c.other not in ties]
        if rest:
            runner = by[rest[0].other]
            text += (f" The next model, {runner.model} ({_acc_short(runner)}), is "
                     f"{_pp(rest[0].diff)} behind.")
        out.append(Conclusion("tie", text, tuple(tied)))
        return out
    text = f"{best_name} has the highest mean test accuracy: {_acc(best)}."
    if results.ranking:
        first = results.ranking[0]
        runner = by[first.other]
        err_best = 1.0 - best.metrics["test_accuracy"].mean
        err_runner = 1.0 - runner.metrics["test_accuracy"].mean
        text += (f" It is {_pp(first.diff)} ahead of the runner-up {runner.model} "
                 f"({_acc_short(runner)})")
        if err_runner > 0:
            text += f", {(1 - err_best / err_runner) * 100:.0f}% fewer test errors"
        text += "."
    out.append(Conclusion("best", text, (best_name,)))
    return out


def points(c: Comparison, *, sign: float = 1.0) -> str:
    """'0.21 points (95 % CI 0.08 to 0.34)': a difference in test accuracy with its CI, in
    percentage points (``sign`` -1 reverses it); no CI with n = 1."""
    d, lo, hi = (sign * c.diff * 100, sign * c.ci_low * 100, sign * c.ci_high * 100)
    if math.isfinite(lo) and math.isfinite(hi):
        lo, hi = sorted((lo, hi))
        return f"{abs(d):.2f} points (95 % CI {lo:.2f} to {hi:.2f})"
    return f"{abs(d):.2f} points (no CI: n = 1)"


def _difference(c: Comparison) -> str:
    """'k5 is 0.21 points (95 % CI 0.08 to 0.34) above k3'."""
    where = "above" if c.diff >= 0 else "below"
    return f"{c.best} is {points(c)} {where} {c.other}"


def _within(c: Comparison) -> str:
    """'0.05 points above it, 95 % CI -0.20 to 0.30' (for use inside parentheses)."""
    amount, _, ci = points(c).partition(" (")
    return f"{amount} {'above' if c.diff >= 0 else 'below'} it, {ci.rstrip(')')}"


def _significance(results: StudyResults) -> list[Conclusion]:
    if not results.ranking:
        return []
    out: list[Conclusion] = []
    best = results.ranking[0].best
    tested = [c for c in results.ranking if c.n_best >= 2 and c.n_other >= 2]
    untested = [c for c in results.ranking if c.n_best < 2 or c.n_other < 2]
    family = results.ranked.text if results.ranked is not None else "no correction"
    if tested:
        first = results.ranking[0]
        if first in tested:
            out.append(Conclusion("significance", first.verdict, (first.best, first.other)))
        sig = [c for c in tested if c.significant]
        not_sig = [c for c in tested if not c.significant]
        parts = []
        if sig:
            parts.append("significantly better than " + _names(
                [f"{c.other} by {points(c)}" for c in sig]))
        if not_sig:
            parts.append("not significantly different from " + _names(
                [f"{c.other} ({_within(c)})" for c in not_sig]))
        if len(tested) > 1 or first not in tested:
            out.append(Conclusion(
                "significance",
                f"By {tests_used(tested)} with {family}, {best} is {'; '.join(parts)}. "
                "Significant means after the correction; the CIs are each comparison's own "
                "95 % interval.", (best, *(c.other for c in sig), *(c.other for c in not_sig))))
    adjacent = [c for c in results.adjacent if c.n_best >= 2 and c.n_other >= 2]
    if len(results.adjacent) > 1 and adjacent:
        steps = [_difference(c) + ("" if c.significant else " (not significant)")
                 for c in adjacent]
        out.append(Conclusion(
            "effect-sizes", "Down the ranking, model by model: " + "; ".join(steps) + ".",
            tuple(dict.fromkeys(m for c in adjacent for m in (c.best, c.other)))))
    if untested:
        single = sorted({c.best for c in untested if c.n_best < 2}
                        | {c.other for c in untested if c.n_other < 2})
        if not tested:
            gap = results.ranking[0].diff
            text = ("No significance claim can be made: every model ran once (n = 1), so there "
                    "is no confidence interval and no p-value, and the "
                    f"{_pp(gap)} gap between the top two may be seed-to-seed noise. "
                    "Rerun with `--repeats 5` (or `repeats: 5` in the study) to test it.")
        else:
            one = len(single) == 1
            text = (f"No significance claim can be made for {_names(single)}: "
                    f"{'it' if one else 'each'} ran once (n = 1). Rerun with more repeats to "
                    f"compare {'it' if one else 'them'} with a t-test.")
        out.append(Conclusion("no-claim", text, tuple(single)))
    return out


def race_summary(results: StudyResults) -> str | None:
    """The race in one sentence: how it ended, what it cost against every model's max seeds,
    and who was dropped when (None when the study did not race)."""
    r = results.race
    if r is None:
        return None
    info = results.meta.get("race") or {}
    stopped = info.get("stopped") if isinstance(info, dict) else None
    budget = info.get("budget") if isinstance(info, dict) else None
    seeds = {m.model: m.n for m in results.models}
    runs = sum(seeds.get(m, 0) for m in r.models)
    lims = {(lim.min, lim.max) for lim in r.limits.values()}
    span = (f"min {next(iter(lims))[0]}, max {next(iter(lims))[1]} seeds" if len(lims) == 1
            else "each model's own min and max seeds")
    if r.reason == "decided":
        end = (f"it was decided at look {len(r.looks)}: {r.winner} is significantly better "
               "than every other model")
    elif r.reason == "max":
        end = (f"it ran to the maximum seeds ({len(r.looks)} looks) with "
               f"{_names(r.alive)} still in it, not separated")
    elif stopped == "budget" and isinstance(budget, dict):
        what = (f"{budget['runs']} runs" if budget.get("runs") else
                f"{budget.get('hours')} h of training")
        end = (f"it stopped at look {len(r.looks)} when the budget ({what}) would have been "
               f"passed, with {_names(r.alive)} still in it")
    else:
        end = (f"it is unfinished after {len(r.looks)} looks ({stopped or 'stopped'}; rerun "
               f"to continue), with {_names(r.alive)} still in it")
    how = {"holm": "Holm's correction", "bh": "Benjamini-Hochberg's correction"}.get(
        r.correction, "no correction")
    text = (f"The race ({span}; α = {r.alpha:g}, {how}, spent over up to {r.max_looks} "
            f"looks): {end}. It cost {runs} runs, "
            f"{runs / r.fixed_runs * 100:.0f}% of the {r.fixed_runs} that every model's max "
            "seeds would take.")
    if r.drops:
        text += " " + " ".join(f"{m} {d.text}." for m, d in r.drops.items())
    return text


def _race(results: StudyResults) -> list[Conclusion]:
    text = race_summary(results)
    if text is None or results.race is None:
        return []
    return [Conclusion("race", text, tuple(results.race.models))]


def _overfit(models: list[ModelResult]) -> list[Conclusion]:
    gapped = [m for m in models if m.overfit_gap is not None]
    if len(gapped) == 0:
        return []
    top = max(gapped, key=lambda m: m.overfit_gap.mean)  # type: ignore[union-attr]
    gap = top.overfit_gap.mean  # type: ignore[union-attr]
    if gap < OVERFIT_NOTICEABLE:
        return [Conclusion("no-overfit", "No model over-fits noticeably: the largest final "
                           f"train − validation accuracy gap is {_pp(gap)} ({top.model}).",
                           (top.model,))]
    tr = top.metrics.get("train_accuracy")
    va = top.metrics.get("val_accuracy")
    detail = f" (train {_pct(tr.mean)}, validation {_pct(va.mean)})" if tr and va else ""
    others = ""
    if len(gapped) > 1:
        least = min(gapped, key=lambda m: m.overfit_gap.mean)  # type: ignore[union-attr]
        others = (f" The smallest gap is {least.model}'s, "
                  f"{_pp(least.overfit_gap.mean)}.")  # type: ignore[union-attr]
    return [Conclusion("overfit", f"{top.model} over-fits the most: its final train accuracy "
                       f"exceeds its validation accuracy by {_pp(gap)}{detail}.{others}",
                       (top.model,))]


def _efficiency(models: list[ModelResult], best_name: str | None, classes: int,
                margin: float) -> list[Conclusion]:
    """Seconds of training per accuracy point above chance, from each model's MEDIAN training
    time over its finished runs (one slow run on a shared machine does not decide it)."""
    chance = chance_level(classes)
    seconds = {m.model: t for m in models if (t := m.median_train_seconds) is not None and t > 0}
    cands = [m for m in models if m.model in seconds and "test_accuracy" in m.metrics
             and not stuck_at_chance(m, classes, margin)
             and m.metrics["test_accuracy"].mean > chance]
    if len(cands) < 2:
        return []

    def cost(m: ModelResult) -> float:
        return seconds[m.model] / ((m.metrics["test_accuracy"].mean - chance) * 100)

    def timing(m: ModelResult) -> str:
        t = seconds[m.model]
        return f"{t:.1f} s" if m.n < 2 else f"a median {t:.1f} s over {m.n} runs"

    def detail(m: ModelResult) -> str:
        return (f"{cost(m):.3g} s per point ({_pct(m.metrics['test_accuracy'].mean)} in "
                f"{timing(m)})")

    top = min(cands, key=cost)
    text = (f"{top.model} is the most time-efficient, measured in seconds of training per test "
            f"accuracy point above chance ({_pct(chance)}): {detail(top)}.")
    names = [top.model]
    if best_name is not None and best_name != top.model:
        best = next((m for m in cands if m.model == best_name), None)
        if best is not None:
            text += (f" The most accurate model, {best.model}, needs {detail(best)}: "
                     f"{cost(best) / cost(top):.1f}× the time per point.")
            names.append(best.model)
    fastest = min(cands, key=lambda m: seconds[m.model])
    if fastest.model not in names:
        text += (f" The fastest to train is {fastest.model} ({timing(fastest)}, "
                 f"{_pct(fastest.metrics['test_accuracy'].mean)}).")
        names.append(fastest.model)
    if any(m.n < 2 for m in cands):
        text += (" Models that ran once have a single timing, which a busy moment can "
                 "distort: repeats give a median.")
    load = machine_load(r for m in cands for r in m.finished)
    if load.shared:
        text += (f" The machine was shared while these runs were timed: {load.busy} of "
                 f"{load.runs} runs started with a load average above {SHARED_LOAD:g}× the "
                 f"CPU count (up to {load.peak_load:.1f} on {load.cpus} CPUs), so the timings, "
                 "and this comparison, are unreliable.")
    elif load.unknown:
        some = ("these runs" if load.unknown == load.runs
                else f"{load.unknown} of these {load.runs} runs")
        text += (f" The machine's load was not recorded for {some}, so whether they were "
                 "timed on a shared machine is unknown.")
    return [Conclusion("efficiency", text, tuple(names))]


def _diverged(m: ModelResult) -> Conclusion:
    n_div = m.statuses.get(RunStatus.DIVERGED, 0)
    total = sum(m.statuses.values())
    epochs = sorted(m.diverged_epochs)
    at = (f"at epoch {epochs[0]}" if len(set(epochs)) == 1
          else "at epochs " + ", ".join(str(e) for e in epochs))
    runs = "its only run" if total == 1 else f"{n_div} of {total} runs"
    text = f"{m.model} diverged (the training loss became NaN or infinite) {at} in {runs}"
    if m.n == 0:
        text += "; with no finished run it is left out of the comparison."
    else:
        text += f"; its statistics use the {m.n} finished run{'s' if m.n > 1 else ''} only."
    return Conclusion("diverged", text, (m.model,))


def _failed(m: ModelResult) -> Conclusion:
    counts = ", ".join(f"{v} {k}" for k, v in m.statuses.items())
    return Conclusion("failed", f"{m.model} has no finished run ({counts}); it is left out of "
                      "the comparison.", (m.model,))


def conclusions(results: StudyResults, *, classes: int | None = None,
                chance_margin: float = CHANCE_MARGIN) -> list[Conclusion]:
    """Plain-English findings about ``results``, most important first.

    ``classes`` (default: the output layer's units) sets chance level at 1/classes; a model
    whose mean test accuracy is at most chance + ``chance_margin`` is "stuck at chance".
    """
    classes = classes or num_classes(results)
    by = {m.model: m for m in results.models}
    scored = [m for m in results.models if "test_accuracy" in m.metrics]
    out: list[Conclusion] = []
    best_name: str | None = None
    if not scored:
        out.append(Conclusion("empty", "No model has a finished run yet: there is nothing to "
                              "compare.", ()))
    elif len(scored) == 1:
        m = scored[0]
        best_name = m.model
        text = (f"Only one model has results: {m.model}, test accuracy {_acc(m)}. There is "
                "nothing to compare it with")
        text += "." if m.n > 1 else ", and with n = 1 there is no confidence interval either."
        out.append(Conclusion("single", text, (m.model,)))
    else:
        out += _winner(results, by, scored, classes, chance_margin)
        if out[-1].kind != "all-chance":
            best_name = _best_and_ties(results, scored)[0]
        out += _significance(results)
        out += _race(results)
    stuck = [m for m in scored if stuck_at_chance(m, classes, chance_margin)]
    if stuck and not (out and out[0].kind == "all-chance"):
        for m in stuck:
            out.append(Conclusion(
                "chance", f"{m.model} is stuck at chance level: test accuracy "
                f"{_pct(m.metrics['test_accuracy'].mean)} ≤ "
                f"{_pct(chance_level(classes) + chance_margin)} (chance is "
                f"{_pct(chance_level(classes))} with {classes} classes); it has learned "
                "(almost) nothing, typically predicting one class.", (m.model,)))
    for m in results.models:
        if m.diverged_epochs:
            out.append(_diverged(m))
        elif m.n == 0:
            out.append(_failed(m))
    out += _overfit(scored)
    out += _efficiency(scored, best_name, classes, chance_margin)
    return out
