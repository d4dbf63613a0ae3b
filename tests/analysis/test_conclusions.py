"""Conclusions are written from the numbers: crafted results, one situation per test."""

from __future__ import annotations

import pytest

from archlab.analysis.conclusions import (
    Conclusion,
    chance_level,
    conclusions,
    num_classes,
    stuck_at_chance,
)
from archlab.analysis.machine_load import SHARED_LOAD, machine_load
from tests.analysis.crafted import model, results


def kinds(found: list[Conclusion]) -> list[str]:
    return [c.kind for c in found]


def one(found: list[Conclusion], kind: str) -> Conclusion:
    matches = [c for c in found if c.kind == kind]
    assert len(matches) == 1, (kind, found)
    return matches[0]


def test_clear_winner_with_repeats_is_significant() -> None:
    a = model("wide", [0.991, 0.990, 0.992, 0.989, 0.990])
    b = model("narrow", [0.951, 0.950, 0.953, 0.949, 0.952])
    found = conclusions(results(b, a))
    best = one(found, "best")
    assert best.models == ("wide",)
    assert "wide has the highest mean test accuracy" in best.text
    assert "3.94 pp ahead of the runner-up narrow" in best.text  # 99.04 - 95.10
    assert "n = 5" in best.text and "95 % CI" in best.text
    sig = [c for c in found if c.kind == "significance"]
    assert sig and "significant." in sig[0].text and "not significant" not in sig[0].text
    assert "no-claim" not in kinds(found)
    assert found[0].kind == "best"  # most important first


def test_winner_among_several_lists_who_it_beats_significantly() -> None:
    a = model("a", [0.990, 0.991, 0.992])
    b = model("b", [0.9895, 0.9915, 0.9905])  # within noise of a
    c = model("c", [0.90, 0.91, 0.905])  # clearly worse
    found = conclusions(results(a, b, c))
    summary = [x for x in found if x.kind == "significance" and "t-tests" in x.text]
    assert len(summary) == 1
    assert "significantly better than c" in summary[0].text
    assert "not significantly different from b" in summary[0].text


def test_n_equals_one_makes_no_significance_claim() -> None:
    found = conclusions(results(model("a", [0.98]), model("b", [0.97])))
    assert one(found, "best").models == ("a",)
    claim = one(found, "no-claim")
    assert "No significance claim can be made" in claim.text
    assert "n = 1" in claim.text and "1.00 pp" in claim.text
    assert "significance" not in kinds(found)


def test_mixed_repeats_names_the_models_that_ran_once() -> None:
    a = model("a", [0.99, 0.991, 0.989])
    b = model("b", [0.95, 0.951, 0.949])
    c = model("c", [0.96])
    found = conclusions(results(a, b, c))
    claim = one(found, "no-claim")
    assert claim.models == ("c",) and "c" in claim.text and "ran once" in claim.text
    assert "significance" in kinds(found)


def test_tie_for_best_single_runs() -> None:
    found = conclusions(results(model("a", [0.98]), model("b", [0.98]), model("c", [0.95])))
    tie = one(found, "tie")
    assert set(tie.models) == {"a", "b"}
    assert "tie for the highest mean test accuracy, 98.00%" in tie.text
    assert "c (95.00%, n = 1), is 3.00 pp behind" in tie.text
    assert "best" not in kinds(found)
    assert "no-claim" in kinds(found)


def test_tie_with_repeats() -> None:
    found = conclusions(results(model("a", [0.97, 0.98, 0.99]), model("b", [0.99, 0.97, 0.98])))
    assert set(one(found, "tie").models) == {"a", "b"}
    verdict = [c for c in found if c.kind == "significance"]
    assert verdict and "tie" in verdict[0].text


def test_single_model() -> None:
    found = conclusions(results(model("only", [0.97])))
    single = one(found, "single")
    assert "Only one model" in single.text and "n = 1" in single.text
    assert not {"best", "tie", "no-claim", "significance", "efficiency"} & set(kinds(found))


