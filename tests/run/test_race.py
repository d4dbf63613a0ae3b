"""Racing with real training (archlab.run.race): repeats {min, max, until: decided} on the
embedded MNIST sample, one epoch of three small models. The race's runs are the runs a fixed
number of repeats would train (same ids), the store holds exactly them, a killed race (SIGKILL
to a real `archlab run` process) resumes without losing or repeating a run, and a budget stops
it before a round that would pass it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import archlab
from archlab.analysis.conclusions import conclusions
from archlab.analysis.results import collect
from archlab.errors import ArchlabError
from archlab.run import plan_runs, run_study
from archlab.run.race import Budget, RaceOutcome, race_limits, race_study, run_race
from archlab.store import Store
from tests.run.here import main_here
from tests.run.peek import query

STUDY = """
name: race
seed: 3
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 256, epochs: 1,
        repeats: {min: 2, max: 5, until: decided}}
models:
  mlp:
    layers: [Flatten, {Dense: {units: 32, activation: relu}},
             {Dense: {units: 10, activation: softmax}}]
  lin:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
  narrow:
    layers: [Flatten, {Dense: {units: 1, activation: relu}},
             {Dense: {units: 10, activation: softmax}}]
"""

TIMEOUT = 240.0


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_kept() -> Iterator[None]:
    """Races here run with --threads 1: this process's threads are restored after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("race") / "race.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def raced(study_file: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, RaceOutcome]:
    """The race run to its end, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("reference")
    outcome = run_race(archlab.load_study(study_file), out, threads=1)
    return out, outcome


def _metrics(out: Path) -> dict[str, tuple]:
    rows = query(out, "SELECT run_id, model, repeat, status, epochs_done, train_loss, "
                      "test_loss, test_accuracy, wall_seconds FROM runs")
    return {r[0]: r[1:] for r in rows}


def test_the_spec_and_the_plan_of_a_race(study_file: Path) -> None:
    study = archlab.load_study(study_file)
    limits = race_limits(study)
    assert limits is not None and {(lim.min, lim.max) for lim in limits.values()} == {(2, 5)}
    # plan_runs plans a race's first round, with the ids a fixed number of repeats has
    first = plan_runs(study)
    assert [(p.model, p.repeat) for p in first] == [(m, r) for m in ("mlp", "lin", "narrow")
                                                    for r in range(2)]
    fixed = {(p.model, p.repeat): p.run_id for p in plan_runs(study, repeats=5)}
    assert all(fixed[(p.model, p.repeat)] == p.run_id for p in first)
    round_study = race_study(study, {"mlp": 4, "narrow": 3})
    assert list(round_study.models) == ["mlp", "narrow"] and round_study.search is None
    assert race_limits(round_study) is None  # a round asks for fixed repeats
    assert {(p.model, p.repeat): p.run_id for p in plan_runs(round_study)} == {
        k: v for k, v in fixed.items() if (k[0] == "mlp" and k[1] < 4)
        or (k[0] == "narrow" and k[1] < 3)}


def test_a_real_race_stops_giving_seeds_to_the_models_it_drops(
        raced: tuple[Path, RaceOutcome], study_file: Path) -> None:
    out, outcome = raced
    r = outcome.race
    assert r is not None and r.finished and outcome.stopped is None
    assert "narrow" in r.drops  # a 1-unit bottleneck: tens of points below the others
    drop = r.drops["narrow"]
    assert drop.against in ("mlp", "lin") and drop.comparison is not None
    assert drop.comparison.significant and drop.comparison.method == "paired"
    assert r.targets["narrow"] == drop.seeds < 5
    # the store holds exactly the race's runs, each the run a fixed plan would have
    got = _metrics(out)
    fixed = {(p.model, p.repeat): p.run_id
             for p in plan_runs(archlab.load_study(study_file), repeats=5)}
    expected = {fixed[(m, i)] for m, n in r.targets.items() for i in range(n)}
    assert set(got) == expected == {p.run_id for p in outcome.planned}
    assert all(row[2] == "finished" for row in got.values())
    assert len(got) == r.runs < r.fixed_runs == 15
    # results and the report read the race from the store: the same decisions
    results = collect(out)
    assert results.race is not None
    assert (results.race.looks, results.race.drops) == (r.looks, r.drops)
    assert results.ranked is not None and results.ranked.looks == r.max_looks
    assert results.ranked.family == 3
    assert {m.model: m.n for m in results.models} == r.targets
    narrow = next(m for m in results.models if m.model == "narrow")
    assert narrow.race is not None and narrow.race.startswith("Race: dropped at look")
    # a rerun trains nothing, and run_study races a racing study the same way
    again = run_study(archlab.load_study(study_file), out, threads=1)
    assert isinstance(again, RaceOutcome) and not again.statuses
    assert again.race is not None and again.race.drops == r.drops
    assert set(again.skipped) == expected and _metrics(out) == got


def test_a_budget_stops_the_race_before_a_round_that_would_pass_it(
        study_file: Path, tmp_path: Path) -> None:
    study = archlab.load_study(study_file)
    with pytest.raises(ArchlabError, match="first round, 6 runs"):
        run_race(study, tmp_path / "tiny", budget=Budget(runs=5), threads=1)
    assert not (tmp_path / "tiny").exists()
    outcome = run_race(study, tmp_path / "b", budget=Budget(runs=8), threads=1)
    assert outcome.stopped == "budget" and outcome.race is not None
    assert not outcome.race.finished and len(outcome.race.looks) == 1
    assert len(_metrics(tmp_path / "b")) == 6  # round 1 only: round 2 would make 9 (> 8)
    results = collect(tmp_path / "b")
    assert results.meta["race"]["stopped"] == "budget"
    assert results.race is not None and "budget (8 runs)" in " ".join(
        c.text for c in conclusions(results) if c.kind == "race")
    # an hour budget: the next round's runs, at the recorded time per run, would pass it
    timed = run_race(study, tmp_path / "b", budget=Budget(hours=1e-6), threads=1)
    assert timed.stopped == "budget" and not timed.statuses  # nothing more was trained
    # fixed repeats afterwards give the race's models more seeds: no longer a race
    run_study(study, tmp_path / "b", repeats=3, threads=1)
    again = collect(tmp_path / "b")
    assert again.race is None and {m.n for m in again.models} == {3}
    assert again.ranked is not None and again.ranked.looks == 1
    assert Budget.parse("90min") == Budget(hours=1.5) and Budget.parse("12 runs").runs == 12
    with pytest.raises(ArchlabError, match="--budget: Expected"):
        Budget.parse("soon")


def _run_args(study: Path, out: Path) -> list[str]:
    return ["run", str(study), "--out", str(out), "--threads", "1", "--quiet", "--no-report",
            "--no-timing"]


def test_a_killed_race_resumes_without_losing_or_repeating_a_run(
        raced: tuple[Path, RaceOutcome], study_file: Path, tmp_path: Path) -> None:
    """SIGKILL to `archlab run` once the race is past its first round; the same command
    then finishes it. Runs that had finished keep their records (none is trained again),
    the store ends with exactly the uninterrupted race's runs and numbers, and so with the
    same decisions."""
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "archlab", *_run_args(study_file, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    first_round = 6
    while len(query(out, "SELECT 1 FROM runs WHERE status='finished'")) <= first_round:
        assert proc.poll() is None, f"the race ended before the kill: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the race never got past its first round"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = {k: v for k, v in _metrics(out).items() if v[2] == "finished"}
    assert len(before) > first_round
    assert main_here(_run_args(study_file, out), TIMEOUT) == 0
    after = _metrics(out)
    assert {k: after[k] for k in before} == before  # not trained again: same wall time too
    reference, outcome = raced
    want = _metrics(reference)
    assert set(after) == set(want)  # nothing lost, nothing extra
    assert {k: v[:-1] for k, v in after.items()} == {k: v[:-1] for k, v in want.items()}
    assert query(out, "PRAGMA integrity_check") == [("ok",)]
    epochs = query(out, "SELECT run_id, COUNT(*) FROM epochs GROUP BY run_id")
    assert sorted(epochs) == sorted((rid, 1) for rid in want)  # one epoch each, once
    assert collect(out).race.drops == outcome.race.drops  # type: ignore[union-attr]


def test_a_models_first_round_is_one_pack(study_file: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where packing pays (forced here), a model's first-round seeds train as one pack; the
    later rounds give it one seed at a time."""
    import archlab.run.study as study_module

    calls: list[tuple[str, int]] = []

    def should_pack(study: object, model: str, n: int, *, device: str = "cpu") -> bool:
        calls.append((model, n))
        return n > 1

    monkeypatch.setattr(study_module, "should_pack", should_pack)
    out = tmp_path / "packed"
    outcome = run_race(archlab.load_study(study_file), out, threads=1)
    assert outcome.race is not None and outcome.race.finished
    assert sorted(calls) == [("lin", 2), ("mlp", 2), ("narrow", 2)]  # round 1 only
    with Store(out, create=False, readonly=True) as store:
        packed = {(r.model, r.repeat): r.environment.get("packed") for r in store.runs()}
    assert {k: v for k, v in packed.items() if k[1] < 2} == {
        (m, i): 2 for m in ("mlp", "lin", "narrow") for i in range(2)}
    assert all(v is None for k, v in packed.items() if k[1] >= 2)


