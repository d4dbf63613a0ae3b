"""`archlab run` as a user meets it: bad values, bad paths, bad data, a full disk, failed runs
and Ctrl-C while starting. Every user error is one line on stderr and exit code 2, found before
any timing and before the study directory exists; a failed run makes the exit code 1."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archlab.cli import main
from tests.run.here import main_here

TINY = """
name: tiny
seed: 3
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 128, epochs: 1}
models:
  mlp:
    layers:
      - Flatten
      - Dense: {units: 16, activation: relu}
      - Dense: {units: 10, activation: softmax}
  lin:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
"""

TIMEOUT = 300


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def _cli(capfd: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """`archlab ARGS` run in this process (no second interpreter importing torch) under the
    time limit, with all it wrote to file descriptors 1 and 2 (its workers' writes too)."""
    capfd.readouterr()  # only this command's output
    code = main_here(list(args), TIMEOUT)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["archlab", *args], code, out, err)


def _statuses(out: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{out / 'store.sqlite'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT model, status FROM runs").fetchall())


@pytest.mark.parametrize(("option", "value"), [
    ("--threads", "-1"), ("--repeats", "-1"), ("--repeats", "0"), ("--jobs", "0"),
    ("--epochs", "0"), ("--batch-size", "0"), ("--models", ","), ("--models", " , ,"),
])
def test_bad_values_are_one_line_naming_the_option(option: str, value: str, tiny_file: Path,
                                                   tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["run", str(tiny_file), option, value, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert _one_error_line(captured.err).startswith(f"error: {option}: ")
    assert captured.out == ""  # refused before any table or timing
    assert not out.exists()


def _read_only_dir(tmp_path: Path, tmpfs: Callable[[Path, str], None]) -> Path:
    """A directory nobody can write into: root ignores permission bits, so a read-only mount."""
    path = tmp_path / "ro"
    if os.geteuid() == 0:
        tmpfs(path, "ro,size=1m")
    else:
        path.mkdir()
        path.chmod(0o555)
    return path


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], None]]:
    """Mount a real tmpfs (skips where this process may not mount); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> None:
        path.mkdir(exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.parametrize("case", ["existing file", "beneath a file", "under a read-only dir"])
def test_bad_out_paths_are_one_line_before_any_timing(case: str, tiny_file: Path,
                                                      tmp_path: Path, tmpfs, capsys) -> None:
    if case == "existing file":
        out = tmp_path / "results.txt"
        out.write_text("keep me")
        expected = "exists and is not a directory"
    elif case == "beneath a file":
        (tmp_path / "file").write_text("keep me")
        out = tmp_path / "file" / "study"
        expected = f"{tmp_path / 'file'} is a file"
    else:
        out = _read_only_dir(tmp_path, tmpfs) / "study"
        expected = "not writable"
    assert main(["run", str(tiny_file), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert line.startswith(f"error: --out: {out}") and expected in line
    assert captured.out == ""  # before the table and its timed projection
    assert not out.is_dir()


def _mnist_copy(mnist_dir: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for f in mnist_dir.glob("*.gz"):
        shutil.copyfile(f, data / f.name)
    return data


def _mnist_study(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(TINY.replace("mnist-sample", "mnist"))
    return path


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("damage", ["truncated", "flipped"])
@pytest.mark.usefixtures("one_torch_thread")  # main() sets the torch threads of this process
def test_corrupt_data_is_one_line_and_creates_nothing(jobs: str, damage: str, mnist_dir: Path,
                                                      tmp_path: Path, capfd) -> None:
    data = _mnist_copy(mnist_dir, tmp_path)
    victim = data / "train-labels-idx1-ubyte.gz"
    raw = bytearray(victim.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # same size and gzip trailer: only a full read finds it
        raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    out = tmp_path / "out"
    done = _cli(capfd, "run", str(_mnist_study(tmp_path)), "--data-dir", str(data), "--jobs",
                jobs, "--out", str(out), "--no-timing", "--quiet")
    assert done.returncode == 2, done.stderr
    assert "train-labels-idx1-ubyte" in _one_error_line(done.stderr)
    assert not out.exists()


def test_a_missing_data_dir_is_one_line(tmp_path: Path, capfd) -> None:
    out = tmp_path / "out"
    done = _cli(capfd, "run", str(_mnist_study(tmp_path)), "--data-dir",
                str(tmp_path / "nowhere"), "--out", str(out), "--no-timing")
    assert done.returncode == 2
    assert "nowhere" in _one_error_line(done.stderr)
    assert not out.exists() and "projected" not in done.stdout


def test_a_failed_run_exits_1_and_says_which_and_why(tiny_file: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys) -> None:
    from archlab.run import single as run_module  # where the study calls execute_run

    real = run_module.execute_run

    def broken(study, plan, ctx):  # noqa: ANN001, ANN202 - execute_run's signature
        if plan.model == "mlp":
            raise RuntimeError("simulated crash inside the run")
        return real(study, plan, ctx)

    monkeypatch.setattr(run_module, "execute_run", broken)
    out = tmp_path / "o"
    args = ["run", str(tiny_file), "--out", str(out), "--quiet", "--no-report", "--no-timing"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "1 run(s) failed:" in captured.err
    assert "mlp#0" in captured.err and "RuntimeError: simulated crash inside the run" in (
        captured.err)
    assert f"study directory: {out}" in captured.out  # where it wrote
    assert _statuses(out) == {"mlp": "failed", "lin": "finished"}

    monkeypatch.setattr(run_module, "execute_run", real)
    assert main(args) == 0  # the rerun retries the failed run
    captured = capsys.readouterr()
    assert "failed" not in captured.err and "1 run(s) already in the store" in captured.out
    assert _statuses(out) == {"mlp": "finished", "lin": "finished"}


def test_a_simulated_full_disk_is_one_line_and_finished_runs_are_kept(
        tiny_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """ENOSPC simulated (an OSError raised by the second run), so this runs anywhere; the
    tests below fill a real tmpfs where this process may mount one."""
    from archlab.run import single as run_module  # where the study calls execute_run

    real = run_module.execute_run

    def full(study, plan, ctx):  # noqa: ANN001, ANN202 - execute_run's signature
        if plan.model == "lin":
            raise OSError(errno.ENOSPC, "No space left on device", str(ctx.directory / "x"))
        return real(study, plan, ctx)

    monkeypatch.setattr(run_module, "execute_run", full)
    out = tmp_path / "o"
    args = ["run", str(tiny_file), "--out", str(out), "--quiet", "--no-report", "--no-timing"]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: disk full: no space left to write in {out}")
    assert _statuses(out) == {"mlp": "finished", "lin": "interrupted"}
    monkeypatch.setattr(run_module, "execute_run", real)
    assert main(args) == 0
    assert _statuses(out) == {"mlp": "finished", "lin": "finished"}


FULL = """
name: full
seed: 5
data: {dataset: mnist-sample, validation: {split: 0.1}}
train: {optimizer: {name: adam}, batch_size: 128, epochs: 2}
models:
  small:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
  big:
    layers:
      - Flatten
      - Dense: {units: 1024, activation: relu}
      - Dense: {units: 10, activation: softmax}
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.usefixtures("one_torch_thread")  # main() sets the torch threads of this process
def test_a_full_tmpfs_is_one_line_and_a_rerun_after_freeing_space_completes(
        jobs: str, tmp_path: Path, tmpfs, capfd) -> None:
    # `big` alone needs ~3 MB of weights (x3 with Adam's moments in its checkpoint): its first
    # checkpoint cannot fit in 3 MB; `small` (31 KB of weights) fits.
    study = tmp_path / "full.yaml"
    study.write_text(FULL)
    disk = tmp_path / "disk"
    tmpfs(disk, "size=3m")
    out = disk / "study"
    args = ("run", str(study), "--out", str(out), "--jobs", jobs, "--threads", "1", "--quiet",
            "--no-timing")
    done = _cli(capfd, *args)
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert line.startswith(f"error: disk full: no space left to write in {out}")
    statuses = _statuses(out)
    assert "failed" not in statuses.values()  # the runs are not at fault
    if jobs == "1":
        assert statuses == {"small": "finished", "big": "interrupted"}  # finished run kept

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    again = _cli(capfd, *args)
    assert again.returncode == 0, again.stderr
    assert _statuses(out) == {"small": "finished", "big": "finished"}
    if jobs == "1":
        assert "1 run(s) already in the store were kept" in again.stdout


STARTUP_CTRL_C = """
import os, signal, sys

class CtrlCWhileImportingTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, mid-import
        return None

sys.meta_path.insert(0, CtrlCWhileImportingTorch())
from archlab.cli import main
from tests.run.here import main_here
sys.exit(main(["validate", "zoo:quickstart", "--no-timing"]))
"""


def test_ctrl_c_during_start_up_imports_is_quiet() -> None:
    done = subprocess.run([sys.executable, "-c", STARTUP_CTRL_C], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 130
    assert "Traceback" not in done.stderr and done.stderr.strip() == "interrupted"


def test_validate_finds_a_missing_dataset_without_reading_it(tmp_path: Path, capsys) -> None:
    study = _mnist_study(tmp_path)
    assert main(["validate", str(study), "--no-timing", "--data-dir",
                 str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    assert main(["validate", str(study), "--models", ",", "--no-timing"]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith("error: --models: ")
