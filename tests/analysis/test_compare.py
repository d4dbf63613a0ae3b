"""Several studies' models in one family of tests: a raced study's pairs keep its race's
p-values, and a pair across studies whose seeds a race chose pays for it (crafted stores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archlab.analysis.compare import collect_comparison
from archlab.analysis.results import collect
from archlab.analysis.stats import Comparison
from tests.analysis.crafted import accuracy_store, raced_store

RACED = {"a": [0.950, 0.952, 0.949, 0.951, 0.953],  # to its max, 5 seeds
         "c": [0.851, 0.852, 0.850]}  # dropped at the first look, 3 seeds
FIXED = {"x": [0.948, 0.951, 0.947, 0.950, 0.949]}
SPLIT = {"validation": {"split": 0.1}}


def _pairs(directories: list[Path], correction: str = "none") -> dict[frozenset[str], Comparison]:
    comparison = collect_comparison(directories, correction=correction)
    (ranked,) = comparison.ranked.values()
    return {frozenset((c.best, c.other)): c for c in ranked.pairs}


def test_a_raced_pair_keeps_its_race_p_value_and_a_cross_pair_pays_for_the_race(
        tmp_path: Path) -> None:
    raced = raced_store(tmp_path / "raced", RACED, first_seed=20, limits=(3, 5), **SPLIT)
    fixed = accuracy_store(tmp_path / "fixed", FIXED, first_seed=20, **SPLIT)
    pairs = _pairs([raced, fixed])
    race = collect(raced).race
    assert race is not None
    # within the raced study: the race's own p-value, spent over its looks
    assert pairs[frozenset("ac")].p_adjusted == pytest.approx(race.p_values[frozenset("ac")])
    # across studies: the fixed-n p-value times the 3 seed counts (3, 4 or 5) the race could
    # have given a, and times 1 for x's fixed 5 (no correction here: nothing else changes it)
    for other in ("a", "c"):
        cross = pairs[frozenset((other, "x"))]
        assert cross.p_value < 1 / 3  # the factor shows
        assert cross.p_adjusted == pytest.approx(min(1.0, 3 * cross.p_value))


def test_two_races_multiply_their_counts_and_fixed_studies_pay_nothing(
        tmp_path: Path) -> None:
    first = raced_store(tmp_path / "r1", RACED, first_seed=20, limits=(3, 5), **SPLIT)
    second = raced_store(tmp_path / "r2", {"y": FIXED["x"]}, first_seed=20, limits=(2, 5),
                         **SPLIT)
    cross = _pairs([first, second])[frozenset("ay")]
    assert cross.p_adjusted == pytest.approx(min(1.0, 3 * 4 * cross.p_value))
    plain = accuracy_store(tmp_path / "plain", {"a": RACED["a"]}, first_seed=20, **SPLIT)
    fixed = accuracy_store(tmp_path / "fixed", FIXED, first_seed=20, **SPLIT)
    untouched = _pairs([plain, fixed])[frozenset("ax")]
    assert untouched.p_adjusted == pytest.approx(untouched.p_value)


def test_the_factor_enters_before_holm(tmp_path: Path) -> None:
    raced = raced_store(tmp_path / "raced", RACED, first_seed=20, limits=(3, 5), **SPLIT)
    fixed = accuracy_store(tmp_path / "fixed", FIXED, first_seed=20, **SPLIT)
    none, holm = _pairs([raced, fixed]), _pairs([raced, fixed], correction="holm")
    ordered = sorted(none.values(), key=lambda c: c.p_adjusted)
    m = len(ordered)
    running = 0.0
    for i, c in enumerate(ordered):  # Holm by hand over the family's (factored) p-values
        running = max(running, min(1.0, (m - i) * c.p_adjusted))
        key = frozenset((c.best, c.other))
        assert holm[key].p_adjusted == pytest.approx(running)
