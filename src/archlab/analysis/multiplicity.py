"""Many models at once: every pair compared and the whole family of tests corrected for
multiplicity (:func:`adjust_p_values`: Holm by default, Benjamini-Hochberg, or none), so a
comparison's ``significant`` always means "after the correction"; rankings built on them.

Pure functions of numbers; ``docs/statistics.md`` says what is computed and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from archlab.analysis.stats import (
    CORRECTIONS,
    Comparison,
    as_values,
    check_level,
    compare,
    mean_var,
    with_correction,
)

__all__ = ["PairKey", "Ranking", "adjust_p_values", "correction_text", "rank", "ranking",
           "rankings"]


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
    p_factors: Mapping[PairKey, float] | None = None,
) -> dict[str, Ranking]:
    """One :class:`Ranking` per group of models (a dataset, say), every pair within a group
    compared, and all those comparisons corrected as ONE family with ``correction``.

    Model names must be unique across groups (``seeds`` maps each to its seed list, for
    paired tests). ``p_values`` (keyed by the pair's two names) replaces a pair's own t-test
    p-value in the family: a race's p-values, already adjusted for the looks it took
    (:mod:`archlab.analysis.racing`); such a pair counts in the family even when one side ran
    once. ``p_factors`` multiplies a pair's own p-value (capped at 1) before the correction: a
    union bound over the seed counts a race could have left the pair with (see
    :mod:`archlab.analysis.compare`). Groups with fewer than two models get an empty ranking.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction: expected one of {', '.join(CORRECTIONS)}, received "
                         f"{correction!r}")
    check_level("alpha", alpha)
    sign = -1.0 if higher_is_better else 1.0
    orders: dict[str, list[str]] = {}
    raw: list[tuple[str, Comparison]] = []
    for group, results in groups.items():
        arrays = {name: as_values(v, f"values of {name!r}") for name, v in results.items()}
        order = sorted(arrays, key=lambda name: (sign * mean_var(arrays[name])[0], name))
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
    given, factors = p_values or {}, p_factors or {}

    def family_value(c: Comparison) -> float:
        key = frozenset((c.best, c.other))
        if key in given:
            return given[key]
        factor = factors.get(key, 1.0)
        # NaN (an untestable pair) stays NaN: it is not part of the family
        return c.p_value if factor == 1.0 or math.isnan(c.p_value) else \
            min(1.0, c.p_value * factor)

    family_p = [family_value(c) for _, c in raw]
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