def test_no_results_at_all() -> None:
    found = conclusions(results(model("broken", [], failed=2)))
    assert kinds(found)[0] == "empty"
    failed = one(found, "failed")
    assert "broken has no finished run (2 failed)" in failed.text


def test_diverged_model() -> None:
    ok = model("ok", [0.98])
    boom = model("boom", [], diverged=[3])
    found = conclusions(results(ok, boom))
    div = one(found, "diverged")
    assert div.models == ("boom",)
    assert "boom diverged" in div.text and "at epoch 3" in div.text
    assert "its only run" in div.text and "left out of the comparison" in div.text
    assert "failed" not in kinds(found)  # a diverged model is not reported twice
    assert one(found, "single").models == ("ok",)


def test_partly_diverged_model_uses_its_finished_runs() -> None:
    m = model("flaky", [0.97, 0.975], diverged=[2, 5])
    found = conclusions(results(m, model("other", [0.96, 0.961])))
    div = one(found, "diverged")
    assert "at epochs 2, 5 in 2 of 4 runs" in div.text
    assert "its statistics use the 2 finished runs only" in div.text


def test_stuck_at_chance_like_notebook_001() -> None:
    deep = model("cnn7", [0.1135])  # notebook 001's 7-block CNN
    good = model("cnn3", [0.99])
    found = conclusions(results(good, deep))
    stuck = one(found, "chance")
    assert stuck.models == ("cnn7",)
    assert "11.35% ≤ 12.00%" in stuck.text and "chance is 10.00% with 10 classes" in stuck.text
    assert one(found, "best").models == ("cnn3",)
    assert stuck_at_chance(deep, 10) and not stuck_at_chance(good, 10)
    assert not stuck_at_chance(model("almost", [0.125]), 10)


def test_every_model_at_chance_has_no_winner() -> None:
    found = conclusions(results(model("a", [0.1135]), model("b", [0.098])))
    assert kinds(found)[0] == "all-chance"
    assert "no meaningful winner" in found[0].text
    assert "best" not in kinds(found) and "chance" not in kinds(found)
    assert "efficiency" not in kinds(found)


def test_most_overfitting_model() -> None:
    found = conclusions(results(model("tight", [0.98], gap=0.002),
                                model("loose", [0.97], gap=0.06)))
    over = one(found, "overfit")
    assert over.models == ("loose",)
    assert "exceeds its validation accuracy by 6.00 pp" in over.text
    assert "smallest gap is tight's, 0.20 pp" in over.text


def test_no_noticeable_overfitting() -> None:
    found = conclusions(results(model("a", [0.98], gap=-0.01), model("b", [0.97], gap=0.001)))
    assert "largest final train − validation accuracy gap is 0.10 pp (b)" in \
        one(found, "no-overfit").text


def test_most_time_efficient_model() -> None:
    slow = model("slow", [0.99], seconds=100.0)
    fast = model("fast", [0.97], seconds=5.0)
    chance = model("chance", [0.10], seconds=0.1)  # fastest, but learned nothing
    found = conclusions(results(slow, fast, chance))
    eff = one(found, "efficiency")
    assert eff.models[0] == "fast"
    # 5 s / 87 points above chance; 100 s / 89 points
    assert "0.0575 s per point (97.00% in 5.0 s)" in eff.text
    assert "slow, needs 1.12 s per point" in eff.text
    assert "chance" not in eff.text.replace("above chance", "")


def test_time_efficiency_uses_the_median_timing() -> None:
    """One run timed while the machine was busy (300 s instead of 10 s) does not decide it."""
    steady = model("steady", [0.97, 0.971, 0.969], seconds=[20.0, 21.0, 19.0])
    noisy = model("noisy", [0.97, 0.969, 0.971], seconds=[10.0, 300.0, 11.0])
    eff = one(conclusions(results(steady, noisy)), "efficiency")
    assert eff.models[0] == "noisy"  # by the mean (107 s) it would be the least efficient
    assert "(97.00% in a median 11.0 s over 3 runs)" in eff.text
    assert "single timing" not in eff.text


