"""Thread counts, layouts and evaluation chunks: the load-aware default, --threads honoured
exactly, a resumed run keeping the thread count and layout its checkpoint recorded
(bit-identical numbers), the per-model layout probe (cached; never for a model whose dropout
sees conv activations) and the per-model evaluation chunk."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

import archlab
from archlab.data import Tensors
from archlab.engine import EVAL_BATCH, EVAL_MEMORY, eval_batch_for
from archlab.layout import CHANNELS_LAST_ENV, prefer_channels_last, uses_channels_last
from archlab.run import RunContext, execute_run, plan_runs, run_study
from archlab.run.environment import busy_cores, default_threads
from archlab.spec import override_training
from archlab.store import RunStatus, Store
from archlab.train import fit

CORES = os.cpu_count() or 1
#: the module (archlab.run re-exports its function environment() under the same name)
env_mod = importlib.import_module("archlab.run.environment")
layout = importlib.import_module("archlab.layout")


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
    run_study(one, tmp_path / "pool", repeats=1, threads=1, jobs=2)  # a --jobs worker's run
    assert run_threads(tmp_path / "pool") == (1, "given")


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


def conv_without_4d_dropout(tiny: archlab.Study) -> archlab.Study:
    """TINY's cnn with its Dropout after Flatten: no random layer sees a 4-D tensor."""
    cfg = tiny.to_config()
    layers = cfg["models"]["cnn"]["layers"]
    cfg["models"] = {"cnn": {"layers": [layers[0], layers[1], "Flatten", layers[2],
                                        layers[4]]}}
    return archlab.parse_study(cfg)


def test_layout_probe_is_cached_and_skipped_for_4d_dropout(
        tiny: archlab.Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(CHANNELS_LAST_ENV, raising=False)
    timed: list[int] = []

    def fake_timing(*args: object) -> dict[bool, float]:
        timed.append(1)
        return {False: 1.0, True: 2.0}  # NCHW twice as fast

    monkeypatch.setattr(layout, "_time_layouts", fake_timing)
    monkeypatch.setattr(layout, "_layouts", {})
    # TINY's cnn drops out conv activations: the layout decides its masks, so NHWC, untimed.
    built = archlab.build_model(tiny, "cnn", seed=0)
    assert prefer_channels_last(built.module, built.input_shape) is True
    assert uses_channels_last(built.module) and timed == []
    study = conv_without_4d_dropout(tiny)
    built = archlab.build_model(study, "cnn", seed=0)
    rng = torch.get_rng_state()
    assert prefer_channels_last(built.module, built.input_shape) is False  # the faster one
    assert torch.equal(torch.get_rng_state(), rng)  # the run's dropout stream untouched
    assert timed == [1] and (tmp_path / layout.LAYOUT_CACHE_FILE).exists()
    monkeypatch.setattr(layout, "_layouts", {})  # a new process: read from the file
    again = archlab.build_model(study, "cnn", seed=0)
    assert prefer_channels_last(again.module, again.input_shape) is False
    assert timed == [1]
    monkeypatch.setenv(CHANNELS_LAST_ENV, "1")  # forced
    assert prefer_channels_last(again.module, again.input_shape) is True


def test_layout_changes_numbers_by_float_rounding_only(
        tiny: archlab.Study, data: Tensors, monkeypatch: pytest.MonkeyPatch) -> None:
    study = conv_without_4d_dropout(tiny)
    results = {}
    for forced in ("0", "1"):
        monkeypatch.setenv(CHANNELS_LAST_ENV, forced)
        torch.manual_seed(5)
        built = archlab.build_model(study, "cnn", seed=5)
        results[forced] = fit(built, data, study.train_for("cnn"), 5).final
    for k, v in results["0"].items():
        assert results["1"][k] == pytest.approx(v, abs=2e-3), k


def test_evaluation_chunks_shrink_only_for_big_activations(tiny: archlab.Study) -> None:
    assert eval_batch_for(archlab.build_model(tiny, "cnn")) == EVAL_BATCH
    m10 = archlab.build_model(archlab.load_study("zoo:kernels-padding"), "m10")
    chunk = eval_batch_for(m10)
    assert 100 < chunk < EVAL_BATCH
    per_image = sum(m.activation_bytes for m in m10.memory.layers) / m10.memory.batch_size / 2
    assert chunk * per_image <= EVAL_MEMORY
