"""Crash safety with real signals: SIGKILL at several moments, a dying worker, Ctrl-C.

Every scenario ends with a rerun of the same command and checks the store holds exactly the
planned runs, all finished, with metrics identical to an uninterrupted run (CPU determinism:
same seeds, same threads per job). The signals hit `archlab run` subprocesses; the reference
and the reruns run the same command in this process (tests/run/here.py: no second interpreter
to import torch, and the fork server of ``--jobs 2`` is started once for them all).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import archlab
from archlab.run import plan_runs
from tests.run.here import main_here
from tests.run.peek import query

STUDY = """
name: crashy
seed: 1
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 64, epochs: 3}
models:
  mlp:
    layers:
      - Flatten
      - Dense: {units: 32, activation: relu}
      - Dense: {units: 10, activation: softmax}
  cnn:
    layers:
      - Conv2D: {filters: 8, kernel_size: 3, activation: relu}
      - MaxPooling2D: {pool_size: 2}
      - Flatten
      - Dense: {units: 10, activation: softmax}
  cnn2:
    layers:
      - Conv2D: {filters: 6, kernel_size: 5, padding: same, activation: relu}
      - MaxPooling2D: {pool_size: 2}
      - Dropout: {rate: 0.2}
      - Flatten
      - Dense: {units: 10, activation: softmax}