def test_single_timings_are_flagged() -> None:
    eff = one(conclusions(results(model("a", [0.98], seconds=5.0),
                                  model("b", [0.97], seconds=9.0))), "efficiency")
    assert "Models that ran once have a single timing" in eff.text


@pytest.mark.parametrize("load", [7.5, [7.5, 3.0, 1.0]])
def test_a_shared_machine_is_named(load: object) -> None:
    busy = {"load_average": load, "cpu_count": 2}
    quiet = {"load_average": 0.3, "cpu_count": 2}
    a = model("a", [0.98, 0.981], seconds=5.0, environment=busy)
    b = model("b", [0.97, 0.971], seconds=9.0, environment=quiet)
    eff = one(conclusions(results(a, b)), "efficiency")
    assert ("The machine was shared while these runs were timed: 2 of 4 runs started with a "
            f"load average above {SHARED_LOAD:g}× the CPU count (up to 7.5 on 2 CPUs)") in eff.text
    assert "unreliable" in eff.text
    load_info = machine_load(r for m in (a, b) for r in m.runs)
    assert (load_info.runs, load_info.recorded, load_info.busy) == (4, 4, 2)


def test_a_quiet_machine_and_an_unknown_load() -> None:
    quiet = {"load_average": 1.9, "cpu_count": 2}  # busy with our own run, not shared
    eff = one(conclusions(results(model("a", [0.98, 0.981], seconds=5.0, environment=quiet),
                                  model("b", [0.97, 0.971], seconds=9.0,
                                        environment=quiet))), "efficiency")
    assert "shared" not in eff.text and "not recorded" not in eff.text
    eff = one(conclusions(results(model("a", [0.98, 0.981], seconds=5.0),
                                  model("b", [0.97, 0.971], seconds=9.0,
                                        environment={"cpu_count": 2}))), "efficiency")
    assert "The machine's load was not recorded for these runs, so whether they were timed " \
        "on a shared machine is unknown." in eff.text
    eff = one(conclusions(results(model("a", [0.98, 0.981], seconds=5.0, environment=quiet),
                                  model("b", [0.97, 0.971], seconds=9.0))), "efficiency")
    assert "not recorded for 2 of these 4 runs" in eff.text


def test_significance_names_the_test_used() -> None:
    a = model("a", [0.990, 0.991, 0.992], seeds=[1, 2, 3])
    b = model("b", [0.9895, 0.9915, 0.9905], seeds=[1, 2, 3])
    c = model("c", [0.90, 0.91, 0.905], seeds=[7, 8, 9])
    found = conclusions(results(a, b, c))
    summary = next(x for x in found if x.kind == "significance" and "t-tests" in x.text)
    assert summary.text.startswith("By paired t-tests (runs matched by seed) and Welch's "
                                   "t-tests with Holm's correction over the 3 pairwise "
                                   "comparisons (family-wise α = 0.05)")
    paired = conclusions(results(a, b, model("c", [0.90, 0.91, 0.905], seeds=[3, 2, 1])))
    summary = next(x for x in paired if x.kind == "significance" and "t-tests" in x.text)
    assert summary.text.startswith("By paired t-tests (runs matched by seed) with Holm's")
    assert all("Welch's or paired" not in x.text for x in [*found, *paired])


def test_number_of_classes_comes_from_the_dataset_when_recorded() -> None:
    r = results(model("a", [0.5]), model("b", [0.6]),
                meta={"data_sizes": {"train": 1, "val": 1, "test": 1, "classes": 47}})
    assert num_classes(r) == 47


def test_number_of_classes_comes_from_the_output_layer() -> None:
    layers = ["Flatten", {"Dense": {"units": 100, "activation": "softmax"}}]
    r = results(model("a", [0.02], layers=layers), model("b", [0.5], layers=layers))
    assert num_classes(r) == 100
    assert chance_level(100) == pytest.approx(0.01)
    assert one(conclusions(r), "chance").models == ("a",)
    assert num_classes(results(model("x", [], failed=1, layers=["Flatten"]))) == 10


def test_conclusion_prints_as_its_text() -> None:
    c = Conclusion("best", "a wins", ("a",))
    assert str(c) == "a wins"
