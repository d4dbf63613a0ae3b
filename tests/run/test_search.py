"""A study's Optuna search end to end on mnist-sample: per-epoch pruning, resuming after the
`archlab run` process is SIGKILLed mid-trial (no trial lost or duplicated), the confirmation
runs and the winner's CIs, trials through the --jobs pool, and the report's search figures."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import archlab
from archlab.analysis.results import collect
from archlab.cli import main
from archlab.data import load_dataset, prepare_tensors
from archlab.report.search import gather_search
from archlab.run import RunContext, derive_seed, execute_run, plan_runs, run_study
from archlab.run.search import SEARCH_DB, SEARCH_FILE
from archlab.store import RunStatus, Store
from tests.conftest import TINY
from tests.run.peek import query

TIMEOUT = 300.0
EPOCHS = 3


def _config(trials: int, *, n_startup: int = 2, top: int = 2) -> dict[str, Any]:
    """The tiny MLP, 3 epochs, and a seeded random search whose low learning rates the median
    pruner stops after their first epoch."""
    cfg = copy.deepcopy(TINY)
    del cfg["models"]["cnn"]
    cfg["name"] = "searchy"
    cfg["train"]["epochs"] = EPOCHS
    cfg["search"] = {
        "base": "mlp", "trials": trials, "sampler": "random",
        "pruner": {"median": {"n_startup_trials": n_startup}},
        "space": {"layers.1.Dense.units": {"int": [4, 32], "log": True},
                  "train.optimizer.learning_rate": {"float": [1.0e-4, 0.1], "log": True}},
        "confirm": {"top": top, "repeats": 2}}
    return cfg


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "searchy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _cmd(study: Path, out: Path, *more: str) -> list[str]:
    return ["run", str(study), "--out", str(out), "--threads", "1", "--no-report",
            "--no-timing", "--quiet", *more]


def _optuna_states(out: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{out / SEARCH_DB}?mode=ro", uri=True, timeout=5) as db:
        return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def _check_search(out: Path, trials: int) -> dict[str, Any]:
    """Exactly ``trials`` complete or pruned trials, distinct numbers, each one run in the
    store (the one search.json names) whose status agrees with Optuna's state."""
    data = json.loads((out / SEARCH_FILE).read_text())
    assert data["complete"] is True
    states = [t["state"] for t in data["trials"]]
    assert states.count("COMPLETE") + states.count("PRUNED") == trials
    assert set(states) <= {"COMPLETE", "PRUNED"}  # nothing failed, nothing left running
    numbers = [t["number"] for t in data["trials"]]
    assert sorted(numbers) == list(range(trials))
    assert [s for _, s in _optuna_states(out)] == states
    with Store(out) as store:
        runs = store.runs()
    for t in data["trials"]:
        mine = [r for r in runs if r.model == t["model"] and r.repeat == 0]
        assert [r.run_id for r in mine] == [t["run_id"]], t
        run = mine[0]
        assert run.config.seed == derive_seed(TINY["seed"], 0)
        if t["state"] == "PRUNED":
            assert run.status is RunStatus.PRUNED
            assert run.pruned_epoch == t["pruned_epoch"] < EPOCHS
            assert len(store_history(out, run.run_id)) == run.pruned_epoch
        else:
            assert run.status is RunStatus.FINISHED
            assert t["value"] == run.metrics["val_accuracy"]
            assert sorted(map(int, t["intermediate"])) == list(range(1, EPOCHS + 1))
    assert not list(out.glob("runs/*/checkpoint.safetensors*"))
    return data


def store_history(out: Path, run_id: str) -> list[dict[str, float]]:
    with Store(out) as store:
        return store.history(run_id)


def _check_confirmed(out: Path, data: dict[str, Any], top: int) -> None:
    """The best ``top`` complete trials re-ran across 2 seeds; the winner has CIs."""
    done = sorted((t for t in data["trials"] if t["state"] == "COMPLETE"),
                  key=lambda t: (-t["value"], t["number"]))
    assert data["confirmed"] == [t["model"] for t in done[:top]]
    with Store(out) as store:
        for name in data["confirmed"]:
            runs = store.runs(models=[name])
            assert sorted(r.repeat for r in runs) == [0, 1]
            assert {r.seed for r in runs} == {derive_seed(TINY["seed"], i)
                                             for i in (0, 1)}
            assert all(r.status is RunStatus.FINISHED for r in runs)
    search = gather_search(out)
    assert search is not None and search.winner == search.confirmed[0].model
    best = search.confirmed[0].objective
    assert best is not None and best.n == 2
    assert math.isfinite(best.ci_low) and best.ci_low <= best.mean <= best.ci_high
    assert len(search.confirmed) == min(top, len(done))
    for other in search.confirmed[1:]:
        assert other.comparison is not None
        assert other.comparison.method == "paired"  # repeat i of every model shares a seed