@pytest.mark.slow
def test_a_race_with_two_jobs(raced: tuple[Path, RaceOutcome], study_file: Path,
                              tmp_path: Path) -> None:
    """--jobs 2: each round's runs in two worker processes; the same race."""
    out = tmp_path / "jobs"
    outcome = run_race(archlab.load_study(study_file), out, jobs=2, threads=1)
    reference, ref = raced
    assert outcome.race is not None and outcome.race.drops == ref.race.drops  # type: ignore
    assert {k: v[:-1] for k, v in _metrics(out).items()} == {
        k: v[:-1] for k, v in _metrics(reference).items()}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_a_race_on_ray(raced: tuple[Path, RaceOutcome], study_file: Path,
                       tmp_path: Path) -> None:
    """`archlab run --executor ray` (a local Ray instance): each round's runs are Ray tasks;
    the same runs, numbers and decisions as the race trained here."""
    from archlab.run.ray_local import kill_session, ray_env

    temp = Path(tempfile.mkdtemp(prefix="race", dir="/tmp"))
    out, err = tmp_path / "ray", tmp_path / "err"
    try:
        with open(err, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "archlab", "run", str(study_file), "--out", str(out),
                 "--executor", "ray", "--quiet", "--no-report", "--no-timing"],
                stdout=subprocess.DEVNULL, stderr=fh, env=ray_env(temp), start_new_session=True)
        try:
            assert proc.wait(timeout=600) == 0, err.read_text()[-3000:]
        finally:
            kill_session(proc.pid)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    reference, ref = raced
    assert {k: v[:-1] for k, v in _metrics(out).items()} == {
        k: v[:-1] for k, v in _metrics(reference).items()}
    assert collect(out).race.drops == ref.race.drops  # type: ignore[union-attr]
