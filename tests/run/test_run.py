"""The runner: store contents, skipping finished runs, determinism, divergence, resume."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load

import archlab
from archlab.analysis.results import collect
from archlab.cli import main
from archlab.data import load_dataset, prepare_tensors
from archlab.errors import StoreError
from archlab.run import RunContext, execute_run, plan_runs, run_study
from archlab.run.execute import record_failure
from archlab.store import (
    CHECKPOINT_FILE,
    PREDICTIONS_FILE,
    WEIGHTS_FILE,
    RunStatus,
    Store,
)
from tests.conftest import TINY


def tiny(**changes) -> archlab.Study:
    import copy

    cfg = copy.deepcopy(TINY)
    for key, value in changes.items():
        cfg[key] = value
    return archlab.parse_study(cfg, "tiny.yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    run_study(tiny(), out)
    return out


def test_store_records_everything(finished: Path) -> None:
    with Store(finished) as store:
        runs = store.runs()
        assert {r.model for r in runs} == {"mlp", "cnn"}
        for r in runs:
            assert r.status == "finished"
            assert r.epochs_done == 2
            assert set(r.metrics) == {"train_loss", "train_accuracy", "val_loss",
                                      "val_accuracy", "test_loss", "test_accuracy"}
            assert 0.1 < r.metrics["test_accuracy"] <= 1.0
            assert r.train_seconds > 0 and r.samples_per_second > 0
            assert r.peak_rss_bytes is not None and r.peak_rss_bytes > 50 * 2**20  # torch alone
            assert r.warnings == ()
            history = store.history(r.run_id)
            assert [h["epoch"] for h in history] == [1, 2]
            assert r.environment["torch"]
        assert store.integrity_check() == "ok"
    mlp = next(r for r in runs if r.model == "mlp")
    assert mlp.total_params == 784 * 16 + 16 + 16 * 10 + 10


def test_weights_saved_as_safetensors_and_reload(finished: Path) -> None:
    with Store(finished, readonly=True) as store:
        run = next(r for r in store.runs() if r.model == "cnn")
        tensors = load(store.read_verified(run.run_id, WEIGHTS_FILE))  # the bytes checked
    study = archlab.load_study(finished / "study.yaml")
    built = archlab.build_model(study, "cnn")
    built.module.load_state_dict(tensors)
    raw = load_dataset("mnist-sample")
    data = prepare_tensors(raw, study.data, study.seed)
    from archlab.train import evaluate

    loss, acc = evaluate(built, data.x_test, data.y_test, data.pre)
    assert acc == pytest.approx(run.metrics["test_accuracy"])
    assert loss == pytest.approx(run.metrics["test_loss"], rel=1e-5)


def test_tables_written(finished: Path) -> None:
    from archlab.report.tables import write_tables

    paths = write_tables(collect(finished))
    md, csv_text = paths[0].read_text(), paths[1].read_text()
    assert "| mlp |" in md and "| cnn |" in md
    assert csv_text.splitlines()[0].startswith("model,n,")
    assert len(csv_text.splitlines()) == 3


def test_rerun_skips_finished_runs(finished: Path) -> None:
    outcome = run_study(tiny(), finished)
    assert len(outcome.skipped) == 2 and outcome.statuses == {}


def test_changed_model_gets_a_new_run_unchanged_kept(tmp_path: Path) -> None:
    run_study(tiny(), tmp_path)
    changed = tiny()
    cfg = changed.to_config()
    cfg["models"]["mlp"]["layers"][1] = {"Dense": {"units": 8, "activation": "relu"}}
    outcome = run_study(archlab.parse_study(cfg), tmp_path)
    assert len(outcome.skipped) == 1 and len(outcome.statuses) == 1
    with Store(tmp_path) as store:
        assert len(store.runs()) == 3  # the old mlp run is kept in the store...
    results = collect(tmp_path)  # ...but the table shows the current plan only
    mlp = next(m for m in results.models if m.model == "mlp")
    assert mlp.n == 1 and mlp.total_params == 784 * 8 + 8 + 8 * 10 + 10


def test_same_seed_same_numbers(finished: Path, tmp_path: Path) -> None:
    run_study(tiny(), tmp_path)
    with Store(finished) as a, Store(tmp_path) as b:
        ra = {r.run_id: r.metrics for r in a.runs()}
        rb = {r.run_id: r.metrics for r in b.runs()}
        assert ra == rb  # bitwise: same seed on CPU gives the same numbers
        for rid in ra:
            assert a.history(rid)[-1]["val_loss"] == b.history(rid)[-1]["val_loss"]


def test_seeds_depend_on_repeat_only_shared_by_models() -> None:
    # Common random numbers: repeat i of every model gets the same seed (paired comparisons).
    plans = plan_runs(tiny(), repeats=3)
    by_repeat = {r: {p.seed for p in plans if p.repeat == r} for r in range(3)}
    assert all(len(seeds) == 1 for seeds in by_repeat.values())
    assert len({s for seeds in by_repeat.values() for s in seeds}) == 3
    cfg = tiny().to_config()
    cfg["models"]["extra"] = cfg["models"]["mlp"]
    two = {(p.model, p.repeat): p.run_id for p in plan_runs(archlab.parse_study(cfg), repeats=3)}
    # Adding a model changes no other run.
    assert all(two[(p.model, p.repeat)] == p.run_id for p in plans)


def test_diverging_run_is_recorded_and_study_continues(tmp_path: Path) -> None:
    cfg = tiny().to_config()
    cfg["models"]["mlp"]["train"] = {"optimizer": {"name": "sgd", "learning_rate": 1e12}}
    outcome = run_study(archlab.parse_study(cfg), tmp_path)
    assert sorted(outcome.statuses.values()) == ["diverged", "finished"]
    results = collect(tmp_path)
    mlp = next(m for m in results.models if m.model == "mlp")
    assert mlp.diverged_epochs == [1]
    from archlab.report.tables import to_markdown

    assert "diverged @1" in to_markdown(results)


def test_interrupted_run_resumes_from_checkpoint_identically(finished: Path,
                                                             tmp_path: Path) -> None:
    study = tiny()
    plan = next(p for p in plan_runs(study) if p.model == "cnn")
    data = prepare_tensors(load_dataset("mnist-sample"), study.data, study.seed)
    epochs_seen: list[int] = []

    def progress(run_id: str, event: dict) -> None:
        if event["kind"] == "epoch":
            epochs_seen.append(event["epoch"])

    # Stop during epoch 2: the checkpoint of epoch 1 stays, the run is 'interrupted'.
    with Store(finished) as ref:  # same threads as the reference: same float reduction order
        threads = ref.runs(run_ids=[plan.run_id])[0].environment["threads"]
    ctx = RunContext(tmp_path, data, threads, progress,
                     stop_requested=lambda: len(epochs_seen) >= 1)
    assert execute_run(study, plan, ctx) == "interrupted"
    assert (tmp_path / "runs" / plan.run_id / "checkpoint.safetensors").exists()
    with Store(tmp_path) as store:
        assert store.status(plan.run_id) == "interrupted"
    resumed: list[dict] = []
    ctx = RunContext(tmp_path, data, threads, lambda rid, ev: resumed.append(ev))
    assert execute_run(study, plan, ctx) == "finished"
    assert resumed[0] == {"kind": "resumed", "epoch": 1}
    with Store(tmp_path) as store, Store(finished) as ref:
        got = store.runs(run_ids=[plan.run_id])[0].metrics
        want = ref.runs(run_ids=[plan.run_id])[0].metrics
        assert got == want
        assert not (tmp_path / "runs" / plan.run_id / "checkpoint.safetensors").exists()


def test_cli_run_and_results(tmp_path: Path, capsys) -> None:
    study_file = tmp_path / "s.yaml"
    study_file.write_text(archlab.dump_study(tiny()))
    assert main(["run", str(study_file), "--epochs", "1", "--models", "mlp", "--out",
                 str(tmp_path / "o"), "--quiet", "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "mlp" in text and "test acc" in text
    assert main(["results", str(tmp_path / "o"), "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith("mlp,1,")
    assert math.isfinite(float(rows[1].split(",")[rows[0].split(",").index("test_accuracy_mean")]))


def test_early_stopping_keras_semantics_and_restore_best(tmp_path: Path) -> None:
    # min_delta so large that only the first epoch counts as an improvement: with patience 1
    # Keras stops after epoch 1 + 1 non-improving epoch = 2 epochs.
    cfg = tiny().to_config()
    cfg["train"]["epochs"] = 6
    cfg["train"]["early_stopping"] = {"monitor": "val_loss", "patience": 1, "min_delta": 10.0}
    cfg["train"]["restore_best"] = True
    cfg["models"] = {"mlp": cfg["models"]["mlp"]}
    run_study(archlab.parse_study(cfg), tmp_path)
    with Store(tmp_path) as store:
        (run,) = store.runs()
        history = store.history(run.run_id)
    assert run.epochs_done == 2 and len(history) == 2
    assert run.best_epoch == 1
    # restore_best: the final (and test) evaluation uses epoch 1's weights.
    assert run.metrics["val_loss"] == pytest.approx(history[0]["val_loss"], rel=1e-12)
    assert run.metrics["val_loss"] != pytest.approx(history[1]["val_loss"], rel=1e-9)


def test_a_run_that_raises_is_failed_and_the_study_goes_on(tmp_path: Path, monkeypatch) -> None:
    from archlab.run import single as run_module  # where the study calls execute_run

    real = run_module.execute_run

    def flaky(study, plan, ctx):
        if plan.model == "mlp":
            raise RuntimeError("simulated crash inside the run")
        return real(study, plan, ctx)

    monkeypatch.setattr(run_module, "execute_run", flaky)
    outcome = run_study(tiny(), tmp_path)
    assert sorted(outcome.statuses.values()) == ["failed", "finished"]
    with Store(tmp_path) as store:
        (failed,) = [r for r in store.runs() if r.status == "failed"]
    assert failed.model == "mlp" and "simulated crash" in failed.error
    monkeypatch.setattr(run_module, "execute_run", real)
    again = run_study(tiny(), tmp_path)  # the rerun retries the failed run only
    assert list(again.statuses.values()) == ["finished"] and len(again.skipped) == 1


def test_finished_runs_point_to_checksummed_weights_and_predictions(finished: Path,
                                                                    tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    with Store(copy) as store:
        for run in store.runs():
            run_dir = copy / "runs" / run.run_id
            assert store.verify_file(run.run_id, WEIGHTS_FILE) == run_dir / WEIGHTS_FILE
            assert store.verify_file(run.run_id, PREDICTIONS_FILE) == run_dir / PREDICTIONS_FILE
            with pytest.raises(StoreError, match="no checksum"):  # gone once the run finished
                store.verify_file(run.run_id, CHECKPOINT_FILE)
        run = store.runs()[0]
        weights = copy / "runs" / run.run_id / WEIGHTS_FILE
        raw = bytearray(weights.read_bytes())
        raw[-8:-4] = bytes(b ^ 0xFF for b in raw[-8:-4])  # 4 bytes of tensor data
        weights.write_bytes(bytes(raw))
        with pytest.raises(StoreError, match="SHA-256 differs"):
            store.verify_file(run.run_id, WEIGHTS_FILE)


def test_record_failure_inserts_a_run_that_never_started_and_keeps_finished_ones(
        finished: Path, tmp_path: Path) -> None:
    plans = plan_runs(tiny())
    record_failure(tmp_path, plans[0], "RuntimeError: died at birth", {"torch": "x"})
    with Store(tmp_path) as store:
        (run,) = store.runs()
    assert (run.run_id, run.model, run.status) == (plans[0].run_id, plans[0].model,
                                                   RunStatus.FAILED)
    assert run.error == "RuntimeError: died at birth" and run.environment == {"torch": "x"}
    record_failure(tmp_path, plans[0], "stopped", {}, status=RunStatus.INTERRUPTED,
                   peak_rss_bytes=1234)
    with Store(tmp_path) as store:
        (run,) = store.runs()
    assert (run.status, run.error, run.peak_rss_bytes) == (RunStatus.INTERRUPTED, "stopped",
                                                           1234)
    copy = tmp_path / "finished"
    shutil.copytree(finished, copy)
    record_failure(copy, plans[0], "late", {})  # a finished run is never overwritten
    with Store(copy) as store:
        assert store.status(plans[0].run_id) is RunStatus.FINISHED
