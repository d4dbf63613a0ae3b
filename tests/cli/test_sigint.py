"""Ctrl-C at any moment of `archlab run` (start-up, imports, the projection, the pool's start
while its fork server imports torch, training, tables and report, shutdown): exit 0 or 130,
no traceback from any process, and no process it started left 3 s later.

Each case starts `archlab run zoo:quickstart` in its own session, as a terminal would, and
sends SIGINT to the whole process group (a terminal's Ctrl-C reaches every process of it,
the fork server and the workers included). The full matrix (5 moments x --jobs 1 and 2) is
marked slow; the default suite keeps one case per risky phase.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: Seconds after the start at which SIGINT is sent, in the issue's matrix.
MOMENTS = (0.3, 1.5, 3.0, 6.0, 10.0)


def session_processes(sid: int) -> list[str]:
    """Live processes of session ``sid`` (pid and command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {command}")
    return found


def run_and_interrupt(tmp_path: Path, at: float | None, jobs: int, *extra: str,
                      twice: bool = False) -> tuple[int, str, list[str]]:
    """Start the run, SIGINT its process group ``at`` seconds in (twice, 0.3 s apart, with
    ``twice``; never with None), wait for it; return its exit code, stderr and the processes
    of its session still alive 3 s after it exited."""
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "archlab", "run", "zoo:quickstart", "--out",
                             str(tmp_path / "study"), "--jobs", str(jobs), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        if at is not None:
            time.sleep(max(0.0, at - (time.monotonic() - began)))
            for i in range(2 if twice else 1):
                if i:
                    time.sleep(0.3)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    time.sleep(3)
    left = session_processes(proc.pid)
    for line in left:  # leave nothing behind for the next test, whatever happened
        pid = int(line.split(":")[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return proc.returncode, err + out, left


def check(code: int, output: str, left: list[str]) -> None:
    assert code in (0, 130), output[-3000:]
    assert "Traceback" not in output, output[-6000:]
    assert "Error" not in output.replace("error: ", ""), output[-3000:]
    assert left == [], left


@pytest.mark.parametrize(("at", "jobs", "twice"), [
    (0.3, 1, False),  # Python's and archlab's own imports
    (6.0, 2, False),  # about when the pool's fork server imports torch
    (4.5, 2, True),  # two Ctrl-C around the pool's start
])
def test_ctrl_c_is_quiet_at_risky_moments(tmp_path: Path, at: float, jobs: int,
                                          twice: bool) -> None:
    check(*run_and_interrupt(tmp_path, at, jobs, twice=twice))


def test_nothing_outlives_a_finished_parallel_run(tmp_path: Path) -> None:
    code, output, left = run_and_interrupt(tmp_path, None, 2, "--epochs", "1", "--repeats", "1",
                                           "--models", "mlp32,conv2", "--no-report")
    assert code == 0, output[-3000:]
    check(code, output, left)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("at", MOMENTS)
def test_ctrl_c_matrix(tmp_path: Path, at: float, jobs: int) -> None:
    check(*run_and_interrupt(tmp_path, at, jobs))
