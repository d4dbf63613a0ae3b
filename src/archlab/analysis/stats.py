"""Statistics over repeated runs: per-model summaries, pairwise tests and rankings.

Pure functions of numbers (numpy + scipy.stats); no I/O. ``docs/statistics.md`` explains what is
computed and why Welch's t-test is the default. Values are in the metric's own units (accuracy as
a fraction, say); ``scale`` and ``unit`` only change how verdicts print them (x100 -> "pp").

A ranking tests every pair of models and corrects the whole family of tests for multiplicity
(:func:`adjust_p_values`: Holm by default, Benjamini-Hochberg, or none): a comparison's
``significant`` always means "after the correction".

Callers filter diverged runs before calling: a NaN or infinite value raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

__all__ = [
    "CORRECTIONS",
    "Comparison",
    "Ranking",
    "Summary",
    "adjust_p_values",
    "compare",
    "correction_text",
    "rank",
    "ranking",
    "rankings",
    "summarize",
    "with_correction",
]

#: The multiple-comparison corrections: Holm's step-down (family-wise error rate, the
#: default), Benjamini-Hochberg's step-up (false discovery rate), or none.
CORRECTIONS = ("holm", "bh", "none")
_CORRECTION_LABEL = {"holm": "Holm-adjusted", "bh": "BH-adjusted"}


@dataclass(frozen=True)
class Summary:
    """One metric of one model over its ``n`` repeats."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan when n == 1
    ci_low: float  # Student-t confidence interval of the mean; nan when n < 2
    ci_high: float


@dataclass(frozen=True)
class Comparison:
    """The best model against another model on one metric."""

    best: str
    other: str
    n_best: int
    n_other: int
    diff: float  # mean(best) - mean(other), in the metric's units (not scaled)
    ci_low: float  # confidence interval of ``diff``; nan when either n < 2
    ci_high: float
    p_value: float  # two-sided; nan when either n < 2
    method: str  # "welch" or "paired"
    significant: bool  # p_adjusted < alpha, and n >= 2 on both sides
    verdict: str  # one plain-English sentence
    #: ``p_value`` after the multiple-comparison correction (and, in a race, after the alpha
    #: spent over its looks); equal to ``p_value`` for a lone comparison.
    p_adjusted: float = math.nan
    correction: str = "none"  # one of CORRECTIONS
    family: int = 1  # the number of comparisons corrected together


def _as_values(values: Sequence[float], what: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} is empty: at least one run is needed")
    if not np.all(np.isfinite(x)):
        bad = [float(v) for v in x[~np.isfinite(x)]]
        raise ValueError(
            f"{what} contains non-finite values {bad}; filter out diverged runs before "
            "computing statistics"
        )
    return x


