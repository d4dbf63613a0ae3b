"""Racing decisions (archlab.analysis.racing): who stays in the race, who is dropped when and
why, the alpha spent over the looks, and the false-drop rate of races between equal models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from archlab.analysis.multiplicity import adjust_p_values
from archlab.analysis.racing import Limits, Race, race, spending_weights

Values = dict[str, dict[int, float | None]]


def matrix(means: dict[str, float], n: int, *, sd: float = 0.002, seed: int = 0) -> Values:
    """Each model's results by repeat: its mean, a seed effect all models share, own noise."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, sd, n)
    return {m: {r: float(mu + shared[r] + rng.normal(0, sd)) for r in range(n)}
            for m, mu in means.items()}


def limits(models: Values | dict[str, float], low: int = 3, high: int = 10
           ) -> dict[str, Limits]:
    return {m: Limits(low, high) for m in models}


def drive(full: Values, lim: dict[str, Limits], **kw: object) -> tuple[Race, int]:
    """Run a race as archlab.run.race does: start with nothing, hand it the runs it asks for
    (taken from ``full``), until it ends. Returns the race and the runs it was given."""
    given: Values = {m: {} for m in lim}
    while True:
        r = race(given, lim, **kw)  # type: ignore[arg-type]
        if r.finished:
            return r, sum(len(v) for v in given.values())
        for m, n in r.pending().items():
            for i in range(n):
                given[m][i] = full[m][i]


def test_spending_weights_sum_to_one() -> None:
    assert spending_weights(8) == pytest.approx([1 / 8] * 8)
    w = spending_weights(5, power=2.0)
    assert sum(w) == pytest.approx(1.0) and list(w) == sorted(w)  # more for later looks
    with pytest.raises(ValueError):
        spending_weights(0)


def test_clearly_worse_models_are_dropped_and_the_best_is_decided() -> None:
    full = matrix({"best": 0.99, "good": 0.97, "poor": 0.90, "bad": 0.50}, 10, sd=0.001)
    r, runs = drive(full, limits(full))
    assert r.finished and r.reason == "decided" and r.winner == "best"
    assert r.alive == ["best"]
    assert set(r.drops) == {"good", "poor", "bad"}
    for m, d in r.drops.items():
        assert d.against == "best" and d.comparison is not None
        assert d.comparison.best == "best" and d.comparison.other == m
        assert d.comparison.significant and d.comparison.p_adjusted < 0.05
        assert d.comparison.method == "paired" and d.seeds == r.targets[m]
        assert f"below best on their {d.seeds} shared seeds" in d.text
    assert runs == r.runs == sum(r.targets.values()) < r.fixed_runs == 40
    # the race replayed from every run there is decides exactly the same
    again = race(full, limits(full))
    assert (again.looks, again.drops, again.targets) == (r.looks, r.drops, r.targets)


def test_a_race_asks_for_its_runs_round_by_round() -> None:
    full = matrix({"a": 0.95, "b": 0.95, "c": 0.80}, 6, sd=0.002)
    lim = limits(full, 3, 6)
    start = race({}, lim)
    assert not start.finished and start.reason == "pending" and start.looks == []
    assert start.pending() == {"a": 3, "b": 3, "c": 3}
    partial = {m: {i: full[m][i] for i in range(3)} for m in full}
    partial["c"].pop(2)  # one run of the first round missing: still pending, nothing decided
    assert race(partial, lim).pending() == {"a": 3, "b": 3, "c": 3}
    partial["c"][2] = full["c"][2]
    after = race(partial, lim)
    assert len(after.looks) == 1 and after.looks[0].seeds == {"a": 3, "b": 3, "c": 3}
    assert after.pending() == {m: 4 for m in after.alive}


def test_equal_models_run_to_their_max() -> None:
    full = matrix({"a": 0.95, "b": 0.95}, 5, sd=0.002, seed=3)
    r, runs = drive(full, limits(full, 2, 5))
    assert r.reason == "max" and r.finished and r.winner is None
    assert r.targets == {"a": 5, "b": 5} and runs == 10 and len(r.looks) == 4