"""

TIMEOUT = 240.0


def _args(study: Path, out: Path, jobs: int) -> list[str]:
    return ["run", str(study), "--out", str(out), "--jobs", str(jobs), "--threads", "1",
            "--quiet", "--no-report", "--no-timing"]


def _cmd(study: Path, out: Path, jobs: int) -> list[str]:
    return [sys.executable, "-m", "archlab", *_args(study, out, jobs)]


def _start(study: Path, out: Path, jobs: int) -> subprocess.Popen:
    return subprocess.Popen(_cmd(study, out, jobs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(proc: subprocess.Popen, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        assert proc.poll() is None, f"study ended before the kill point: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.05)


def _metrics(out: Path) -> dict[str, tuple]:
    rows = query(out, "SELECT run_id, status, epochs_done, train_loss, val_loss, test_loss, "
                       "test_accuracy FROM runs")
    return {r[0]: r[1:] for r in rows}


def _finish(study: Path, out: Path, jobs: int) -> None:
    """The same command, run to its end here (its stderr is in the test's captured output)."""
    assert main_here(_args(study, out, jobs), TIMEOUT) == 0


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_kept() -> Iterator[None]:
    """`main` sets this process's torch threads (--threads 1): restored for later modules."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "crashy.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def reference(study_file: Path, tmp_path_factory) -> dict[str, tuple]:
    out = tmp_path_factory.mktemp("reference")
    _finish(study_file, out, jobs=2)
    return _metrics(out)


def _check_complete(out: Path, reference: dict[str, tuple], study_file: Path) -> None:
    planned = {p.run_id for p in plan_runs(archlab.load_study(study_file))}
    got = _metrics(out)
    assert set(got) == planned  # exactly the planned runs: nothing lost, nothing duplicated
    assert got == reference  # bit-identical to the uninterrupted study
    assert query(out, "PRAGMA integrity_check") == [("ok",)]
    epochs = query(out, "SELECT run_id, COUNT(*), MAX(epoch) FROM epochs GROUP BY run_id")
    assert sorted(epochs) == sorted((rid, 3, 3) for rid in planned)
    assert not list(out.glob("runs/*/checkpoint.safetensors*"))


def test_sigkill_at_three_moments_then_rerun_matches(study_file: Path, tmp_path: Path,
                                                     reference: dict[str, tuple]) -> None:
    out = tmp_path / "study"
    moments: list[Callable[[], bool]] = [
        # 1. mid-training, before any epoch of any run was recorded
        lambda: bool(query(out, "SELECT 1 FROM runs WHERE status='running'")),
        # 2. after some epochs (checkpoints on disk), before any run finished
        lambda: bool(query(out, "SELECT 1 FROM epochs")),
        # 3. with at least one run finished and others still to do
        lambda: bool(query(out, "SELECT 1 FROM runs WHERE status='finished'")),
    ]
    for moment in moments:
        proc = _start(study_file, out, jobs=2)
        _wait_for(proc, moment)
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and both workers, no goodbye
        proc.wait(timeout=30)
        assert query(out, "PRAGMA integrity_check") in ([], [("ok",)])
    _finish(study_file, out, jobs=2)
    _check_complete(out, reference, study_file)


def _children(parent: int) -> list[tuple[int, bytes]]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append((int(stat.parent.name), cmdline))
    return out


def _worker_pids(parent: int) -> list[int]:
    """Run workers: the children of the study's fork server."""
    servers = [pid for pid, cmd in _children(parent) if b"forkserver" in cmd]
    return [pid for server in servers for pid, _ in _children(server)]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it ended since it was listed
            os.kill(pid, sig)


def test_dead_worker_marks_run_failed_and_rerun_retries(study_file: Path, tmp_path: Path,
                                                        reference: dict[str, tuple]) -> None:
    out = tmp_path / "study"
    proc = _start(study_file, out, jobs=2)
    mid_run = "SELECT 1 FROM runs WHERE status='running' AND epochs_done BETWEEN 1 AND 2"
    deadline = time.monotonic() + TIMEOUT
    while True:
        # A run mid-training (an epoch recorded, not finished) and its worker alive. The
        # workers are frozen before the store is read again, so what is read is still true
        # when they die: a kill cannot land after a run's last write.
        _wait_for(proc, lambda: bool(query(out, mid_run)) and bool(_worker_pids(proc.pid)))
        victims = _worker_pids(proc.pid)
        _signal(victims, signal.SIGSTOP)
        if query(out, mid_run):
            break
        _signal(victims, signal.SIGCONT)  # the moment passed before the freeze: go on
        assert time.monotonic() < deadline, "no run was ever caught mid-training"
    _signal(victims, signal.SIGKILL)  # as the OOM killer would
    # The study goes on without them, and says which runs failed and why.
    assert proc.wait(timeout=TIMEOUT) == 1
    stderr = proc.stderr.read().decode()
    failed = query(out, "SELECT error FROM runs WHERE status='failed'")
    assert failed and all("signal 9" in e for (e,) in failed)
    assert f"{len(failed)} run(s) failed" in stderr and "signal 9" in stderr
    statuses = query(out, "SELECT status FROM runs")
    assert len(statuses) == 3 and {s for (s,) in statuses} == {"failed", "finished"}
    _finish(study_file, out, jobs=2)  # the rerun retries the failed runs
    _check_complete(out, reference, study_file)


def test_ctrl_c_stops_cleanly_and_rerun_resumes(study_file: Path, tmp_path: Path,
                                                reference: dict[str, tuple]) -> None:
    out = tmp_path / "study"
    proc = _start(study_file, out, jobs=1)
    _wait_for(proc, lambda: bool(query(
        out, "SELECT 1 FROM epochs JOIN runs USING (run_id) WHERE model='cnn'")))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=TIMEOUT) == 130
    assert "rerun the same command to resume" in proc.stderr.read().decode()
    assert sorted(query(out, "SELECT model, status FROM runs")) == [
        ("cnn", "interrupted"), ("mlp", "finished")]
    assert list(out.glob("runs/*/checkpoint.safetensors"))
    # jobs=1 runs in-process with --threads 1, like each worker: same numbers.
    _finish(study_file, out, jobs=1)
    _check_complete(out, reference, study_file)


def test_second_ctrl_c_stops_at_once(study_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    proc = _start(study_file, out, jobs=1)
    _wait_for(proc, lambda: bool(query(out, "SELECT 1 FROM runs WHERE status='running'")))
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert query(out, "PRAGMA integrity_check") == [("ok",)]