def test_search_prunes_resumes_after_sigkill_and_confirms(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    study = _write(tmp_path, _config(12))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "archlab", *_cmd(study, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    # Kill it while a trial trains (an epoch recorded, not finished), after some trials
    # were told: the parent is frozen before the store is read again, so what is read is
    # still true when it dies.
    mid_trial = ("SELECT 1 FROM runs WHERE model LIKE 'mlp.trial%' AND status='running' "
                 "AND epochs_done BETWEEN 1 AND 2 AND (SELECT COUNT(*) FROM runs WHERE "
                 "model LIKE 'mlp.trial%' AND status IN ('finished', 'pruned')) >= 3")
    deadline = time.monotonic() + TIMEOUT
    while True:
        while not query(out, mid_trial):
            assert proc.poll() is None, f"search ended before the kill: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no trial was ever caught mid-training"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGSTOP)
        if query(out, mid_trial):
            break
        os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert ("RUNNING" in {s for _, s in _optuna_states(out)}), "no trial left running"
    killed = query(out, "SELECT run_id, model, epochs_done FROM runs WHERE status='running'")
    assert len(killed) == 1 and killed[0][1].startswith("mlp.trial")

    assert main(_cmd(study, out)) == 0
    printed = capsys.readouterr().out
    data = _check_search(out, 12)
    assert any(t["state"] == "PRUNED" for t in data["trials"])  # the median pruner stopped some
    importances = data["importances"]  # Optuna's PED-ANOVA over the 12 trials
    assert set(importances) == set(data["search"]["space"])
    assert math.isclose(sum(importances.values()), 1.0) and len(set(importances.values())) > 1
    _check_confirmed(out, data, top=2)
    # The killed trial resumed from its checkpoint: its run is the one the store had.
    (rid, model, _), = killed
    assert next(t for t in data["trials"] if t["model"] == model)["run_id"] == rid
    with Store(out) as store:
        (resumed,) = store.runs(run_ids=[rid])
    assert resumed.warnings == ()  # its checkpoint was trusted, not discarded
    assert "Confirmed winner: mlp.trial" in printed and "pruned at epoch" in printed

    # A rerun trains nothing: every trial and confirmation run is final, and every trial
    # (told by either process) is still in the study's results.
    before = query(out, "SELECT run_id, status, updated_at FROM runs")
    assert main(_cmd(study, out)) == 0
    assert query(out, "SELECT run_id, status, updated_at FROM runs") == before
    assert _check_search(out, 12)["trials"] == data["trials"]
    shown = {m.model for m in collect(out).models}
    assert shown == {"mlp"} | {t["model"] for t in data["trials"]}


def test_search_trials_run_through_jobs_2_and_the_report_draws_it(tmp_path: Path) -> None:
    study = _write(tmp_path, _config(3, n_startup=1, top=2))
    out = tmp_path / "out"
    assert main(_cmd(study, out, "--jobs", "2")) == 0
    data = _check_search(out, 3)
    _check_confirmed(out, data, top=2)
    # Every trial's epochs were reported to Optuna by its worker (the pruner's input).
    assert all(t["intermediate"] for t in data["trials"])
    from archlab.report import write_report

    paths = write_report(out)
    md = paths[1].read_text()
    for name in ("search_history", "search_confirmed"):
        assert f"{name}.png" in md, name
    # Importances are drawn when Optuna could rate the parameters, else the report says why.
    assert ("search_importances.png" in md) == bool(data["importances"])
    assert bool(data["importances"]) or "No parameter importances" in md
    assert "Confirmed winner: mlp.trial" in md


def test_epoch_check_prunes_a_run_and_is_asked_again_on_resume(
        tiny_study: archlab.Study, tmp_path: Path) -> None:
    study = tiny_study.select(["mlp"])
    plan = plan_runs(study)[0]
    data = prepare_tensors(load_dataset("mnist-sample"), study.data, study.seed)
    asked: list[int] = []

    def prune_at_2(p: Any, row: dict[str, float]) -> bool:
        asked.append(int(row["epoch"]))
        return row["epoch"] == 2

    ctx = RunContext(tmp_path / "a", data, 1, epoch_check=prune_at_2)
    assert execute_run(study, plan, ctx) is RunStatus.PRUNED
    assert asked == [1, 2]
    with Store(tmp_path / "a") as store:
        (run,) = store.runs()
        assert (run.status, run.pruned_epoch, run.total_params) == (RunStatus.PRUNED, 2, 12730)
        assert [r["epoch"] for r in store.history(run.run_id)] == [1, 2]
        assert run.metrics == {} and run.train_seconds is not None
        store.fail_run(run.run_id, "late")  # final: never un-pruned
        assert store.status(run.run_id) is RunStatus.PRUNED
    assert not list((tmp_path / "a").glob("runs/*/*.safetensors"))  # no checkpoint, no weights
    assert run_study(study, tmp_path / "a", threads=1).skipped == [plan.run_id]  # final

    # A run stopped after epoch 1 (as a killed process would be, before it asked) is asked
    # again for epoch 1 when it resumes, and pruned there without training on.
    epochs: list[int] = []
    ctx = RunContext(tmp_path / "b", data, 1,
                     lambda rid, ev: epochs.append(ev["epoch"]) if ev["kind"] == "epoch" else None,
                     stop_requested=lambda: bool(epochs))
    assert execute_run(study, plan, ctx) is RunStatus.INTERRUPTED
    asked.clear()
    ctx = RunContext(tmp_path / "b", data, 1, epoch_check=lambda p, row: bool(
        asked.append(int(row["epoch"]))) or row["epoch"] == 1)
    assert execute_run(study, plan, ctx) is RunStatus.PRUNED
    assert asked == [1]
    with Store(tmp_path / "b") as store:
        assert store.runs()[0].pruned_epoch == 1


def test_a_trial_that_cannot_be_built_fails_and_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archlab.run import search as search_module

    real = search_module.trial_study

    def refuse_trial_0(study: archlab.Study, name: str, params: dict[str, Any]) -> Any:
        if name == "mlp.trial000":
            raise ValueError("a point the spec refuses")
        return real(study, name, params)

    monkeypatch.setattr(search_module, "trial_study", refuse_trial_0)
    cfg = _config(2, top=1)
    cfg["train"]["epochs"] = 1
    cfg["search"]["pruner"] = "none"
    out = tmp_path / "out"
    run_study(archlab.parse_study(cfg), out, threads=1)
    data = json.loads((out / SEARCH_FILE).read_text())
    assert [(t["number"], t["state"]) for t in data["trials"]] == [
        (0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert data["complete"] and data["trials"][0]["run_id"] is None
    assert {m.model for m in collect(out).models} == {"mlp", "mlp.trial001", "mlp.trial002"}


def test_a_search_taken_up_again_asks_the_trials_of_an_uninterrupted_one(
        tmp_path: Path) -> None:
    """The sampler is seeded per trial from the study seed and the trials so far: a search
    stopped after 2 trials and taken up again (a new process's sampler) asks what one that
    never stopped asks."""
    cfg = _config(4, top=1)
    cfg["train"]["epochs"] = 1
    cfg["search"].update(pruner="none", sampler="tpe")
    run_study(archlab.parse_study(cfg), tmp_path / "once", threads=1)
    stopped = copy.deepcopy(cfg)
    stopped["search"]["trials"] = 2
    run_study(archlab.parse_study(stopped), tmp_path / "twice", threads=1)
    run_study(archlab.parse_study(cfg), tmp_path / "twice", threads=1)

    def trials(out: Path) -> list[tuple[Any, ...]]:
        data = json.loads((out / SEARCH_FILE).read_text())
        return [(t["number"], t["params"], t["value"], t["run_id"]) for t in data["trials"]]

    assert len(trials(tmp_path / "once")) == 4
    assert trials(tmp_path / "twice") == trials(tmp_path / "once")


def test_a_racing_confirmation_gives_seeds_only_where_the_ranking_is_open(
        tmp_path: Path) -> None:
    """confirm.repeats {min, max, until: decided}: a trial clearly worse on the objective stops
    getting seeds; the race is written to search.json and the results; a rerun trains nothing."""
    cfg = copy.deepcopy(TINY)
    del cfg["models"]["cnn"]
    cfg.update(name="confirm-race")
    cfg["train"].update(epochs=1, batch_size=64)
    cfg["search"] = {"base": "mlp", "trials": 3, "sampler": "grid", "pruner": "none",
                     "space": {"layers.1.Dense.units": {"choice": [1, 24, 32]}},
                     "confirm": {"top": 3, "repeats": {"min": 2, "max": 5,
                                                       "until": "decided"}}}
    out = tmp_path / "out"
    study = archlab.parse_study(cfg)
    run_study(study, out, threads=1, device="cpu")
    data = json.loads((out / SEARCH_FILE).read_text())
    # a grid of 3 points and 3 trials: each point once (Optuna's GridSampler alone repeated
    # points when asked with fixed distributions, as archlab asks)
    assert sorted(t["params"]["layers.1.Dense.units"] for t in data["trials"]) == [1, 24, 32]
    race = data["confirm_race"]
    one_unit = next(t["model"] for t in data["trials"]
                    if t["params"]["layers.1.Dense.units"] == 1)
    seeds = race["seeds"]
    assert set(seeds) == set(data["confirmed"]) and race["finished"]
    assert seeds[one_unit] < 5 and "dropped at look" in race["models"][one_unit]
    assert race["runs"] == sum(seeds.values()) < race["fixed_runs"] == 15
    with Store(out, readonly=True) as store:
        done = [r for r in store.runs() if r.model in seeds]
    assert sorted(r.model for r in done) == sorted(m for m, n in seeds.items()
                                                   for _ in range(n))
    lines = "\n".join(archlab.report.search.search_lines(gather_search(out)))
    assert "The confirmation raced" in lines and f"{one_unit}: Race: dropped at look" in lines
    again = run_study(study, out, threads=1, device="cpu")
    assert not again.statuses  # the race is replayed from the store: nothing trained again
