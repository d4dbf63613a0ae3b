"""Tests of archlab.analysis.stats against scipy/numpy and against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from archlab.analysis.multiplicity import rank
from archlab.analysis.stats import Comparison, Summary, compare, summarize

# Independent samples with different spreads and sizes (non-degenerate).
SAMPLES = [
    ([0.99, 0.991, 0.989], [0.985, 0.987, 0.983, 0.989]),
    ([0.981, 0.984, 0.979, 0.986, 0.983], [0.975, 0.981, 0.978]),
    ([1.0, 2.0, 3.5], [0.0, 1.0, 2.0, 5.0]),
    ([0.9, 0.95], [0.91, 0.93]),
    ([0.5, 0.52, 0.49, 0.51, 0.5, 0.53], [0.4, 0.6, 0.45, 0.55, 0.5, 0.52]),
]


# ---------------------------------------------------------------- summarize


@pytest.mark.parametrize(
    "values",
    [
        [0.99, 0.991, 0.989],
        [0.97, 0.98],
        [1.0, 2.0, 3.0, 4.0, 10.0],
        list(np.linspace(0.9, 0.99, 10)),
    ],
)
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_summarize_matches_numpy_and_scipy(values: list[float], confidence: float) -> None:
    s = summarize(values, confidence)
    x = np.asarray(values)
    assert s.n == len(values)
    assert s.mean == pytest.approx(np.mean(x), rel=1e-12)
    assert s.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)
    lo, hi = stats.t.interval(confidence, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert s.ci_low == pytest.approx(lo, rel=1e-12)
    assert s.ci_high == pytest.approx(hi, rel=1e-12)


def test_summarize_hand_computed() -> None:
    # values 0.99, 0.991, 0.989: mean = 0.99, deviations 0, +0.001, -0.001
    # variance = (0 + 1e-6 + 1e-6) / (3 - 1) = 1e-6 -> std = 0.001
    # sem = 0.001 / sqrt(3) = 0.0005773502691896258
    # t_{0.975, 2} = 4.302652729911275 -> half width = 4.302652729911275 * sem
    #                                                 = 0.0024841377118437528
    s = summarize([0.99, 0.991, 0.989])
    assert s == Summary(n=3, mean=s.mean, std=s.std, ci_low=s.ci_low, ci_high=s.ci_high)
    assert s.mean == pytest.approx(0.99, abs=1e-15)
    assert s.std == pytest.approx(0.001, rel=1e-9)
    assert s.ci_low == pytest.approx(0.99 - 0.0024841377118437528, rel=1e-12)
    assert s.ci_high == pytest.approx(0.99 + 0.0024841377118437528, rel=1e-12)
    assert s.ci_low == pytest.approx(0.9875158622881562, rel=1e-12)
    assert s.ci_high == pytest.approx(0.9924841377118437, rel=1e-12)


def test_summarize_single_run_has_no_std_or_ci() -> None:
    s = summarize([0.987])
    assert s.n == 1
    assert s.mean == 0.987
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)


@pytest.mark.parametrize("values", [[0.99, 0.99, 0.99], [0.1, 0.1], [3.0] * 7])
def test_summarize_identical_values(values: list[float]) -> None:
    s = summarize(values)
    assert s.mean == values[0]  # exact, no rounding noise
    assert s.std == 0.0
    assert s.ci_low == s.ci_high == values[0]


@pytest.mark.parametrize(
    ("values", "confidence", "match"),
    [
        ([], 0.95, "empty"),
        ([0.9, math.nan], 0.95, "non-finite"),
        ([math.inf, 0.9], 0.95, "non-finite"),
        ([[0.9, 0.8]], 0.95, "flat"),
        ([0.9, 0.8], 0.0, "confidence"),
        ([0.9, 0.8], 1.0, "confidence"),
        ([0.9, 0.8], 95, "confidence"),
    ],
)
def test_summarize_rejects_bad_input(values: list, confidence: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        summarize(values, confidence)


# ---------------------------------------------------------------- compare: Welch


@pytest.mark.parametrize(("best", "other"), SAMPLES)
def test_welch_p_value_matches_scipy(best: list[float], other: list[float]) -> None:
    c = compare("a", best, "b", other)
    ref = stats.ttest_ind(best, other, equal_var=False)
    assert c.method == "welch"
    assert (c.n_best, c.n_other) == (len(best), len(other))
    assert c.diff == pytest.approx(np.mean(best) - np.mean(other), rel=1e-12, abs=1e-15)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.significant == (ref.pvalue < 0.05)
    if hasattr(ref, "confidence_interval"):  # scipy >= 1.11
        lo, hi = ref.confidence_interval(0.95)
        assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-9)


def test_welch_ci_of_difference_hand_computed() -> None:
    best = [0.99, 0.991, 0.989]  # mean 0.99, var 1e-6, n 3
    other = [0.985, 0.987, 0.983, 0.989]  # mean 0.986, var (1+1+9+9)e-6/3 = 20e-6/3, n 4
    a, b = 1e-6 / 3, (20e-6 / 3) / 4  # var/n: 1/3 e-6 and 5/3 e-6
    se = math.sqrt(a + b)  # sqrt(2e-6)
    # Welch-Satterthwaite: (a+b)^2 / (a^2/2 + b^2/3) = 4 / (1/18 + 25/27) = 216/53
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / 3)
    assert df == pytest.approx(216 / 53, rel=1e-12)
    t_stat = 0.004 / se  # = 2 * sqrt(2)
    assert t_stat == pytest.approx(2 * math.sqrt(2), rel=1e-9)
    half = stats.t.ppf(0.975, 216 / 53) * se  # 2.7562848743595714 * 0.00141421... = 0.0038980
    assert half == pytest.approx(0.003897975451083128, rel=1e-9)

    c = compare("m7", best, "m3", other)
    assert c.diff == pytest.approx(0.004, rel=1e-9)
    assert c.ci_low == pytest.approx(0.004 - 0.003897975451083128, rel=1e-7)
    assert c.ci_high == pytest.approx(0.004 + 0.003897975451083128, rel=1e-7)
    assert c.p_value == pytest.approx(2 * stats.t.sf(2 * math.sqrt(2), 216 / 53), rel=1e-9)
    assert c.p_value == pytest.approx(0.046407209926477164, rel=1e-7)
    assert c.significant
    assert c.verdict == (
        "m7 beats m3 by 0.40 pp (95 % CI 0.01 to 0.79, Welch p = 0.046): significant."
    )


def test_confidence_level_changes_ci_not_p() -> None:
    best, other = SAMPLES[1]
    c95 = compare("a", best, "b", other)
    c99 = compare("a", best, "b", other, confidence=0.99)
    assert c99.p_value == c95.p_value
    assert c99.ci_low < c95.ci_low < c95.ci_high < c99.ci_high
    assert "99 % CI" in c99.verdict


# ---------------------------------------------------------------- compare: paired


PAIRED = [
    ([0.99, 0.991, 0.989, 0.992], [0.988, 0.990, 0.989, 0.989]),
    ([0.95, 0.96, 0.94], [0.94, 0.955, 0.93]),
    ([1.0, 2.0, 3.0, 4.0, 6.0], [0.5, 2.1, 2.2, 3.9, 5.0]),
]


@pytest.mark.parametrize(("best", "other"), PAIRED)
def test_paired_p_value_matches_scipy(best: list[float], other: list[float]) -> None:
    seeds = list(range(100, 100 + len(best)))
    c = compare("a", best, "b", other, paired_seeds=(seeds, seeds))
    ref = stats.ttest_rel(best, other)
    assert c.method == "paired"
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    d = np.subtract(best, other)
    half = stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / math.sqrt(len(d))
    assert c.diff == pytest.approx(np.mean(d), rel=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    assert "paired p" in c.verdict


def test_paired_matches_values_by_seed_not_position() -> None:
    best, other = PAIRED[2]
    seeds = [11, 12, 13, 14, 15]
    perm = [3, 0, 4, 2, 1]
    shuffled_other = [other[i] for i in perm]
    shuffled_seeds = [seeds[i] for i in perm]
    c = compare("a", best, "b", shuffled_other, paired_seeds=(seeds, shuffled_seeds))
    assert c.method == "paired"
    assert c.p_value == pytest.approx(stats.ttest_rel(best, other).pvalue, rel=1e-9)


@pytest.mark.parametrize(
    ("seeds_best", "seeds_other"),
    [([1, 2, 3], [1, 2, 4]), ([1, 2, 3], [4, 5, 6])],
)
def test_different_seeds_fall_back_to_welch(seeds_best: list[int], seeds_other: list[int]) -> None:
    best, other = PAIRED[1]
    c = compare("a", best, "b", other, paired_seeds=(seeds_best, seeds_other))
    assert c.method == "welch"
    assert c.p_value == pytest.approx(stats.ttest_ind(best, other, equal_var=False).pvalue)


@pytest.mark.parametrize(
    ("seeds_best", "seeds_other", "match"),
    [([1, 2], [1, 2, 3], "2 seeds"), ([1, 1, 2], [1, 2, 3], "repeats")],
)
def test_bad_paired_seeds_raise(seeds_best: list[int], seeds_other: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compare(
            "a", [0.9, 0.91, 0.92], "b", [0.8, 0.81, 0.82], paired_seeds=(seeds_best, seeds_other)
        )


# ---------------------------------------------------------------- compare: edge cases


@pytest.mark.parametrize(
    ("best", "other", "single"),
    [
        ([0.99], [0.97, 0.98, 0.975], "m7 ran only once"),
        ([0.99, 0.991], [0.97], "m3 ran only once"),
        ([0.99], [0.97], "m7 ran only once and m3 ran only once"),
    ],
)
def test_single_run_makes_no_claim(best: list[float], other: list[float], single: str) -> None:
    c = compare("m7", best, "m3", other)
    assert not c.significant
    assert math.isnan(c.p_value) and math.isnan(c.ci_low) and math.isnan(c.ci_high)
    assert c.diff == pytest.approx(np.mean(best) - np.mean(other))
    assert c.verdict.startswith("No claim can be made about m7 vs m3")
    assert single in c.verdict
    assert "no confidence interval and no p-value" in c.verdict


def test_single_paired_run_makes_no_claim() -> None:
    c = compare("a", [0.99], "b", [0.98], paired_seeds=([7], [7]))
    assert c.method == "paired"
    assert not c.significant and math.isnan(c.p_value)
    assert "No claim" in c.verdict


@pytest.mark.parametrize(
    "values",
    [[0.98, 0.99, 0.97], [0.5, 0.5], [0.9, 0.95, 0.93, 0.91]],
)
@pytest.mark.parametrize("paired", [False, True])
def test_identical_groups_tie(values: list[float], paired: bool) -> None:
    seeds = list(range(len(values)))
    c = compare("a", values, "b", list(values), paired_seeds=(seeds, seeds) if paired else None)
    assert c.diff == 0.0
    assert c.p_value == 1.0
    assert not c.significant
    assert c.ci_low <= 0.0 <= c.ci_high
    assert c.verdict.startswith("a and b tie")
    assert c.verdict.endswith("not significant.")


def test_both_constant_and_equal() -> None:
    c = compare("a", [0.99, 0.99, 0.99], "b", [0.99, 0.99])
    assert (c.diff, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not c.significant
    assert "tie" in c.verdict and "same in every run" in c.verdict


def test_both_constant_and_different_does_not_crash() -> None:
    c = compare("a", [0.99, 0.99, 0.99], "b", [0.98, 0.98, 0.98])
    assert c.diff == pytest.approx(0.01)
    assert c.ci_low == c.ci_high == c.diff
    assert c.p_value == 0.0
    assert c.significant
    assert "zero spread" in c.verdict and "degenerates" in c.verdict


def test_constant_paired_difference_does_not_crash() -> None:
    seeds = [1, 2, 3]  # binary-exact values: every difference is exactly 0.25
    c = compare("a", [0.5, 0.75, 1.0], "b", [0.25, 0.5, 0.75], paired_seeds=(seeds, seeds))
    assert c.method == "paired"
    assert (c.diff, c.ci_low, c.ci_high, c.p_value) == (0.25, 0.25, 0.25, 0.0)
    assert c.significant
    assert "every paired difference is the same" in c.verdict


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on the reference
def test_one_group_constant_uses_the_other_variance() -> None:
    best, other = [0.75, 0.75, 0.75], [0.70, 0.72, 0.71, 0.705]  # 0.75 exact: scipy var is 0
    c = compare("a", best, "b", other)
    ref = stats.ttest_ind(best, other, equal_var=False)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert math.isfinite(c.ci_low) and math.isfinite(c.ci_high)


def test_clear_winner_is_significant() -> None:
    best = [0.992, 0.991, 0.993, 0.992, 0.990]
    other = [0.981, 0.983, 0.980, 0.982, 0.984]
    c = compare("m7", best, "m3", other)
    assert c.significant and c.p_value < 1e-4
    assert c.ci_low > 0
    assert c.verdict.startswith("m7 beats m3 by 0.96 pp (95 % CI ")
    assert "Welch p < 0.001" in c.verdict
    assert c.verdict.endswith(": significant.")


def test_overlapping_groups_not_significant() -> None:
    c = compare("m7", [0.99, 0.98, 0.985], "m3", [0.984, 0.99, 0.979])
    assert not c.significant
    assert c.ci_low < 0 < c.ci_high
    assert c.verdict.startswith("m7 is ahead of m3 by ")
    assert c.verdict.endswith(": not significant.")


def test_lower_is_better_reports_advantage() -> None:
    c = compare(
        "small",
        [0.031, 0.030, 0.032],
        "big",
        [0.050, 0.052, 0.049],
        higher_is_better=False,
        scale=1.0,
        unit="",
        decimals=3,
    )
    assert c.diff < 0  # signed as mean(best) - mean(other)
    assert c.ci_high < 0
    assert c.verdict.startswith("small beats big by 0.019 (95 % CI 0.0")


def test_swapped_arguments_say_behind() -> None:
    c = compare("m3", [0.981, 0.983, 0.980], "m7", [0.992, 0.991, 0.993])
    assert c.diff < 0 and c.significant
    assert c.verdict.startswith("m3 is beaten by m7 by ")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"confidence": 1.0}, "confidence")],
)
def test_compare_rejects_bad_levels(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compare("a", [0.9, 0.91], "b", [0.8, 0.82], **kwargs)


@pytest.mark.parametrize(
    ("best", "other", "match"),
    [([0.9, math.nan], [0.8, 0.81], "'a'"), ([0.9, 0.91], [], "'b'")],
)
def test_compare_rejects_bad_values(best: list[float], other: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compare("a", best, "b", other)


def test_comparison_is_frozen() -> None:
    c = compare("a", [0.9, 0.91], "b", [0.8, 0.82])
    assert isinstance(c, Comparison)
    with pytest.raises(AttributeError):
        c.p_value = 0.0  # type: ignore[misc]


# ---------------------------------------------------------------- rank

RESULTS = {
    "m1": [0.980, 0.982, 0.981],
    "m2": [0.990, 0.991, 0.989],
    "m3": [0.985, 0.986, 0.984],
    "m4": [0.970],
}


@pytest.mark.parametrize(
    ("higher_is_better", "expected"),
    [(True, ["m2", "m3", "m1", "m4"]), (False, ["m4", "m1", "m3", "m2"])],
)
def test_rank_orders_by_mean(higher_is_better: bool, expected: list[str]) -> None:
    out = rank(RESULTS, higher_is_better=higher_is_better, correction="none")
    assert [c.best for c in out] == [expected[0]] * 3
    assert [c.other for c in out] == expected[1:]
    for c in out:  # uncorrected, each is the lone comparison but for its family's size
        lone = compare(c.best, RESULTS[c.best], c.other, RESULTS[c.other],
                       higher_is_better=higher_is_better)
        assert (c.diff, c.method, c.significant, c.verdict) == (
            lone.diff, lone.method, lone.significant, lone.verdict)
        assert c.p_value == lone.p_value or (math.isnan(c.p_value) and math.isnan(lone.p_value))
        assert c.family == 3 and c.correction == "none"


def test_rank_verdicts() -> None:
    out = rank(RESULTS)
    assert out[0].significant and out[1].significant
    assert not out[2].significant and "No claim" in out[2].verdict  # m4 ran once


def test_rank_ties_broken_by_name() -> None:
    out = rank({"b": [0.9, 0.91], "a": [0.91, 0.9], "c": [0.5, 0.51]})
    assert (out[0].best, out[0].other, out[1].other) == ("a", "b", "c")
    assert out[0].verdict.startswith("a and b tie")


def test_rank_uses_paired_when_seeds_match() -> None:
    results = {"x": [0.99, 0.991, 0.989], "y": [0.988, 0.990, 0.987], "z": [0.98, 0.97, 0.975]}
    seeds = {"x": [1, 2, 3], "y": [3, 1, 2], "z": [7, 8, 9]}
    out = rank(results, seeds=seeds)
    assert [(c.other, c.method) for c in out] == [("y", "paired"), ("z", "welch")]
    y_by_seed = [0.990, 0.987, 0.988]  # y's values reordered to seeds 1, 2, 3
    assert out[0].p_value == pytest.approx(stats.ttest_rel(results["x"], y_by_seed).pvalue)


def test_rank_single_model_and_empty() -> None:
    assert rank({"only": [0.9, 0.91]}) == []
    with pytest.raises(ValueError):
        rank({})
    with pytest.raises(ValueError, match="'bad'"):
        rank({"ok": [0.9, 0.91], "bad": [0.9, math.nan]})
