"""Multiple comparisons: the corrections against scipy and hand computations, the family a
ranking corrects, effect sizes of adjacent models, and the family-wise false-claim rate of
simulated studies whose models are all equally good."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from archlab.analysis.multiplicity import adjust_p_values, correction_text, ranking, rankings
from archlab.analysis.stats import compare

# ---------------------------------------------------------------- adjust_p_values


@pytest.mark.parametrize("seed", range(5))
def test_bh_matches_scipy_false_discovery_control(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.05, 7), rng.uniform(0, 1, 30), [0.01, 0.01, 1.0]])
    rng.shuffle(p)
    assert adjust_p_values(p, "bh") == pytest.approx(
        stats.false_discovery_control(p, method="bh").tolist(), rel=1e-12)


def test_holm_by_hand() -> None:
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005, 0.01, 0.03, 0.04, multiplied by
    # m - j + 1 = 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06,
    # 0.06. Back in the input's order: 0.03, 0.06, 0.06, 0.02.
    assert adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm") == pytest.approx(
        [0.03, 0.06, 0.06, 0.02], rel=1e-12)
    # Capped at 1: 0.4 * 3 = 1.2 -> 1.
    assert adjust_p_values([0.4, 0.5, 0.6], "holm") == pytest.approx([1.0, 1.0, 1.0])
    # Ties keep their order and both get the same value: 0.02 * 3 = 0.06, max(0.02 * 2, .06).
    assert adjust_p_values([0.02, 0.02, 0.5], "holm") == pytest.approx([0.06, 0.06, 0.5])


def test_bh_by_hand() -> None:
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005, 0.01, 0.03, 0.04, times m / j =
    # 4, 2, 4/3, 1: 0.02, 0.02, 0.04, 0.04; running minimum from the top: the same.
    assert adjust_p_values([0.01, 0.04, 0.03, 0.005], "bh") == pytest.approx(
        [0.02, 0.04, 0.04, 0.02], rel=1e-12)


def test_nan_is_not_part_of_the_family_and_none_changes_nothing() -> None:
    out = adjust_p_values([0.01, math.nan, 0.04], "holm")
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert adjust_p_values([0.01, 0.04], "none") == [0.01, 0.04]
    assert adjust_p_values([], "holm") == []
    with pytest.raises(ValueError, match="expected one of holm, bh, none"):
        adjust_p_values([0.1], "bonferroni")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_p_values([1.5], "holm")


# ---------------------------------------------------------------- ranking

SEEDS = [1, 2, 3, 4]
MODELS = {
    "k5": [0.9921, 0.9930, 0.9918, 0.9926],
    "k3": [0.9901, 0.9907, 0.9897, 0.9905],
    "m1": [0.9899, 0.9906, 0.9893, 0.9901],
    "mlp": [0.9801, 0.9812, 0.9790, 0.9805],
}


def test_every_pair_is_one_corrected_family() -> None:
    r = ranking(MODELS, seeds={m: SEEDS for m in MODELS})
    assert r.order == ["k5", "k3", "m1", "mlp"]
    assert r.family == 6 and len(r.pairs) == 6 and r.correction == "holm"
    raw = [c.p_value for c in r.pairs]
    assert [c.p_adjusted for c in r.pairs] == pytest.approx(adjust_p_values(raw, "holm"))
    for c in r.pairs:
        assert c.method == "paired" and c.family == 6
        assert c.significant == (c.p_adjusted < 0.05)
        assert "Holm-adjusted p" in c.verdict
    # the ranking's "best against each other" and the pairs are the same comparisons
    assert [(c.best, c.other) for c in r.against_best] == [("k5", "k3"), ("k5", "m1"),
                                                           ("k5", "mlp")]
    assert r.pair("mlp", "k3") is r.pairs[4]  # (k5, k3), (k5, m1), (k5, mlp), (k3, m1), ...


def test_adjacent_pairs_are_the_effect_sizes_with_paired_cis() -> None:
    r = ranking(MODELS, seeds={m: SEEDS for m in MODELS})
    assert [(c.best, c.other) for c in r.adjacent] == [("k5", "k3"), ("k3", "m1"),
                                                       ("m1", "mlp")]
    for c in r.adjacent:
        d = np.array(MODELS[c.best]) - np.array(MODELS[c.other])
        lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert c.diff == pytest.approx(d.mean(), rel=1e-12)
        assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-9)
    # without shared seeds the CI is Welch's
    welch = ranking(MODELS).adjacent[0]
    assert welch.method == "welch"
    assert welch.p_value == pytest.approx(
        stats.ttest_ind(MODELS["k5"], MODELS["k3"], equal_var=False).pvalue, rel=1e-9)


def test_correction_changes_what_is_significant() -> None:
    seeds = {m: SEEDS for m in MODELS}
    none = ranking(MODELS, seeds=seeds, correction="none")
    holm = ranking(MODELS, seeds=seeds, correction="holm")
    assert [c.p_value for c in none.pairs] == [c.p_value for c in holm.pairs]
    assert all(c.p_adjusted == c.p_value for c in none.pairs)
    assert all(h.p_adjusted >= n.p_adjusted for h, n in zip(holm.pairs, none.pairs, strict=True))
    # the uncorrected family claims at least as much as the corrected one
    assert sum(c.significant for c in none.pairs) >= sum(c.significant for c in holm.pairs)
    assert "Holm-adjusted" not in none.pairs[0].verdict


def test_groups_are_one_family_and_never_compared_across() -> None:
    out = rankings({"mnist": {"a": [0.99, 0.991, 0.989], "b": [0.98, 0.982, 0.981]},
                    "fashion": {"c": [0.90, 0.91, 0.905], "d": [0.88, 0.885, 0.882],
                                "e": [0.80, 0.81, 0.805]}})
    assert out["mnist"].family == out["fashion"].family == 4  # 1 + 3 pairs, one family
    assert {frozenset((c.best, c.other)) for c in out["mnist"].pairs} == {frozenset("ab")}
    assert len(out["fashion"].pairs) == 3


def test_common_seeds_pair_a_model_that_ran_fewer() -> None:
    a, b = [0.99, 0.98, 0.985, 0.99, 0.991], [0.97, 0.975, 0.972]
    lone = compare("a", a, "b", b, paired_seeds=([1, 2, 3, 4, 5], [1, 2, 3]))
    assert lone.method == "welch" and lone.n_best == 5
    common = compare("a", a, "b", b, paired_seeds=([1, 2, 3, 4, 5], [1, 2, 3]),
                     common_seeds=True)
    assert common.method == "paired" and (common.n_best, common.n_other) == (3, 3)
    assert common.p_value == pytest.approx(stats.ttest_rel(a[:3], b).pvalue, rel=1e-9)


def test_correction_text_says_method_and_family() -> None:
    assert correction_text("holm", 45) == ("Holm's correction over the 45 pairwise "
                                           "comparisons (family-wise α = 0.05)")
    assert "Benjamini-Hochberg" in correction_text("bh", 3)
    assert correction_text("none", 1).startswith("no multiple-comparison correction (1 pairwise "
                                                 "comparison,")
    assert "spent over the race's 8 looks" in correction_text("holm", 45, looks=8)


# ---------------------------------------------------------------- the family-wise error rate


def _equal_studies(count: int, k: int = 10, n: int = 5, seed: int = 2024
                   ) -> list[dict[str, list[float]]]:
    """``count`` simulated studies of ``k`` equally good models, ``n`` shared seeds each: a
    seed effect every model shares plus each run's own noise (0.2 pp each)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = 0.95 + rng.normal(0, 0.002, n)[None, :] + rng.normal(0, 0.002, (k, n))
        out.append({f"m{i}": x[i].tolist() for i in range(k)})
    return out


def test_holm_keeps_the_family_wise_false_claim_rate_at_alpha() -> None:
    """10 models with equal true accuracies, 200 simulated studies: any "significant" is a
    false claim. Holm keeps the share of studies with one at or below alpha; 45 uncorrected
    tests make one in most studies."""
    claims = {"holm": 0, "none": 0}
    for study in _equal_studies(200):
        seeds = {m: list(range(5)) for m in study}
        for correction in claims:
            r = ranking(study, seeds=seeds, correction=correction)
            assert r.family == 45
            claims[correction] += any(c.significant for c in r.pairs)
    assert claims["holm"] / 200 <= 0.05
    assert claims["none"] / 200 > 0.5  # 0.76 with this seed: far above alpha
