"""Crafted runs for analysis, report and CLI tests: run records in memory, or a real store on
disk (written through the public Store API), with chosen metrics, seeds, timings and machine
load. Nothing here trains."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.analysis.results import ModelResult, StudyResults, model_result, ranking_of
from archlab.store import RunRecord, RunStatus, Store

LAYERS: list[Any] = ["Flatten", {"Dense": {"units": 32, "activation": "relu"}},
                     {"Dense": {"units": 10, "activation": "softmax"}}]


def config_json(model: str, layers: list[Any] | None = None, seed: int = 0,
                validation: Any = "test", dataset: str = "mnist",
                preprocessing: Any = "scale") -> dict[str, Any]:
    """A valid stored RunConfig for ``model``."""
    return {"model": model, "layers": layers or LAYERS,
            "train": {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam"}},
            "data": {"dataset": dataset, "validation": validation,
                     "preprocessing": preprocessing},
            "seed": seed, "split_seed": 0}


def record(model: str, i: int, status: RunStatus, metrics: dict[str, float], *,
           layers: list[Any] | None = None, seconds: float = 10.0, seed: int | None = None,
           environment: dict[str, Any] | None = None) -> RunRecord:
    seed = i if seed is None else seed
    return RunRecord(
        run_id=f"{model}-{i}", model=model, repeat=i, seed=seed, status=status,
        config_json=config_json(model, layers, seed), epochs_done=1, best_epoch=1,
        diverged_epoch=3 if status is RunStatus.DIVERGED else None, error=None,
        metrics=metrics, total_params=100, trainable_params=100, non_trainable_params=0,
        macs_per_sample=100, train_seconds=seconds, wall_seconds=seconds,
        samples_per_second=1.0, environment=environment or {})


def model(name: str, accs: list[float], *, gap: float = 0.01, seconds: float | list[float] = 10.0,
          diverged: list[int] | None = None, failed: int = 0, layers: list[Any] | None = None,
          seeds: list[int] | None = None,
          environment: dict[str, Any] | None = None) -> ModelResult:
    """A model with finished runs scoring ``accs`` (train accuracy ``gap`` above validation,
    validation = test), plus ``diverged`` runs (at those epochs) and ``failed`` runs."""
    times = seconds if isinstance(seconds, list) else [seconds] * len(accs)
    runs = [record(name, i, RunStatus.FINISHED,
                   {"test_accuracy": a, "val_accuracy": a, "train_accuracy": a + gap},
                   layers=layers, seconds=times[i], seed=None if seeds is None else seeds[i],
                   environment=environment)
            for i, a in enumerate(accs)]
    for epoch in diverged or []:
        r = record(name, len(runs), RunStatus.DIVERGED, {}, layers=layers)
        runs.append(RunRecord(**{**r.__dict__, "diverged_epoch": epoch}))
    runs += [record(name, len(runs) + i, RunStatus.FAILED, {}, layers=layers)
             for i in range(failed)]
    return model_result(name, runs)


def results(*models: ModelResult, meta: dict[str, Any] | None = None,
            correction: str = "holm") -> StudyResults:
    ranked = ranking_of({"": list(models)}, correction=correction).get("")
    return StudyResults(Path("."), "crafted", meta or {}, list(models), True,
                        ranked.against_best if ranked else [], ranked)


# ---------------------------------------------------------------------------------------------
# A real store on disk


@dataclass
class Run:
    """One crafted run to write into a store."""

    model: str
    repeat: int
    test_accuracy: float | None  # None: the run failed
    seed: int | None = None
    seconds: float = 10.0
    environment: dict[str, Any] = field(default_factory=dict)
    layers: list[Any] | None = None
    status: RunStatus = RunStatus.FINISHED


def write_store(directory: Path, runs: list[Run], *, study: str = "crafted",
                validation: Any = "test", dataset: str = "mnist",
                preprocessing: Any = "scale") -> Path:
    """A study directory holding ``runs`` (every run in the plan), no weights or predictions."""
    plan = []
    with Store(directory) as store:
        for r in runs:
            seed = r.seed if r.seed is not None else 1000 * r.repeat + len(r.model)
            run_id = f"{r.model}-{r.repeat}"
            plan.append(run_id)
            cfg = config_json(r.model, r.layers, seed, validation, dataset, preprocessing)
            store.start_run(run_id, r.model, r.repeat, seed, cfg,
                            {"archlab": "0.2.0", "torch": "x", **r.environment})
            if r.test_accuracy is None or r.status is RunStatus.FAILED:
                store.fail_run(run_id, "RuntimeError: crafted failure")
                continue
            acc = r.test_accuracy
            diverged = r.status is RunStatus.DIVERGED
            metrics = {} if diverged else {
                "train_loss": 0.1, "train_accuracy": min(1.0, acc + 0.01), "val_loss": 0.2,
                "val_accuracy": acc, "test_loss": 0.2, "test_accuracy": acc}
            store.finish_run(
                run_id, status=r.status, metrics=metrics,
                counts={"total_params": 7850, "trainable_params": 7850,
                        "non_trainable_params": 0, "macs_per_sample": 7840},
                best_epoch=1, diverged_epoch=1 if diverged else None,
                train_seconds=r.seconds, wall_seconds=r.seconds + 0.5, samples_per_second=1.0,
                history=[{"epoch": 1, "loss": math.nan if diverged else 0.3,
                          "accuracy": 0.9, "val_loss": 0.2, "val_accuracy": acc,
                          "seconds": r.seconds}])
        store.set_meta(study=study, plan=plan)
    return directory


def accuracy_store(directory: Path, models: dict[str, list[float]], *, first_seed: int,
                   **kw: Any) -> Path:
    """:func:`write_store` of one finished run a listed test accuracy, model by model; repeat
    ``i`` has seed ``first_seed + i``."""
    runs = [Run(m, i, acc, seed=first_seed + i) for m, accs in models.items()
            for i, acc in enumerate(accs)]
    return write_store(directory, runs, **kw)


def raced_store(directory: Path, models: dict[str, list[float]], *, first_seed: int,
                limits: tuple[int, int], **kw: Any) -> Path:
    """:func:`accuracy_store` recorded as a race in which every model had ``limits`` (min, max)
    seeds and got as many as ``models`` lists (Holm, alpha 0.05, no budget)."""
    accuracy_store(directory, models, first_seed=first_seed, **kw)
    with Store(directory) as store:
        plan = store.meta()["plan"]
        store.set_meta(race={"limits": {m: list(limits) for m in models}, "alpha": 0.05,
                             "correction": "holm", "power": 1.0, "budget": None,
                             "stopped": None, "plan": plan})
    return directory


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file's bytes, except SQLite's -wal/-shm sidecars: opening a WAL store, even
    read-only, creates them where the directory is writable (the database is unchanged)."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
