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
    _share(monkeypatch, None)  # and no real CPU share (the tests below set one)
    projection_note()  # forget timings other tests made in this process
    return directory


def _load(monkeypatch: pytest.MonkeyPatch, per_core: float) -> None:
    """Pretend the machine's 1-minute load average is ``per_core`` per CPU."""
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (per_core * cores, 0.0, 0.0))


def _share(monkeypatch: pytest.MonkeyPatch, share: float | None) -> None:
    """Pretend the timed steps got ``share`` of the CPU time they asked for (None: unknown)."""
    import archlab.run.projection as projection

    monkeypatch.setattr(projection, "_share", lambda before, after: share)


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
    assert note is not None and "unsure" in note and "busy" in note
    assert "load average" in note
    assert projection_note() is None  # said once

    # Still busy: the cached (busy) timing is used rather than a second noisy measurement,
    # and its old load is not quoted as if it were now's.
    assert step_timing(tiny_study, "mlp").cached
    assert projection_note() is None
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


def test_a_starved_timing_is_a_range_and_is_not_cached(tiny_study: archlab.Study,
                                                       cache_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A timing taken while archlab got 30 % of its CPU time says how loaded the machine was:
    it is never cached, and the range spans a quiet machine's time to this load's."""
    from archlab.run.projection import MODEL_ERROR, projected_range

    _load(monkeypatch, 6.0)
    _share(monkeypatch, 0.3)
    timing = step_timing(tiny_study, "mlp")
    assert timing.starved and not timing.reliable and timing.cpu_share == 0.3
    assert timing.quiet_seconds_per_sample == pytest.approx(0.3 * timing.seconds_per_sample)
    assert not (cache_dir / CACHE_FILE).exists()  # not cached
    low, high = projected_range(tiny_study, "mlp")
    assert high / low >= (1 + MODEL_ERROR) ** 2 / 0.3 * 0.999
    note = projection_note()
    assert note is not None and "30%" in note and "not cached" in note and "--retime" in note
    # Its share back (a quiet machine): timed again, cached, and a narrower range.
    _load(monkeypatch, 0.0)
    _share(monkeypatch, 0.97)
    quiet = step_timing(tiny_study, "mlp")
    assert not quiet.cached and not quiet.starved and len(_entries(cache_dir)) == 1
    low, high = projected_range(tiny_study, "mlp")
    assert low < high < low * (1 + MODEL_ERROR) ** 2 * 1.05 / 0.97
    assert step_timing(tiny_study, "mlp").cached


def test_retime_measures_again_and_replaces_the_cached_timing(tiny_study: archlab.Study,
                                                              cache_dir: Path) -> None:
    first = step_timing(tiny_study, "mlp")
    assert step_timing(tiny_study, "mlp").cached
    again = step_timing(tiny_study, "mlp", retime=True)
    assert not again.cached and again.measured_at > first.measured_at
    (entry,) = _entries(cache_dir).values()
    assert entry["measured_at"] == again.measured_at


def test_cpu_clock_sees_a_process_starved_of_cpu() -> None:
    """The real reading, not a pretend one: this thread pinned to one CPU beside two busy
    processes pinned there gets about a third of it, and schedstat says so."""
    import subprocess
    import sys
    import time

    from archlab.run.projection import cpu_clock

    if cpu_clock() is None:
        pytest.skip("the kernel gives no schedstat here")
    cpu = min(os.sched_getaffinity(0))
    before_affinity = os.sched_getaffinity(0)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
            for _ in range(2)]
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.3)  # the hogs are running
        before = cpu_clock()
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            pass
        after = cpu_clock()
    finally:
        os.sched_setaffinity(0, before_affinity)
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert before is not None and after is not None
    ran, waited = after[0] - before[0], after[1] - before[1]
    assert ran / (ran + waited) < 0.7  # (the fixture's pretend share is not used here)


def test_validate_prints_ranges_and_accepts_retime(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _share(monkeypatch, 0.97)
    assert main(["validate", "zoo:quickstart", "--models", "mlp32", "--retime"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "quiet machine to present load" in text
    import re

    assert re.search(r"mlp32 .* \d+(\.\d)?-\d+(\.\d)? (s|min|h)", text), text
