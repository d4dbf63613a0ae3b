"""Thread counts and layouts: the load-aware default, --threads honoured exactly, and a resumed
run keeping the thread count and layout its checkpoint recorded (bit-identical numbers)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

import archlab
from archlab.data import Tensors, load_dataset, prepare_tensors
from archlab.run import RunContext, execute_run, plan_runs, run_study
from archlab.run.environment import busy_cores, default_threads
from archlab.spec import override_training
from archlab.store import RunStatus, Store
from archlab.train import CHANNELS_LAST_ENV
from tests.conftest import TINY

CORES = os.cpu_count() or 1
#: the module (archlab.run re-exports its function environment() under the same name)
env_mod = importlib.import_module("archlab.run.environment")


@pytest.fixture(scope="module")
def tiny() -> archlab.Study:
    return archlab.parse_study(TINY, "tiny.yaml")


@pytest.fixture(scope="module")
def data(tiny: archlab.Study) -> Tensors:
    return prepare_tensors(load_dataset("mnist-sample"), tiny.data, tiny.seed)


def test_default_threads_leaves_busy_cores_alone() -> None:
    assert default_threads(1, busy=None) == CORES  # nothing known: the fair share
    assert default_threads(1, busy=0.0) == CORES
    assert default_threads(1, busy=float(CORES)) == 1  # every core taken: one thread
    assert default_threads(1, busy=CORES + 5.0) == 1
    assert default_threads(CORES, busy=0.0) == 1
    if CORES >= 2:
        assert default_threads(1, busy=CORES - 1.0) == 1  # one free core: one thread
        assert default_threads(1, busy=0.4) == CORES  # a mostly idle machine: all cores
    busy = busy_cores()
    assert busy is None or busy >= 0.0
    assert 1 <= default_threads(1) <= CORES


def run_threads(directory: Path) -> tuple[int, str | None]:
    with Store(directory) as store:
        (run,) = store.runs()
    return run.environment["threads"], run.environment.get("threads_from")


def test_default_is_recorded_and_explicit_threads_are_honoured(
        tiny: archlab.Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = override_training(tiny.select(["mlp"]), epochs=1)
    monkeypatch.setattr(env_mod, "busy_cores", lambda: float(CORES))  # a fully busy machine
    run_study(one, tmp_path / "default", repeats=1)
    assert run_threads(tmp_path / "default") == (1, "default")
    monkeypatch.setattr(env_mod, "busy_cores", lambda: 0.0)  # an idle one
    run_study(one, tmp_path / "idle", repeats=1)
    assert run_threads(tmp_path / "idle") == (CORES, "default")
    monkeypatch.setattr(env_mod, "busy_cores", lambda: float(CORES))
    run_study(one, tmp_path / "given", repeats=1, threads=2)  # busy, but asked for: 2
    assert run_threads(tmp_path / "given") == (2, "given")


def test_resume_keeps_the_checkpoints_threads_and_layout_bit_for_bit(
        tiny: archlab.Study, data: Tensors, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with 1 thread in NHWC, resumed asked for 2 threads in NCHW: the checkpoint's
    count and layout win, and the numbers are those of an uninterrupted 1-thread NHWC run."""
    plan = next(p for p in plan_runs(tiny) if p.model == "cnn")
    monkeypatch.setenv(CHANNELS_LAST_ENV, "1")
    ref = tmp_path / "ref"
    assert execute_run(tiny, plan, RunContext(ref, data, 1)) is RunStatus.FINISHED
    epochs: list[int] = []
    stopped = tmp_path / "stopped"
    ctx = RunContext(stopped, data, 1,
                     lambda rid, ev: epochs.append(ev["epoch"]) if ev["kind"] == "epoch" else None,
                     stop_requested=lambda: bool(epochs))
    assert execute_run(tiny, plan, ctx) is RunStatus.INTERRUPTED
    monkeypatch.setenv(CHANNELS_LAST_ENV, "0")
    events: list[dict] = []
    ctx = RunContext(stopped, data, 2, lambda rid, ev: events.append(ev), threads_from="given")
    assert execute_run(tiny, plan, ctx) is RunStatus.FINISHED
    assert events[0] == {"kind": "resumed", "epoch": 1}
    assert torch.get_num_threads() == 1
    with Store(ref) as a, Store(stopped) as b:
        (want,), (got,) = a.runs(), b.runs()
    assert got.metrics == want.metrics
    assert got.environment["threads"] == 1
    assert got.environment["threads_from"] == "checkpoint"
