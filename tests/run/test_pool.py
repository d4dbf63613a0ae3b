"""The worker pool (--jobs 2) with real processes and real signals.

Every test checks the pool leaves nothing behind: each `archlab run` starts in its own session,
and once it has exited no process of that session may remain (workers and fork server
included). A hang fails the test on its timeout instead of blocking the suite. The rerun
that ends a scenario runs the same command in this process (tests/run/here.py: no second
interpreter to import torch, and one fork server for every rerun); the signals still hit
real `archlab run` subprocesses.
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
from typing import Any

import pytest
import torch

import archlab
from archlab.errors import DataError
from archlab.run import plan_runs, run_study
from tests.run.here import main_here
from tests.run.peek import query

STUDY = """
name: pool
seed: 2
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 32, epochs: 3}
models:
  a:
    layers:
      - Flatten
      - Dense: {units: 32, activation: relu}
      - Dense: {units: 10, activation: softmax}
  b:
    layers:
      - Flatten
      - Dense: {units: 24, activation: relu}
      - Dense: {units: 10, activation: softmax}
  c:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
"""

TIMEOUT = 240.0


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_kept() -> Iterator[None]:
    """The reruns here set this process's torch threads (--threads 1): restored afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(STUDY)
    return path


def _start(study: Path, out: Path, stderr: Path, jobs: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "archlab", "run", str(study), "--out", str(out), "--jobs",
           str(jobs), "--threads", "1", "--quiet", "--no-report", "--no-timing"]
    with open(stderr, "wb") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies excluded: they are dead, only unreaped)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _children(parent: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _workers(parent: int) -> list[int]:
    """Run workers: the children of the run's fork server (its child running `forkserver`)."""
    servers = [pid for pid in _children(parent)
               if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return [pid for server in servers for pid in _children(server)]


def _wait_for(proc: subprocess.Popen, cond: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while not (value := cond()):
        assert proc.poll() is None, f"the study ended before {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)
    return value


def _assert_nothing_left(proc: subprocess.Popen) -> None:
    """Every process the run started has gone (waiting a little: orphans stop at a batch)."""
    deadline = time.monotonic() + 30
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _session(proc.pid)
    for pid in left:  # never leave them to the rest of the suite
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def _rerun_completes(study: Path, out: Path) -> None:
    """The same command again, here (its stderr is in the test's captured output)."""
    assert main_here(["run", str(study), "--out", str(out), "--jobs", "2", "--threads", "1",
                      "--quiet", "--no-report", "--no-timing"], TIMEOUT) == 0
    planned = {p.run_id for p in plan_runs(archlab.load_study(study))}
    assert dict(query(out, "SELECT run_id, status FROM runs")) == dict.fromkeys(planned,
                                                                                 "finished")
    assert query(out, "PRAGMA integrity_check") == [("ok",)]


def test_a_finished_study_leaves_no_process(study_file: Path, tmp_path: Path) -> None:
    proc = _start(study_file, tmp_path / "out", tmp_path / "err")
    assert proc.wait(timeout=TIMEOUT) == 0, (tmp_path / "err").read_text()
    _assert_nothing_left(proc)


def test_workers_killed_at_birth_never_hang_the_pool(study_file: Path, tmp_path: Path) -> None:
    # Each new worker is killed as soon as it appears: while it unpickles its job, loads
    # data or sends its first progress events over its pipe. A lock shared between workers
    # (a multiprocessing.Queue) could die held here; per-worker pipes have none to hold.
    out = tmp_path / "out"
    proc = _start(study_file, out, tmp_path / "err")
    killed: set[int] = set()
    while proc.poll() is None and len(killed) < 3:
        for pid in set(_workers(proc.pid)) - killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.01)
    assert proc.wait(timeout=TIMEOUT) == 1  # some runs failed: said, and the exit code is 1
    _assert_nothing_left(proc)
    failed = query(out, "SELECT error FROM runs WHERE status='failed'")
    assert failed and all("signal 9" in e for (e,) in failed)
    stderr = (tmp_path / "err").read_text()
    assert f"{len(failed)} run(s) failed" in stderr and "Traceback" not in stderr
    _rerun_completes(study_file, out)


def test_first_ctrl_c_stops_workers_at_their_next_batch(study_file: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(study_file, out, tmp_path / "err")
    _wait_for(proc, lambda: query(out, "SELECT 1 FROM epochs"), "an epoch recorded")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=TIMEOUT) == 130
    _assert_nothing_left(proc)
    stderr = (tmp_path / "err").read_text()
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    statuses = {s for (s,) in query(out, "SELECT status FROM runs")}
    assert "interrupted" in statuses and statuses <= {"interrupted", "finished"}
    assert list(out.glob("runs/*/checkpoint.safetensors"))  # kept, to resume from
    _rerun_completes(study_file, out)


def test_second_ctrl_c_kills_workers_at_once(study_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    err = tmp_path / "err"
    proc = _start(study_file, out, err)
    _wait_for(proc, lambda: query(out, "SELECT 1 FROM runs WHERE status='running'")
              and _workers(proc.pid), "a worker training")
    workers = _workers(proc.pid)
    for worker in workers:  # frozen: they cannot stop by themselves after the first Ctrl-C
        os.kill(worker, signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    _wait_for(proc, lambda: "Ctrl-C again" in err.read_text(), "the first Ctrl-C handled")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130  # the frozen workers did not hold it up
    _assert_nothing_left(proc)
    assert "Traceback" not in err.read_text()
    assert query(out, "PRAGMA integrity_check") == [("ok",)]
    _rerun_completes(study_file, out)


def test_orphaned_workers_stop_when_the_parent_dies(study_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(study_file, out, tmp_path / "err")
    _wait_for(proc, lambda: query(out, "SELECT 1 FROM epochs") and _workers(proc.pid),
              "a worker training")
    os.kill(proc.pid, signal.SIGKILL)  # the parent alone: its workers are orphaned
    proc.wait(timeout=30)
    _assert_nothing_left(proc)  # they notice at their next batch and stop
    _rerun_completes(study_file, out)


class _CorruptAfterCheck:
    """A progress view that damages a data file once the parent has verified the data: the
    workers then meet a data error the parent did not see."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def start(self, plans: list[Any], skipped: int) -> None:
        data = self.victim.read_bytes()
        self.victim.write_bytes(data[: len(data) // 2])

    def event(self, run_id: str, event: dict[str, Any]) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_data_error_in_workers_is_raised_once_not_as_failed_runs(mnist_dir: Path,
                                                                   tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for f in mnist_dir.glob("*.gz"):
        (data / f.name).write_bytes(f.read_bytes())
    study = tmp_path / "s.yaml"
    study.write_text(STUDY.replace("mnist-sample", "mnist").replace("epochs: 3", "epochs: 1"))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="t10k-labels"):
        run_study(archlab.load_study(study), out, data_dir=data, jobs=2, threads=1,
                  progress=_CorruptAfterCheck(data / "t10k-labels-idx1-ubyte.gz"))
    statuses = [s for (s,) in query(out, "SELECT status FROM runs")]
    assert statuses and "failed" not in statuses  # the runs are not at fault
    assert set(statuses) <= {"interrupted"}