def _check_level(name: str, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {level!r}")


def _mean_var(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (ddof=1), exact for constant samples (no rounding noise)."""
    if np.all(x == x[0]):
        return float(x[0]), 0.0
    return float(np.mean(x)), float(np.var(x, ddof=1))


def _t_quantile(confidence: float, df: float) -> float:
    # special.stdtrit is what stats.t.ppf evaluates, without its ~30 us of overhead per call
    # (a ranking of 10 models makes 45 comparisons; a race or a simulation, thousands).
    return float(special.stdtrit(df, 0.5 + confidence / 2.0))


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std and Student-t confidence interval of the mean of ``values``.

    ``CI = mean +/- t_{(1+confidence)/2, n-1} * std / sqrt(n)``. With n == 1 the std and the CI
    are nan; with zero spread the CI collapses to ``(mean, mean)``.
    Raises ``ValueError`` for no values, NaN/inf values or ``confidence`` outside (0, 1).
    """
    _check_level("confidence", confidence)
    x = _as_values(values)
    n = int(x.size)
    mean, var = _mean_var(x)
    if n == 1:
        return Summary(n=1, mean=mean, std=math.nan, ci_low=math.nan, ci_high=math.nan)
    std = math.sqrt(var)
    half = _t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return Summary(n=n, mean=mean, std=std, ci_low=mean - half, ci_high=mean + half)


def _check_seeds(name: str, seeds: list[int], values: np.ndarray) -> None:
    if len(seeds) != len(values):
        raise ValueError(
            f"paired_seeds for the {name} model lists {len(seeds)} seeds "
            f"but there are {len(values)} values"
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"paired_seeds for the {name} model repeats a seed: {seeds}")


def _paired_values(
    best_values: np.ndarray,
    other_values: np.ndarray,
    paired_seeds: tuple[Sequence[int], Sequence[int]],
    common: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both value arrays ordered by seed when both models ran the same seeds, else None.

    With ``common``, the values of the seeds both models ran (at least 2 of them), matched by
    seed, even when one model ran seeds the other did not."""
    seeds_best, seeds_other = (list(map(int, s)) for s in paired_seeds)
    _check_seeds("best", seeds_best, best_values)
    _check_seeds("other", seeds_other, other_values)
    if set(seeds_best) != set(seeds_other):
        if not common:
            return None
        shared = sorted(set(seeds_best) & set(seeds_other))
        if len(shared) < 2:
            return None
        where_best = {s: i for i, s in enumerate(seeds_best)}
        where_other = {s: i for i, s in enumerate(seeds_other)}
        return (best_values[[where_best[s] for s in shared]],
                other_values[[where_other[s] for s in shared]])
    order_best = np.argsort(seeds_best, kind="stable")
    order_other = np.argsort(seeds_other, kind="stable")
    return best_values[order_best], other_values[order_other]


def _fmt(x: float, decimals: int) -> str:
    s = f"{x:.{decimals}f}"
    return s[1:] if s.startswith("-") and float(s) == 0.0 else s


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass(frozen=True)
class _Format:
    """How verdicts print numbers (the numeric fields never change)."""

    confidence: float = 0.95
    higher_is_better: bool = True
    scale: float = 100.0
    unit: str = "pp"
    decimals: int = 2


def _verdict(c: Comparison, degenerate: bool, fmt: _Format) -> str:
    best, other, n_best, n_other = c.best, c.other, c.n_best, c.n_other
    sign = 1.0 if fmt.higher_is_better else -1.0
    adv = sign * c.diff * fmt.scale  # advantage of `best`, in display units
    lo, hi = sorted((sign * c.ci_low * fmt.scale, sign * c.ci_high * fmt.scale))
    u = f" {fmt.unit}" if fmt.unit else ""
    decimals = fmt.decimals

    def amount(v: float) -> str:
        return f"{_fmt(v, decimals)}{u}"

    if n_best < 2 or n_other < 2:
        single = [f"{m} ran only once" for m, k in ((best, n_best), (other, n_other)) if k < 2]
        return (
            f"No claim can be made about {best} vs {other}: {' and '.join(single)} (n = 1), "
            f"so there is no confidence interval and no p-value "
            f"(observed difference {amount(abs(adv))})."
        )
    label = "Welch" if c.method == "welch" else "paired"
    adjusted = ""
    if c.correction in _CORRECTION_LABEL and math.isfinite(c.p_adjusted):
        adjusted = f", {_CORRECTION_LABEL[c.correction]} {_fmt_p(c.p_adjusted)}"
    if degenerate:  # zero spread: every run (or every paired difference) is identical
        if c.method == "welch":
            spread = "both models scored the same in every run"
        else:
            spread = "every paired difference is the same"
        if adv == 0.0:
            return (
                f"{best} and {other} tie: {spread} and the means are equal "
                f"(difference {amount(0.0)}, {label} p = 1{adjusted}): not significant."
            )
        verb = "beats" if adv > 0 else "is beaten by"
        tail = "significant." if c.significant else "not significant."
        return (
            f"{best} {verb} {other} by {amount(abs(adv))} with zero spread ({spread}), "
            f"so the t-test degenerates to {label} p = 0{adjusted}: {tail}"
        )
    pct = f"{fmt.confidence * 100:.6g} %"
    detail = (f"({pct} CI {_fmt(lo, decimals)} to {_fmt(hi, decimals)}, {label} "
              f"{_fmt_p(c.p_value)}{adjusted})")
    if adv == 0.0:
        return f"{best} and {other} tie (difference {amount(0.0)}, {detail[1:]}: not significant."
    if c.significant:
        verb = "beats" if adv > 0 else "is beaten by"
        return f"{best} {verb} {other} by {amount(abs(adv))} {detail}: significant."
    verb = "is ahead of" if adv > 0 else "is behind"
    return f"{best} {verb} {other} by {amount(abs(adv))} {detail}: not significant."


def _degenerate(c: Comparison) -> bool:
    """Zero spread: the t-test's standard error was 0 (its CI collapsed onto the difference)."""
    return c.n_best >= 2 and c.n_other >= 2 and c.ci_low == c.ci_high


def compare(
    best_name: str,
    best_values: Sequence[float],
    other_name: str,
    other_values: Sequence[float],
    *,
    paired_seeds: tuple[Sequence[int], Sequence[int]] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    scale: float = 100.0,
    unit: str = "pp",
    higher_is_better: bool = True,
    decimals: int = 2,
    common_seeds: bool = False,
) -> Comparison:
    """Two-sided t-test and confidence interval of ``mean(best) - mean(other)``.

    Welch's unequal-variance t-test by default (runs of different models are independent
    samples). A paired t-test is used only when ``paired_seeds = (seeds_best, seeds_other)``
    shows that both models ran exactly the same set of seeds; values are then matched by seed.
    Different seed sets fall back to Welch; a seed list whose length differs from its values,
    or that repeats a seed, raises ``ValueError``. With ``common_seeds`` (a race, whose dropped
    models ran fewer seeds), models that share at least 2 seeds are compared with a paired
    t-test on those seeds only, and ``n_best``/``n_other`` are the number of shared seeds.

    With n == 1 on either side, ``ci_low``, ``ci_high`` and ``p_value`` are nan, ``significant``
    is False and the verdict says no claim can be made. With zero spread (both groups constant,
    or constant paired differences) the test degenerates: equal means give p = 1 and CI (0, 0);
    different means give p = 0 and CI (diff, diff) - the limit as the spread goes to zero.

    ``scale``, ``unit``, ``decimals`` and ``higher_is_better`` only shape the verdict, which
    reports the advantage of ``best`` (``-diff`` when lower is better); the numeric fields are
    unscaled and signed as ``mean(best) - mean(other)``. A lone comparison is not corrected
    (``p_adjusted == p_value``); :func:`ranking` corrects a family of them.
    """
    _check_level("alpha", alpha)
    _check_level("confidence", confidence)
    xb = _as_values(best_values, f"values of {best_name!r}")
    xo = _as_values(other_values, f"values of {other_name!r}")

    method = "welch"
    if paired_seeds is not None:
        matched = _paired_values(xb, xo, paired_seeds, common_seeds)
        if matched is not None:
            method = "paired"
            xb, xo = matched
    n_best, n_other = int(xb.size), int(xo.size)

    mb, _ = _mean_var(xb)
    mo, _ = _mean_var(xo)
    diff = mb - mo
    nan = math.nan
    ci: tuple[float, float] = (nan, nan)
    p_value = nan
    degenerate = False

    if n_best >= 2 and n_other >= 2:
        if method == "paired":
            d_mean, d_var = _mean_var(xb - xo)
            diff = d_mean  # equals mb - mo up to rounding; exactly 0 for identical runs
            se2 = d_var / n_best
            df = float(n_best - 1)
        else:
            _, vb = _mean_var(xb)
            _, vo = _mean_var(xo)
            a, b = vb / n_best, vo / n_other
            se2 = a + b
            # Welch-Satterthwaite; finite whenever se2 > 0 (one zero variance gives n - 1).
            df = se2**2 / (a**2 / (n_best - 1) + b**2 / (n_other - 1)) if se2 > 0 else nan
        if se2 > 0.0:
            se = math.sqrt(se2)
            t_stat = diff / se
            p_value = float(min(1.0, 2.0 * special.stdtr(df, -abs(t_stat))))  # = t.sf
            half = _t_quantile(confidence, df) * se
            ci = (diff - half, diff + half)
        else:
            degenerate = True
            p_value = 1.0 if diff == 0.0 else 0.0
            ci = (diff, diff)

    significant = bool(n_best >= 2 and n_other >= 2 and p_value < alpha)
    out = Comparison(
        best=best_name,
        other=other_name,
        n_best=n_best,
        n_other=n_other,
        diff=float(diff),
        ci_low=float(ci[0]),
        ci_high=float(ci[1]),
        p_value=float(p_value),
        method=method,
        significant=significant,
        verdict="",
        p_adjusted=float(p_value),
        correction="none",
        family=1,
    )
    fmt = _Format(confidence, higher_is_better, scale, unit, decimals)
    return replace(out, verdict=_verdict(out, degenerate, fmt))


# ---------------------------------------------------------------------------------------------
# Multiple comparisons


def with_correction(c: Comparison, p_adjusted: float, correction: str, family: int, *,
                    alpha: float = 0.05, confidence: float = 0.95,
                    higher_is_better: bool = True, scale: float = 100.0, unit: str = "pp",
                    decimals: int = 2) -> Comparison:
    """``c`` as one of a corrected family: its adjusted p-value, ``significant`` meaning
    ``p_adjusted < alpha`` (never with n < 2 on a side), and its verdict saying both p-values.
    The formatting arguments must be those ``c`` was computed with."""
    testable = c.n_best >= 2 and c.n_other >= 2
    p_adjusted = float(p_adjusted) if testable else math.nan
    significant = bool(testable and not math.isnan(p_adjusted) and p_adjusted < alpha)
    out = replace(c, p_adjusted=p_adjusted, correction=correction, family=family,
                  significant=significant)
    fmt = _Format(confidence, higher_is_better, scale, unit, decimals)
    return replace(out, verdict=_verdict(out, _degenerate(out), fmt))


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """The p-values of one family of tests after ``method`` (one of :data:`CORRECTIONS`).

    - ``holm``: Holm's step-down (1979): sorted ascending, ``p_(i)`` becomes
      ``max_{j <= i} min(1, (m - j + 1) p_(j))``; controls the family-wise error rate (the
      chance of any false "significant") at alpha, whatever the dependence between the tests.
    - ``bh``: Benjamini-Hochberg's step-up (1995): ``min_{j >= i} min(1, m p_(j) / j)``;
      controls the false discovery rate (the expected share of false ones among the
      "significant") for independent or positively dependent tests. Equal to
      ``scipy.stats.false_discovery_control(p, method="bh")``.
    - ``none``: unchanged.

    NaN entries (comparisons that could not be tested, n = 1) are not part of the family and
    stay NaN; ``m`` counts the others. Raises ``ValueError`` for an unknown method or a value
    outside [0, 1].
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {', '.join(CORRECTIONS)}, received "
                         f"{method!r}")
    p = np.asarray(p_values, dtype=float).reshape(-1)
    tested = ~np.isnan(p)
    values = p[tested]
    if np.any((values < 0) | (values > 1)):
        raise ValueError(f"p-values must lie in [0, 1], received {values.tolist()}")
    m = values.size
    out = np.full(p.shape, math.nan)
    if m == 0:
        return out.tolist()
    if method == "none":
        adjusted = values
    else:
        order = np.argsort(values, kind="stable")
        ranked = values[order]
        if method == "holm":
            steps = np.maximum.accumulate(ranked * (m - np.arange(m)))
        else:
            steps = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(steps, 1.0)
    out[tested] = adjusted
    return out.tolist()


def correction_text(correction: str, family: int, alpha: float = 0.05, looks: int = 1) -> str:
    """The sentence part that says how a family was corrected: "Holm's correction over the 45
    pairwise comparisons (α = 0.05)"."""
    tests = f"{family} pairwise comparison{'s' if family != 1 else ''}"
    spent = (f", with α spent over the race's {looks} looks" if looks > 1 else "")
    if correction == "holm":
        return f"Holm's correction over the {tests} (family-wise α = {alpha:g}{spent})"
    if correction == "bh":
        return (f"Benjamini-Hochberg's correction over the {tests} (false discovery rate "
                f"{alpha:g}{spent})")
    return f"no multiple-comparison correction ({tests}, α = {alpha:g} each{spent})"


@dataclass(frozen=True)
class Ranking:
    """Models ordered best first, with every pair compared and the family corrected."""

    order: list[str]  # best first (ties on the mean broken by name)
    against_best: list[Comparison]  # the best against each other model, in ranking order
    adjacent: list[Comparison]  # order[i] against order[i + 1]: the effect sizes
    pairs: list[Comparison]  # every pair, the one with the better mean first
    correction: str
    family: int  # comparisons in the corrected family
    alpha: float
    looks: int = 1  # > 1: the p-values are a race's, alpha spent over its looks

    @property
    def text(self) -> str:
        return correction_text(self.correction, self.family, self.alpha, self.looks)

    def pair(self, a: str, b: str) -> Comparison | None:
        """The comparison of models ``a`` and ``b`` (either order), None if not tested."""
        for c in self.pairs:
            if {c.best, c.other} == {a, b}:
                return c
        return None


PairKey = frozenset[str]


def rankings(
    groups: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    seeds: Mapping[str, Sequence[int]] | None = None,
    correction: str = "holm",
    alpha: float = 0.05,
    confidence: float = 0.95,
    higher_is_better: bool = True,
    scale: float = 100.0,
    unit: str = "pp",
    decimals: int = 2,
    common_seeds: bool = False,
    p_values: Mapping[PairKey, float] | None = None,
    looks: int = 1,
) -> dict[str, Ranking]:
    """One :class:`Ranking` per group of models (a dataset, say), every pair within a group
    compared, and all those comparisons corrected as ONE family with ``correction``.

    Model names must be unique across groups (``seeds`` maps each to its seed list, for
    paired tests). ``p_values`` (keyed by the pair's two names) replaces a pair's own t-test
    p-value in the family: a race's p-values, already adjusted for the looks it took
    (:mod:`archlab.analysis.racing`); such a pair counts in the family even when one side ran
    once. Groups with fewer than two models get an empty ranking.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {', '.join(CORRECTIONS)}, received "
                         f"{correction!r}")
    _check_level("alpha", alpha)
    sign = -1.0 if higher_is_better else 1.0
    orders: dict[str, list[str]] = {}
    raw: list[tuple[str, Comparison]] = []
    for group, results in groups.items():
        arrays = {name: _as_values(v, f"values of {name!r}") for name, v in results.items()}
        order = sorted(arrays, key=lambda name: (sign * _mean_var(arrays[name])[0], name))
        orders[group] = order
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                paired = None
                if seeds is not None and a in seeds and b in seeds:
                    paired = (seeds[a], seeds[b])
                raw.append((group, compare(
                    a, arrays[a], b, arrays[b], paired_seeds=paired, alpha=alpha,
                    confidence=confidence, scale=scale, unit=unit,
                    higher_is_better=higher_is_better, decimals=decimals,
                    common_seeds=common_seeds)))
    given = p_values or {}
    family_p = [given.get(frozenset((c.best, c.other)), c.p_value) for _, c in raw]
    adjusted = adjust_p_values(family_p, correction)
    family = sum(1 for p in family_p if not math.isnan(p))
    corrected: dict[str, list[Comparison]] = {g: [] for g in groups}
    for (group, c), p_adj in zip(raw, adjusted, strict=True):
        corrected[group].append(with_correction(
            c, p_adj, correction, family, alpha=alpha, confidence=confidence,
            higher_is_better=higher_is_better, scale=scale, unit=unit, decimals=decimals))
    out: dict[str, Ranking] = {}
    for group, order in orders.items():
        pairs = corrected[group]
        by_pair = {frozenset((c.best, c.other)): c for c in pairs}
        best = [by_pair[frozenset((order[0], o))] for o in order[1:]]
        adjacent = [by_pair[frozenset((a, b))] for a, b in zip(order, order[1:], strict=False)]
        out[group] = Ranking(order, best, adjacent, pairs, correction, family, alpha, looks)
    return out


def ranking(
    results: Mapping[str, Sequence[float]],
    *,
    seeds: Mapping[str, Sequence[int]] | None = None,
    correction: str = "holm",
    alpha: float = 0.05,
    confidence: float = 0.95,
    higher_is_better: bool = True,
    scale: float = 100.0,
    unit: str = "pp",
    decimals: int = 2,
    common_seeds: bool = False,
    p_values: Mapping[PairKey, float] | None = None,
    looks: int = 1,
) -> Ranking:
    """Every pair of ``results``' models compared, the family corrected (see :func:`rankings`,
    of which this is the one-group case). Raises ``ValueError`` for no model."""
    if not results:
        raise ValueError("ranking() needs at least one model")
    return rankings({"": results}, seeds=seeds, correction=correction, alpha=alpha,
                    confidence=confidence, higher_is_better=higher_is_better, scale=scale,
                    unit=unit, decimals=decimals, common_seeds=common_seeds,
                    p_values=p_values, looks=looks)[""]


def rank(
    results: Mapping[str, Sequence[float]],
    *,
    higher_is_better: bool = True,
    seeds: Mapping[str, Sequence[int]] | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
    scale: float = 100.0,
    unit: str = "pp",
    decimals: int = 2,
    correction: str = "holm",
) -> list[Comparison]:
    """Compare the best model against every other model, ordered from best to worst mean.

    The best model has the highest mean (lowest when ``higher_is_better`` is False); ties on
    the mean are broken by model name. The list has one ``Comparison`` per other model
    (empty for a single model; ``result[0].best`` names the winner otherwise). When ``seeds``
    maps both models to their seed lists, ``compare`` pairs them if the seed sets are equal.
    Every pair of models is tested and the whole family corrected with ``correction`` (Holm by
    default): the best is chosen after seeing the data, so correcting only its own ``k - 1``
    comparisons would not be enough (see docs/statistics.md).
    """
    return ranking(results, seeds=seeds, correction=correction, alpha=alpha,
                   confidence=confidence, higher_is_better=higher_is_better, scale=scale,
                   unit=unit, decimals=decimals).against_best
