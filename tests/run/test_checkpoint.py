"""Checkpoints: the format round-trips, and a bad checkpoint is discarded, never trusted.

A run is interrupted after its first epoch (its checkpoint kept), the checkpoint is damaged in
one of four ways, and the rerun must warn, restart from zero and finish with exactly the
numbers of an uninterrupted run. "Blessed" files also get their checksum recorded in the
store, as a v1 store's files are at upgrade, so the structural checks are exercised too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.data import Tensors
from archlab.run import RunContext, default_threads, execute_run, plan_runs
from archlab.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from archlab.store import CHECKPOINT_FILE, RunStatus, Store
from archlab.train import TrainState, fit


def plan_of(study: archlab.Study, model: str) -> Any:
    return next(p for p in plan_runs(study) if p.model == model)


def checkpoint_of(study: archlab.Study, model: str, data: Tensors, path: Path) -> None:
    """Write ``model``'s checkpoint after one epoch to ``path``."""
    built = archlab.build_model(study, model, seed=1)
    train = study.train_for(model).model_copy(update={"epochs": 1})
    fit(built, data, train, 1, on_epoch_end=lambda st, opt, sched, gen: save_checkpoint(
        path, st, built.module, opt, sched, gen))


def test_load_refuses_files_that_do_not_fit_before_changing_anything(
        tiny: archlab.Study, data: Tensors, tmp_path: Path) -> None:
    cnn_ckpt, mlp_ckpt = tmp_path / "cnn.safetensors", tmp_path / "mlp.safetensors"
    checkpoint_of(tiny, "cnn", data, cnn_ckpt)
    checkpoint_of(tiny, "mlp", data, mlp_ckpt)
    built = archlab.build_model(tiny, "mlp", seed=1)
    before = {k: v.clone() for k, v in built.module.state_dict().items()}
    opt = torch.optim.Adam(built.module.parameters())
    gen = torch.Generator()
    pickle = tmp_path / "pickle.safetensors"
    torch.save(built.module.state_dict(), pickle)
    cases = {"another model's file": (cnn_ckpt.read_bytes(), "another model's weights"),
             "truncated": (mlp_ckpt.read_bytes()[:-100], "not an archlab checkpoint"),
             "a pickle": (pickle.read_bytes(), "not an archlab checkpoint"),
             "empty": (b"", "not an archlab checkpoint")}
    for name, (content, reason) in cases.items():
        with pytest.raises(CheckpointError, match=reason):
            load_checkpoint(content, built.module, opt, None, gen)
        assert all(torch.equal(before[k], v) for k, v in built.module.state_dict().items()), name
    state = load_checkpoint(mlp_ckpt, built.module, opt, None, gen)  # the right one loads
    assert isinstance(state, TrainState) and state.epoch == 1 and len(state.history) == 1


def flip_tensor_bytes(path: Path) -> None:
    """Flip 4 bytes in the middle of the tensor data (after the JSON header)."""
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    at = header + (len(raw) - header) // 2
    raw[at:at + 4] = bytes(b ^ 0xFF for b in raw[at:at + 4])
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def interrupted(tiny: archlab.Study, data: Tensors,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted reference run of the mlp, and a copy stopped after epoch 1."""
    plan = plan_of(tiny, "mlp")
    threads = default_threads(1)
    reference = tmp_path_factory.mktemp("reference")
    assert execute_run(tiny, plan, RunContext(reference, data, threads)) is RunStatus.FINISHED
    with Store(reference) as store:
        (want,) = store.runs()
    stopped = tmp_path_factory.mktemp("stopped")
    epochs: list[int] = []
    ctx = RunContext(stopped, data, threads,
                     lambda rid, ev: epochs.append(ev["epoch"]) if ev["kind"] == "epoch" else None,
                     stop_requested=lambda: bool(epochs))
    assert execute_run(tiny, plan, ctx) is RunStatus.INTERRUPTED
    other = tmp_path_factory.mktemp("other") / CHECKPOINT_FILE
    checkpoint_of(tiny, "cnn", data, other)
    return {"plan": plan, "want": want, "stopped": stopped, "other": other, "threads": threads}


@pytest.mark.parametrize("damage,blessed", [
    ("truncated", False), ("pickle", False), ("bytes flipped", False),
    ("another model's file", False),
    ("truncated", True), ("pickle", True), ("another model's file", True),
])
def test_a_bad_checkpoint_is_discarded_and_the_run_restarts_from_zero(
        tiny: archlab.Study, data: Tensors, interrupted: dict[str, Any], tmp_path: Path,
        damage: str, blessed: bool) -> None:
    plan = interrupted["plan"]
    out = tmp_path / "study"
    shutil.copytree(interrupted["stopped"], out)
    ckpt = out / "runs" / plan.run_id / CHECKPOINT_FILE
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "pickle":
        torch.save({"model/x": torch.zeros(3)}, ckpt)
    elif damage == "bytes flipped":
        flip_tensor_bytes(ckpt)
    else:
        shutil.copy(interrupted["other"], ckpt)
    with Store(out) as store:
        (before,) = store.runs()
        assert before.status is RunStatus.INTERRUPTED and before.epochs_done == 1
        if blessed:  # the store trusts the damaged file: only its structure can tell
            store.record_epoch(plan.run_id, store.history(plan.run_id)[0],
                               files=[CHECKPOINT_FILE])
    events: list[dict[str, Any]] = []
    ctx = RunContext(out, data, interrupted["threads"], lambda rid, ev: events.append(ev))
    assert execute_run(tiny, plan, ctx) is RunStatus.FINISHED
    kinds = [e["kind"] for e in events if e["kind"] != "batch"]
    assert kinds == ["warning", "epoch", "epoch", "done"]  # never "resumed"
    assert "checkpoint discarded, restarting from epoch 0" in events[0]["message"]
    assert str(ckpt) in events[0]["message"]
    want = interrupted["want"]
    with Store(out) as store:
        (run,) = store.runs()
        assert [h["epoch"] for h in store.history(plan.run_id)] == [1, 2]
    assert run.warnings == (events[0]["message"],)
    assert run.metrics == want.metrics  # from zero: the uninterrupted run's numbers exactly
    assert not ckpt.exists()


def test_a_clean_checkpoint_resumes_and_matches(tiny: archlab.Study, data: Tensors,
                                                interrupted: dict[str, Any],
                                                tmp_path: Path) -> None:
    out = tmp_path / "study"
    shutil.copytree(interrupted["stopped"], out)
    events: list[dict[str, Any]] = []
    ctx = RunContext(out, data, interrupted["threads"], lambda rid, ev: events.append(ev))
    assert execute_run(tiny, interrupted["plan"], ctx) is RunStatus.FINISHED
    assert [e["kind"] for e in events if e["kind"] != "batch"] == ["resumed", "epoch", "done"]
    with Store(out) as store:
        (run,) = store.runs()
    assert run.warnings == () and run.metrics == interrupted["want"].metrics
