"""Statistics over repeated runs: per-model summaries, pairwise tests and rankings.

Pure functions of numbers (numpy + scipy.stats); no I/O. ``docs/statistics.md`` explains what is
computed and why Welch's t-test is the default. Values are in the metric's own units (accuracy as
a fraction, say); ``scale`` and ``unit`` only change how verdicts print them (x100 -> "pp").

Callers filter diverged runs before calling: a NaN or infinite value raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Comparison", "Summary", "compare", "rank", "summarize"]


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
    significant: bool  # p_value < alpha, and n >= 2 on both sides
    verdict: str  # one plain-English sentence


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
    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


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


def _paired_values(
    best_values: np.ndarray,
    other_values: np.ndarray,
    paired_seeds: tuple[Sequence[int], Sequence[int]],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both value arrays ordered by seed when both models ran the same seeds, else None."""
    seeds_best, seeds_other = (list(map(int, s)) for s in paired_seeds)
    for name, seeds, values in (
        ("best", seeds_best, best_values),
        ("other", seeds_other, other_values),
    ):
        if len(seeds) != len(values):
            raise ValueError(
                f"paired_seeds for the {name} model lists {len(seeds)} seeds "
                f"but there are {len(values)} values"
            )
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"paired_seeds for the {name} model repeats a seed: {seeds}")
    if set(seeds_best) != set(seeds_other):
        return None
    order_best = np.argsort(seeds_best, kind="stable")
    order_other = np.argsort(seeds_other, kind="stable")
    return best_values[order_best], other_values[order_other]


def _fmt(x: float, decimals: int) -> str:
    s = f"{x:.{decimals}f}"
    return s[1:] if s.startswith("-") and float(s) == 0.0 else s


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _verdict(
    best: str,
    other: str,
    n_best: int,
    n_other: int,
    diff: float,
    ci: tuple[float, float],
    p_value: float,
    method: str,
    significant: bool,
    degenerate: bool,
    *,
    confidence: float,
    higher_is_better: bool,
    scale: float,
    unit: str,
    decimals: int,
) -> str:
    sign = 1.0 if higher_is_better else -1.0
    adv = sign * diff * scale  # advantage of `best`, in display units
    lo, hi = sorted((sign * ci[0] * scale, sign * ci[1] * scale))
    u = f" {unit}" if unit else ""

    def amount(v: float) -> str:
        return f"{_fmt(v, decimals)}{u}"

    if n_best < 2 or n_other < 2:
        single = [f"{m} ran only once" for m, k in ((best, n_best), (other, n_other)) if k < 2]
        return (
            f"No claim can be made about {best} vs {other}: {' and '.join(single)} (n = 1), "
            f"so there is no confidence interval and no p-value "
            f"(observed difference {amount(abs(adv))})."
        )
    label = "Welch" if method == "welch" else "paired"
    if degenerate:  # zero spread: every run (or every paired difference) is identical
        if method == "welch":
            spread = "both models scored the same in every run"
        else:
            spread = "every paired difference is the same"
        if adv == 0.0:
            return (
                f"{best} and {other} tie: {spread} and the means are equal "
                f"(difference {amount(0.0)}, {label} p = 1): not significant."
            )
        verb = "beats" if adv > 0 else "is beaten by"
        tail = "significant." if significant else "not significant."
        return (
            f"{best} {verb} {other} by {amount(abs(adv))} with zero spread ({spread}), "
            f"so the t-test degenerates to {label} p = 0: {tail}"
        )
    pct = f"{confidence * 100:.6g} %"
    detail = f"({pct} CI {_fmt(lo, decimals)} to {_fmt(hi, decimals)}, {label} {_fmt_p(p_value)})"
    if adv == 0.0:
        return f"{best} and {other} tie (difference {amount(0.0)}, {detail[1:]}: not significant."
    if significant:
        verb = "beats" if adv > 0 else "is beaten by"
        return f"{best} {verb} {other} by {amount(abs(adv))} {detail}: significant."
    verb = "is ahead of" if adv > 0 else "is behind"
    return f"{best} {verb} {other} by {amount(abs(adv))} {detail}: not significant."


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
) -> Comparison:
    """Two-sided t-test and confidence interval of ``mean(best) - mean(other)``.

    Welch's unequal-variance t-test by default (runs of different models are independent
    samples). A paired t-test is used only when ``paired_seeds = (seeds_best, seeds_other)``
    shows that both models ran exactly the same set of seeds; values are then matched by seed.
    Different seed sets fall back to Welch; a seed list whose length differs from its values,
    or that repeats a seed, raises ``ValueError``.

    With n == 1 on either side, ``ci_low``, ``ci_high`` and ``p_value`` are nan, ``significant``
    is False and the verdict says no claim can be made. With zero spread (both groups constant,
    or constant paired differences) the test degenerates: equal means give p = 1 and CI (0, 0);
    different means give p = 0 and CI (diff, diff) - the limit as the spread goes to zero.

    ``scale``, ``unit``, ``decimals`` and ``higher_is_better`` only shape the verdict, which
    reports the advantage of ``best`` (``-diff`` when lower is better); the numeric fields are
    unscaled and signed as ``mean(best) - mean(other)``.
    """
    _check_level("alpha", alpha)
    _check_level("confidence", confidence)
    xb = _as_values(best_values, f"values of {best_name!r}")
    xo = _as_values(other_values, f"values of {other_name!r}")
    n_best, n_other = int(xb.size), int(xo.size)

    method = "welch"
    if paired_seeds is not None:
        matched = _paired_values(xb, xo, paired_seeds)
        if matched is not None:
            method = "paired"
            xb, xo = matched

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
            p_value = float(min(1.0, 2.0 * stats.t.sf(abs(t_stat), df)))
            half = _t_quantile(confidence, df) * se
            ci = (diff - half, diff + half)
        else:
            degenerate = True
            p_value = 1.0 if diff == 0.0 else 0.0
            ci = (diff, diff)

    significant = bool(n_best >= 2 and n_other >= 2 and p_value < alpha)
    verdict = _verdict(
        best_name,
        other_name,
        n_best,
        n_other,
        diff,
        ci,
        p_value,
        method,
        significant,
        degenerate,
        confidence=confidence,
        higher_is_better=higher_is_better,
        scale=scale,
        unit=unit,
        decimals=decimals,
    )
    return Comparison(
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
        verdict=verdict,
    )


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
) -> list[Comparison]:
    """Compare the best model against every other model, ordered from best to worst mean.

    The best model has the highest mean (lowest when ``higher_is_better`` is False); ties on
    the mean are broken by model name. The list has one ``Comparison`` per other model
    (empty for a single model; ``result[0].best`` names the winner otherwise). When ``seeds``
    maps both models to their seed lists, ``compare`` pairs them if the seed sets are equal.
    No multiple-comparison correction is applied (see docs/statistics.md).
    """
    if not results:
        raise ValueError("rank() needs at least one model")
    arrays = {name: _as_values(v, f"values of {name!r}") for name, v in results.items()}
    sign = -1.0 if higher_is_better else 1.0
    order = sorted(arrays, key=lambda name: (sign * _mean_var(arrays[name])[0], name))
    best = order[0]
    out: list[Comparison] = []
    for other in order[1:]:
        paired = None
        if seeds is not None and best in seeds and other in seeds:
            paired = (seeds[best], seeds[other])
        out.append(
            compare(
                best,
                arrays[best],
                other,
                arrays[other],
                paired_seeds=paired,
                alpha=alpha,
                confidence=confidence,
                scale=scale,
                unit=unit,
                higher_is_better=higher_is_better,
                decimals=decimals,
            )
        )
    return out
