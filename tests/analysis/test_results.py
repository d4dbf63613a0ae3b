"""collect() on real stores (crafted runs, nothing trained): what the table summarizes, which
runs count, how models are compared, and the files written from it."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from archlab.analysis.conclusions import conclusions
from archlab.analysis.results import collect, resolve_study_directory
from archlab.errors import StoreError
from archlab.report.tables import json_text, to_csv, write_tables
from archlab.store import RunStatus, Store
from tests.analysis.crafted import Run, write_store


def _no_nan(text: str) -> dict:
    def reject(constant: str) -> None:
        raise ValueError(f"bare {constant} in results.json")

    return json.loads(text, parse_constant=reject)


def test_collect_summarizes_finished_runs_per_model(tmp_path: Path) -> None:
    runs = [Run("a", 0, 0.98, seconds=10.0), Run("a", 1, 0.97, seconds=11.0),
            Run("a", 2, 0.99, seconds=95.0),  # one timing disturbed by a busy machine
            Run("b", 0, 0.90), Run("b", 1, None),  # failed
            Run("c", 0, 0.5, status=RunStatus.DIVERGED)]
    results = collect(write_store(tmp_path, runs, validation={"split": 0.1}))
    a, b, c = results.models
    assert [m.model for m in results.models] == ["a", "b", "c"]
    assert a.n == 3 and a.statuses == {RunStatus.FINISHED: 3}
    assert a.metrics["test_accuracy"].mean == pytest.approx(0.98)
    assert a.metrics["test_accuracy"].ci_low < 0.98 < a.metrics["test_accuracy"].ci_high
    assert a.train_seconds is not None and a.train_seconds.mean == pytest.approx(38.667, 1e-3)
    assert a.median_train_seconds == 11.0  # the median shrugs off the 95 s outlier
    assert a.overfit_gap is not None and a.overfit_gap.mean == pytest.approx(0.01)
    assert b.n == 1 and b.statuses == {RunStatus.FINISHED: 1, RunStatus.FAILED: 1}
    assert b.test_accuracies == [0.90] and len(b.seeds) == 1
    assert c.n == 0 and c.statuses == {RunStatus.DIVERGED: 1} and c.diverged_epochs == [1]
    assert "test_accuracy" not in c.metrics and c.median_train_seconds is None
    assert results.validation_is_test is False
    assert results.best() is a


def test_only_the_latest_plan_counts(tmp_path: Path) -> None:
    directory = write_store(tmp_path, [Run("a", 0, 0.9), Run("a", 1, 0.8), Run("b", 0, 0.7)])
    with Store(directory) as store:  # a later `archlab run` planned a's repeat 0 and b only
        store.set_meta(plan=["a-0", "b-0"])
    results = collect(directory)
    assert [(m.model, m.n) for m in results.models] == [("a", 1), ("b", 1)]
    assert collect(directory, run_ids=["a-1"]).models[0].test_accuracies == [0.8]
    assert [m.model for m in collect(directory, models=["b"]).models] == ["b"]


def test_collect_does_not_write_the_store(tmp_path: Path) -> None:
    directory = write_store(tmp_path, [Run("a", 0, 0.9), Run("b", 0, 0.8)])
    before = (directory / "store.sqlite").read_bytes()
    collect(directory)
    assert (directory / "store.sqlite").read_bytes() == before


def test_missing_store_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no archlab store here"):
        collect(tmp_path)
    assert not (tmp_path / "store.sqlite").exists()


# ---------------------------------------------------------------------------------------------
# Paired comparisons under common random numbers


def _repeats(model: str, accs: list[float], seeds: list[int]) -> list[Run]:
    return [Run(model, i, acc, seed=s) for i, (acc, s) in enumerate(zip(accs, seeds,
                                                                         strict=True))]


def test_shared_seeds_are_compared_with_the_paired_test(tmp_path: Path) -> None:
    """Common random numbers: repeat i of every model ran seed i, so the comparisons are
    paired (values matched by seed), and the conclusions say so."""
    seeds = [11, 12, 13, 14, 15]
    runs = (_repeats("a", [0.990, 0.985, 0.992, 0.987, 0.991], seeds)
            + _repeats("b", [0.986, 0.982, 0.989, 0.983, 0.988], seeds)
            + _repeats("c", [0.950, 0.946, 0.955, 0.949, 0.951], seeds))
    results = collect(write_store(tmp_path, runs))
    assert [c.method for c in results.ranking] == ["paired", "paired"]
    assert all("paired p" in c.verdict for c in results.ranking)
    # b trails a by 0.34-0.40 pp in every repeat: the paired test sees it, Welch's would not
    assert results.ranking[0].other == "b" and results.ranking[0].significant
    text = " ".join(c.text for c in conclusions(results))
    assert "By paired t-tests (runs matched by seed) with Holm's correction over the 3 " \
        "pairwise comparisons (family-wise α = 0.05)" in text
    assert "Welch" not in text and "Welch's or paired" not in text


def test_different_seeds_fall_back_to_welch_and_say_so(tmp_path: Path) -> None:
    runs = (_repeats("a", [0.990, 0.985, 0.992], [1, 2, 3])
            + _repeats("b", [0.986, 0.982, 0.989], [1, 2, 3])
            + _repeats("c", [0.950, 0.946, 0.955], [7, 8, 9]))
    results = collect(write_store(tmp_path, runs))
    assert {c.other: c.method for c in results.ranking} == {"b": "paired", "c": "welch"}
    text = " ".join(c.text for c in conclusions(results))
    assert "By paired t-tests (runs matched by seed) and Welch's t-tests with Holm's " \
        "correction" in text
    assert "Welch's or paired" not in text


def test_a_diverged_repeat_unpairs_the_comparison(tmp_path: Path) -> None:
    runs = (_repeats("a", [0.99, 0.98, 0.985], [1, 2, 3])
            + _repeats("b", [0.95, 0.96], [1, 2])
            + [Run("b", 2, 0.1, seed=3, status=RunStatus.DIVERGED)])
    results = collect(write_store(tmp_path, runs))
    assert [c.method for c in results.ranking] == ["welch"]
    assert "Welch p" in results.ranking[0].verdict


# ---------------------------------------------------------------------------------------------
# results.json / .csv


def test_results_json_is_strict_json_with_one_run(tmp_path: Path) -> None:
    results = collect(write_store(tmp_path, [Run("a", 0, 0.98), Run("b", 0, 0.97)]))
    data = _no_nan(json_text(results))
    a = data["models"][0]
    assert a["test_accuracy_mean"] == 0.98
    assert a["test_accuracy_std"] is None and a["test_accuracy_ci_low"] is None
    assert data["ranking"][0]["p_value"] is None and data["ranking"][0]["ci_low"] is None
    paths = write_tables(results)
    assert [p.name for p in paths] == ["results.md", "results.csv", "results.json"]
    assert _no_nan((tmp_path / "results.json").read_text()) == data
    rows = list(csv.DictReader(io.StringIO(to_csv(results))))
    assert rows[0]["test_accuracy_std"] == "" and "nan" not in to_csv(results).lower()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_results_json_with_repeats_has_numbers(tmp_path: Path) -> None:
    runs = _repeats("a", [0.98, 0.97, 0.99], [1, 2, 3]) + _repeats("b", [0.9, 0.91, 0.92],
                                                                   [1, 2, 3])
    data = _no_nan(json_text(collect(write_store(tmp_path, runs))))
    a = data["models"][0]
    assert math.isclose(a["test_accuracy_std"], 0.01)
    assert a["test_accuracy_ci_low"] < a["test_accuracy_mean"] < a["test_accuracy_ci_high"]
    assert data["ranking"][0]["method"] == "paired" and 0 <= data["ranking"][0]["p_value"] < 1


# ---------------------------------------------------------------------------------------------
# Which directory a study source names


def test_resolve_study_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_study_directory(tmp_path) == tmp_path
    (tmp_path / "s.yaml").write_text("name: kernels\nmodels:\n  k3:\n    layers: [Flatten, "
                                     "{Dense: {units: 10, activation: softmax}}]\n")
    with pytest.raises(StoreError, match="no results for study 'kernels'"):
        resolve_study_directory("s.yaml")
    (tmp_path / "archlab-runs" / "kernels").mkdir(parents=True)
    assert resolve_study_directory("s.yaml") == Path("archlab-runs/kernels")
    (tmp_path / "archlab-runs" / "quickstart").mkdir()
    assert resolve_study_directory("zoo:quickstart") == Path("archlab-runs/quickstart")
    with pytest.raises(StoreError, match="no such study directory or study file"):
        resolve_study_directory("nowhere")