def test_race_p_values_are_spent_over_the_looks() -> None:
    """With 2 models and limits (2, 4) there are 3 looks, each spending a third of alpha:
    the pair's race p-value is the smallest of 3 x the paired t-test's p at 2, 3, 4 seeds."""
    a = [0.90, 0.91, 0.905, 0.912]
    b = [0.89, 0.905, 0.895, 0.91]  # paired p = 0.205, 0.038, 0.042 at 2, 3, 4 seeds
    r = race({"a": dict(enumerate(a)), "b": dict(enumerate(b))}, limits({"a": 0, "b": 0}, 2, 4))
    p = [stats.ttest_rel(a[:n], b[:n]).pvalue for n in (2, 3, 4)]
    # p < 0.05 at two looks, but not below a third of alpha at any: no drop, to the max
    assert r.reason == "max" and len(r.looks) == 3 and not r.drops
    assert r.p_values[frozenset("ab")] == pytest.approx(min(1.0, 3 * min(p)), rel=1e-9)
    assert [look.alpha for look in r.looks] == pytest.approx([0.05 / 3] * 3)


def test_drops_are_holm_over_every_pair_of_the_race() -> None:
    full = matrix({"a": 0.99, "b": 0.985, "c": 0.95, "d": 0.94}, 10, sd=0.002, seed=5)
    r = race(full, limits(full))
    pairs = [frozenset(p) for p in ("ab", "ac", "ad", "bc", "bd", "cd")]
    adjusted = dict(zip(pairs, adjust_p_values([r.p_values[p] for p in pairs], "holm"),
                        strict=True))
    assert r.drops
    for m, d in r.drops.items():
        assert d.comparison is not None and d.comparison.family == 6  # every pair of the race
        # the final q can only be smaller than at the drop; the drop was significant then
        assert adjusted[frozenset((d.against, m))] <= d.comparison.p_adjusted < 0.05


def test_a_model_without_results_is_dropped_and_a_diverged_run_unpairs_nothing_else() -> None:
    full = matrix({"a": 0.95, "b": 0.90}, 6, sd=0.001)
    full["dead"] = {i: None for i in range(6)}
    full["b"][1] = None  # one diverged run: b is compared on its other seeds
    r = race(full, limits(full, 3, 6))
    assert r.drops["dead"].look == 1 and r.drops["dead"].comparison is None
    assert "no finished run" in r.drops["dead"].text
    assert r.drops["b"].comparison is not None
    assert r.drops["b"].comparison.n_best == r.drops["b"].seeds - 1  # seed 1 left out


def test_a_fixed_repeats_model_takes_part_but_never_grows() -> None:
    full = matrix({"race": 0.95, "fixed": 0.95}, 8, sd=0.002, seed=1)
    r = race(full, {"race": Limits(3, 8), "fixed": Limits(3, 3)})
    assert r.targets["fixed"] == 3
    assert all(look.seeds["fixed"] == 3 for look in r.looks)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="correction"):
        race({}, {"a": Limits(3, 5)}, correction="bonferroni")
    with pytest.raises(ValueError, match="min <= max"):
        race({}, {"a": Limits(5, 3)})
    with pytest.raises(ValueError, match="at least one model"):
        race({}, {})


def test_races_between_equal_models_rarely_drop_one() -> None:
    """200 races of 10 equally good models (min 3, max 10 seeds): every drop is a false
    claim. The share of races with one stays at or below alpha, and each race costs the full
    100 runs or less."""
    rng = np.random.default_rng(7)
    names = [f"m{i}" for i in range(10)]
    dropped = 0
    for _ in range(200):
        x = 0.95 + rng.normal(0, 0.002, 10)[None, :] + rng.normal(0, 0.002, (10, 10))
        r = race({m: dict(enumerate(x[i].tolist())) for i, m in enumerate(names)},
                 limits(names))
        dropped += bool(r.drops)
        assert r.runs <= 100
    assert dropped / 200 <= 0.05
