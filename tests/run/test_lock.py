"""The study directory lock, with real processes: a second `archlab run` on a study in use
exits 2 naming the holder; the kernel frees the lock when its holder dies."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import archlab
from archlab.run import LOCK_FILE, StudyBusyError, StudyLock, plan_runs, run_study
from tests.run.here import main_here

STUDY = """
name: locked
seed: 4
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 64, epochs: 2}
models:
  a:
    layers:
      - Flatten
      - Dense: {units: 16, activation: relu}
      - Dense: {units: 10, activation: softmax}
  b:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
"""

TIMEOUT = 240.0


def _cmd(study: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "archlab", "run", str(study), "--out", str(out), "--threads",
            "1", "--quiet", "--no-report", "--no-timing"]


def _runs(out: Path) -> dict[str, tuple]:
    try:
        with sqlite3.connect(f"file:{out / 'store.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT run_id, status, created_at, updated_at FROM runs")
            return {r[0]: r[1:] for r in rows.fetchall()}
    except sqlite3.OperationalError:  # not created yet
        return {}


@pytest.mark.usefixtures("one_torch_thread")  # main() sets the torch threads of this process
def test_second_run_on_a_study_in_use_exits_2_naming_the_holder(tmp_path: Path, capfd) -> None:
    study = tmp_path / "s.yaml"
    study.write_text(STUDY)
    out = tmp_path / "out"
    first = subprocess.Popen(_cmd(study, out), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    while not any(s == "running" for s, *_ in _runs(out).values()):
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Frozen while it holds the lock, so the second process surely meets it.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        before = _runs(out)
        capfd.readouterr()
        # The second command runs here (no second interpreter start-up): another process.
        code = main_here(_cmd(study, out)[3:], TIMEOUT)
        second = capfd.readouterr()
        assert _runs(out) == before  # it touched no run
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert code == 2
    lines = second.err.strip().splitlines()
    assert len(lines) == 1, second.err
    assert lines[0].startswith(f"error: {out} is in use by another archlab process")
    assert f"pid {first.pid} on " in lines[0] and "since " in lines[0]
    assert "archlab run" in lines[0]  # the holder's command
    assert "projected" not in second.out  # said before any timing

    assert first.wait(timeout=TIMEOUT) == 0, first.stderr.read()
    planned = {p.run_id for p in plan_runs(archlab.load_study(study))}
    runs = _runs(out)
    assert set(runs) == planned and {s for s, *_ in runs.values()} == {"finished"}


class _Holder:
    """Another process holding the study lock of ``directory`` as `holder`: a fork of this one
    (archlab already imported, so no second interpreter start-up), which takes the lock, says
    so on a pipe and sleeps until it is killed."""

    def __init__(self, directory: Path) -> None:
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(read)
                StudyLock(directory, command="holder").acquire()
                os.write(write, b"locked\n")
                time.sleep(600)
            finally:
                os._exit(code)
        os.close(write)
        self.stdout = os.fdopen(read, "r")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:  # SIGKILL: no goodbye, no cleanup code runs
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        self.stdout.close()
        return self.returncode


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    holder = _Holder(tmp_path)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyBusyError, match=rf"pid {holder.pid} on .*`holder`"):
            StudyLock(tmp_path).acquire()
        holder.kill()  # SIGKILL: no goodbye, no cleanup code runs
    finally:
        holder.kill()
        assert holder.wait() == -signal.SIGKILL
    with StudyLock(tmp_path):  # the kernel released it: nothing stale to clean up
        assert (tmp_path / LOCK_FILE).exists()


def _locked_by_someone(directory: Path) -> bool:
    """Whether another open file (as another process would) cannot take the lock."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_lock_is_reentrant_in_one_process_and_released_at_the_end(tmp_path: Path) -> None:
    # The CLI holds the lock for the whole command and run_study takes it again inside.
    with StudyLock(tmp_path):
        with StudyLock(tmp_path):
            assert _locked_by_someone(tmp_path)
        assert _locked_by_someone(tmp_path)  # still held by the outer one
    assert not _locked_by_someone(tmp_path)


def test_run_study_on_a_locked_directory_raises_and_writes_nothing(tmp_path: Path,
                                                                   tiny_study) -> None:
    holder = _Holder(tmp_path)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyBusyError, match="in use by another archlab process"):
            run_study(tiny_study, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]
