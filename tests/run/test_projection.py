"""Projected training time: step timings cached per architecture and machine, a warning when
the machine is busy, --no-timing, and the load recorded in each run's environment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.cli import main
from archlab.run import environment, run_study
from archlab.run.projection import (
    ASSUMED_MACS_PER_S,
    BUSY_LOAD_PER_CORE,
    CACHE_FILE,
    TIMED_STEP_S,
    _two_batch_timing,
    projected_seconds,
    projection_note,
    step_timing,
    timed_batch,
)
from archlab.store import Store


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(directory))
    _load(monkeypatch, 0.0)  # a quiet machine unless a test says otherwise: no real load
    projection_note()  # forget timings other tests made in this process
    return directory


def _load(monkeypatch: pytest.MonkeyPatch, per_core: float) -> None:
    """Pretend the machine's 1-minute load average is ``per_core`` per CPU."""
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (per_core * cores, 0.0, 0.0))


def _entries(cache_dir: Path) -> dict[str, Any]:
    return json.loads((cache_dir / CACHE_FILE).read_text())


def test_step_timings_are_cached_per_architecture(tiny_study: archlab.Study,
                                                  cache_dir: Path) -> None:
    first = step_timing(tiny_study, "mlp")
    assert not first.cached and first.seconds_per_sample > 0
    again = step_timing(tiny_study, "mlp")
    assert again.cached and again.seconds_per_sample == first.seconds_per_sample
    # The projection reuses it: the same model projects the same time, every time.
    assert projected_seconds(tiny_study, "mlp") == projected_seconds(tiny_study, "mlp")
    assert len(_entries(cache_dir)) == 1

    # Another model, another batch size, another thread count: each is its own entry.
    assert not step_timing(tiny_study, "cnn").cached
    bigger = archlab.parse_study(tiny_study.to_config() | {
        "train": tiny_study.train.to_config() | {"batch_size": 64}})
    assert not step_timing(bigger, "mlp").cached
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert not step_timing(tiny_study, "mlp").cached
    finally:
        torch.set_num_threads(threads)
    assert len(_entries(cache_dir)) == 4
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in cache_dir.iterdir()) == [CACHE_FILE]


def test_a_heavy_model_is_timed_on_smaller_batches() -> None:
    # kernels-padding's m10: 1,076 M MACs per sample, batch 128. A step of the full batch
    # would take far longer than TIMED_STEP_S, so a batch of a few images is timed.
    small = timed_batch(1_076_550_000, 128, "cpu")
    assert 2 <= small < 8
    assert timed_batch(1_076_550_000, 128, "cuda") == 128  # a GPU times the real batch
    light = int(4 * TIMED_STEP_S * ASSUMED_MACS_PER_S / (3 * 128)) - 1
    assert timed_batch(light, 128, "cpu") == 128
    assert timed_batch(10**12, 1, "cpu") == 1


def test_two_batch_timing_recovers_the_part_that_does_not_scale() -> None:
    # A step costs a + c·batch (a: the optimizer step and weight reads, which a smaller batch
    # does not shrink): scaling one small batch up would count `a` once per small batch.
    a, c = 0.6, 0.12
    calls: list[int] = []

    def step(bs: int) -> float:
        calls.append(bs)
        return a + c * bs

    timing = _two_batch_timing(step, 3, 12, 128, None)
    assert timing.seconds_per_sample == pytest.approx((a + c * 128) / 128)
    assert (a + c * 3) / 3 > 2 * timing.seconds_per_sample  # what one small batch would say
    assert calls == [3, 3, 12, 3]  # a warm-up, then the small batch either side of the big
    assert timing.spread == 0.0


def test_a_model_timed_on_smaller_batches_is_projected_for_its_own(
        tiny_study: archlab.Study, monkeypatch: pytest.MonkeyPatch) -> None:
    import archlab.run.projection as projection

    monkeypatch.setattr(projection, "ASSUMED_MACS_PER_S", 1e3)  # every model "heavy"
    calls: list[int] = []
    real = projection._two_batch_timing

    def spy(step: Any, b1: int, b2: int, batch: int, load: Any) -> Any:
        calls.append(b1)
        return real(step, b1, b2, batch, load)

    monkeypatch.setattr(projection, "_two_batch_timing", spy)
    small = step_timing(tiny_study, "cnn", use_cache=False).seconds_per_sample
    assert calls == [2]  # timed at batches 2 and 8, projected for the model's 128
    assert small > 0.0


def test_a_damaged_cache_is_measured_again_and_rewritten(tiny_study: archlab.Study,
                                                         cache_dir: Path) -> None:
    cache_dir.mkdir()
    (cache_dir / CACHE_FILE).write_text('{"half a fi')
    assert not step_timing(tiny_study, "mlp").cached
    assert len(_entries(cache_dir)) == 1
    assert step_timing(tiny_study, "mlp").cached


def test_a_busy_machine_makes_the_projection_unreliable(tiny_study: archlab.Study,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _load(monkeypatch, BUSY_LOAD_PER_CORE + 1.0)
    timing = step_timing(tiny_study, "mlp")
    assert timing.busy and not timing.reliable
    note = projection_note()
    assert note is not None and "unreliable" in note and "busy" in note
    assert "load average" in note
    assert projection_note() is None  # said once

    # Still busy: the cached (busy) timing is used rather than a second noisy measurement.
    assert step_timing(tiny_study, "mlp").cached
    assert "busy" in (projection_note() or "")
    # Quiet again: an unreliable entry is measured again.
    _load(monkeypatch, 0.0)
    assert not step_timing(tiny_study, "mlp").cached


def test_dry_run_no_timing_times_nothing(tmp_path: Path, cache_dir: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["run", "zoo:quickstart", "--dry-run", "--no-timing", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MACs/sample" in text and "projected" not in text
    assert not cache_dir.exists() and not out.exists()

    assert main(["run", "zoo:quickstart", "--dry-run", "--out", str(out)]) == 0
    assert "projected" in capsys.readouterr().out
    study = archlab.load_study("zoo:quickstart")
    assert len(_entries(cache_dir)) == len(study.models)  # one timing per model, kept


def test_each_run_records_the_load_and_cpu_count(tiny_study: archlab.Study, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _load(monkeypatch, 1.25)
    cores = os.cpu_count()
    env = environment(1)
    assert env["cpu_count"] == cores
    assert env["load_average"] == pytest.approx(1.25 * cores, abs=0.01)
    one = archlab.parse_study(tiny_study.to_config() | {
        "models": {"mlp": tiny_study.models["mlp"].to_config()}})
    run_study(one, tmp_path, threads=1)
    with Store(tmp_path) as store:
        (run,) = store.runs()
    assert run.environment["cpu_count"] == cores
    assert run.environment["load_average"] == pytest.approx(1.25 * cores, abs=0.01)
