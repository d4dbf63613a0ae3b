"""Statistics over repeated runs: per-model summaries, pairwise tests and rankings.

Pure functions of numbers (numpy + scipy.stats); no I/O. ``docs/statistics.md`` explains what is
computed and why Welch's t-test is the default. Values are in the metric's own units (accuracy as
a fraction, say); ``scale`` and ``unit`` only change how verdicts print them (x100 -> "pp").

Rankings, which test every pair of models and correct the whole family for multiplicity, are
in :mod:`archlab.analysis.multiplicity`.

Callers filter diverged runs before calling: a NaN or infinite value raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

__all__ = [
    "CORRECTIONS",
    "Comparison",
    "Summary",
    "as_values",
    "check_level",
    "compare",
    "mean_var",
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


def as_values(values: Sequence[float], what: str = "values") -> np.ndarray:
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


def check_level(name: str, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {level!r}")


def mean_var(x: np.ndarray) -> tuple[float, float]:
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
    check_level("confidence", confidence)
    x = as_values(values)
    n = int(x.size)
    mean, var = mean_var(x)
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
    check_level("alpha", alpha)
    check_level("confidence", confidence)
    xb = as_values(best_values, f"values of {best_name!r}")
    xo = as_values(other_values, f"values of {other_name!r}")

    method = "welch"
    if paired_seeds is not None:
        matched = _paired_values(xb, xo, paired_seeds, common_seeds)
        if matched is not None:
            method = "paired"
            xb, xo = matched
    n_best, n_other = int(xb.size), int(xo.size)

    mb, _ = mean_var(xb)
    mo, _ = mean_var(xo)
    diff = mb - mo
    nan = math.nan
    ci: tuple[float, float] = (nan, nan)
    p_value = nan
    degenerate = False

    if n_best >= 2 and n_other >= 2:
        if method == "paired":
            d_mean, d_var = mean_var(xb - xo)
            diff = d_mean  # equals mb - mo up to rounding; exactly 0 for identical runs
            se2 = d_var / n_best
            df = float(n_best - 1)
        else:
            _, vb = mean_var(xb)
            _, vo = mean_var(xo)
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
