"""The Ray executor (``archlab run --executor ray``) with real Ray nodes on 127.0.0.1.

One cluster is shared by the module's cluster tests (Ray's start-up is their cost): a head
node and a worker node, each started with ``ray start`` in its own session (so that one
node's processes, workers included, can be killed, and every process left is killed at
teardown), one CPU each, on a free port, with their own temporary directory, without a
dashboard or usage stats. The `archlab run` drivers run as subprocesses, each in its own
session, also cleaned up whatever happens. Numbers are compared with the same study trained
here with ``--jobs 1`` on one thread: on the CPU they must be equal, resumed or not.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

import archlab
from archlab.cli import main
from archlab.errors import ArchlabError
from archlab.run import run_study
from archlab.run.ray_executor import RayExecutor, require_ray
from archlab.run.ray_local import (
    LocalCluster,
    free_port,
    kill_session,
    local_cluster,
    ray_env,
    session_pids,
)
from archlab.store import CHECKPOINT_FILE, WEIGHTS_FILE, RunRecord, RunStatus, Store
from tests.conftest import TINY

RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not RAY, reason="ray is not installed (pip install 'archlab[ray]')")

#: Four runs (TINY's two models x two seeds), four epochs each: long enough to kill a node
#: mid-run.
STUDY: dict[str, Any] = {
    **copy.deepcopy(TINY), "name": "rayed", "seed": 5,
    "train": {"optimizer": {"name": "adam"}, "batch_size": 64, "epochs": 4, "repeats": 2},
}
TIMEOUT = 300.0


# -- without Ray: flags and the missing-module message ---------------------------------------


def test_missing_ray_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ArchlabError, match=r"^ray is not installed: pip install 'archlab\[ray\]'$"):
        require_ray()
    study = _write_study(tmp_path)
    code = main(["run", str(study), "--executor", "ray", "--out", str(tmp_path / "o"),
                 "--no-timing", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith(
        "ray is not installed: pip install 'archlab[ray]'")
    assert not (tmp_path / "o").exists()


def test_archlab_imports_without_ray() -> None:
    # `import ray` fails in this interpreter: archlab, its CLI and the executor still import.
    code = ("import sys; sys.modules['ray'] = None\n"
            "import archlab, archlab.cli.commands, archlab.run.ray_executor\n"
            "from archlab.run import RayExecutor, run_study\n"
            "assert RayExecutor().threads == 1\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(("flags", "message"), [
    (["--address", "127.0.0.1:1"], "--address: Expected --executor ray with it, received "
                                   "--executor local"),
    (["--executor", "ray", "--jobs", "2"], "--jobs: Expected 1 with --executor ray"),
    (["--executor", "ray", "--threads", "2"], "--threads: Expected --ray-cpus-per-run"),
    (["--executor", "ray", "--ray-cpus-per-run", "0"],
     "--ray-cpus-per-run: Expected a whole number >= 1, received 0"),
    (["--executor", "ray", "--ray-gpus-per-run", "-0.5"],
     "--ray-gpus-per-run: Expected a number of GPUs >= 0"),
    (["--executor", "ray", "--ray-retries", "-1"],
     "--ray-retries: Expected a whole number >= 0, received -1"),
])
def test_ray_flags_are_checked_first(flags: list[str], message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    study = _write_study(tmp_path)
    code = main(["run", str(study), "--out", str(tmp_path / "o"), "--no-timing", "--quiet",
                 *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@needs_ray
def test_unreachable_address_is_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # Ray itself would retry for minutes; nothing is written.
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for given, expected in ((address, f"Expected a Ray head node listening at {address}, "
                                      "received ConnectionRefusedError"),
                            ("ray://head:10001", "Expected HOST:PORT of a Ray head node")):
        code = main(["run", str(_write_study(tmp_path)), "--executor", "ray", "--address",
                     given, "--out", str(tmp_path / "o"), "--no-timing", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_store_import_file(tmp_path: Path) -> None:
    # How the driver keeps what a worker made: the bytes, and their checksum.
    with Store(tmp_path) as store:
        store.start_run("r1", "m", 0, 1, {}, {})
        store.import_file("r1", WEIGHTS_FILE, b"first")
        store.import_file("r1", WEIGHTS_FILE, b"second, replacing it")
        assert store.read_verified("r1", WEIGHTS_FILE) == b"second, replacing it"
        assert [p.name for p in store.run_dir("r1").iterdir()] == [WEIGHTS_FILE]  # no temp
        with pytest.raises(ArchlabError, match="Expected one of"):
            store.import_file("r1", "other.bin", b"x")


def test_executor_resources() -> None:
    assert RayExecutor().threads == 1 and RayExecutor().device == "cpu"
    assert RayExecutor(cpus_per_run=3, gpus_per_run=0.25).threads == 3
    assert RayExecutor(gpus_per_run=0.25).device == "cuda"
    with pytest.raises(ArchlabError, match="Expected a fraction below 1 or a whole number"):
        RayExecutor(gpus_per_run=1.5)


# -- with Ray: a real head node and a real worker node ---------------------------------------


@dataclass
class Cluster(LocalCluster):
    def node_id(self, node: str) -> str:
        """The Ray node id of ``node`` ("head", "worker"), from its raylet's command line."""
        for pid in session_pids(self.sessions[node]):
            with contextlib.suppress(OSError):
                for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    if arg.startswith(b"--node_id="):
                        return arg.split(b"=", 1)[1].decode()
        raise AssertionError(f"no raylet in the {node} node's session")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and a worker node, one CPU each (archlab.run.ray_local)."""
    if not RAY:
        pytest.skip("ray is not installed")
    with local_cluster(nodes=2) as c:
        yield Cluster(c.address, c.sessions, c.env)


def _write_study(tmp_path: Path, **train: Any) -> Path:
    config = {**STUDY, "train": {**STUDY["train"], **train}}
    path = tmp_path / "rayed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _archlab(args: list[str], env: dict[str, str], stderr: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "archlab", "run", *args, "--quiet", "--no-report",
           "--no-timing"]
    with open(stderr, "wb") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)


def _wait(proc: subprocess.Popen, stderr: Path) -> int:
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"archlab run hung:\n{stderr.read_text()[-3000:]}")
    finally:
        kill_session(proc.pid)  # whatever it left (a local Ray instance included)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study trained here (``--jobs 1``), one run at a time on one thread, never packed."""
    out = tmp_path_factory.mktemp("reference")
    run_study(archlab.parse_study(STUDY), out, threads=1, pack=False)
    return out


def _runs(out: Path) -> dict[str, RunRecord]:
    with Store(out) as store:
        return {r.run_id: r for r in store.runs()}


def _assert_same_numbers(out: Path, reference_dir: Path, model: str | None = None) -> None:
    runs = _runs(out)
    reference = {k: r for k, r in _runs(reference_dir).items() if model in (None, r.model)}
    assert len(runs) == len(reference) >= 2 and set(runs) == set(reference)
    with Store(out) as store, Store(reference_dir) as ref:
        for rid, run in runs.items():
            assert run.status is RunStatus.FINISHED, (rid, run.error)
            assert run.metrics == reference[rid].metrics
            assert [{k: v for k, v in row.items() if k != "seconds"}
                    for row in store.history(rid)] == \
                [{k: v for k, v in row.items() if k != "seconds"} for row in ref.history(rid)]
            ours = load_file(store.verify_file(rid, WEIGHTS_FILE))
            theirs = load_file(ref.verify_file(rid, WEIGHTS_FILE))
            assert ours.keys() == theirs.keys()
            assert all(torch.equal(ours[k], theirs[k]) for k in ours)
            assert not (store.run_dir(rid) / CHECKPOINT_FILE).exists()
            assert run.environment["executor"] == "ray" and run.environment["threads"] == 1


@needs_ray
@pytest.mark.ray
def test_local_instance_without_address(tmp_path: Path, reference: Path) -> None:
    temp = Path(tempfile.mkdtemp(prefix="all", dir="/tmp"))
    try:
        study, out, err = _write_study(tmp_path), tmp_path / "out", tmp_path / "err"
        proc = _archlab([str(study), "--models", "mlp", "--executor", "ray", "--out", str(out)],
                        ray_env(temp), err)
        assert _wait(proc, err) == 0, err.read_text()[-3000:]
        _assert_same_numbers(out, reference, "mlp")
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _pids_named(prefix: str, sessions: list[int]) -> list[int]:
    """Processes of ``sessions`` whose command line (a Ray worker's title) starts so."""
    found = []
    for pid in {p for sid in sessions for p in session_pids(sid)}:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(prefix.encode()):
                found.append(pid)
    return found


@needs_ray
@pytest.mark.ray
def test_retries_spent_mark_the_run_failed(tmp_path: Path, cluster: Cluster) -> None:
    # Every attempt's worker is killed while it trains: after 1 retry the run is failed.
    study = _write_study(tmp_path, epochs=200, repeats=1)
    out, err = tmp_path / "out", tmp_path / "err"
    proc = _archlab([str(study), "--models", "mlp", "--executor", "ray", "--address",
                     cluster.address, "--ray-retries", "1", "--out", str(out)], cluster.env, err)
    killed: list[int] = []

    def killer() -> None:
        while proc.poll() is None:
            for pid in _pids_named("ray::train_task", list(cluster.sessions.values())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.1)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        code = _wait(proc, err)
    finally:
        thread.join()
    assert code == 1, err.read_text()[-3000:]
    assert len(set(killed)) >= 2  # the first attempt and its one retry
    (run,) = _runs(out).values()
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "retries spent" in run.error
    assert "\n" not in run.error
    assert any("retry 1 of 1" in w for w in run.warnings)
    assert "retries spent" in err.read_text()


@needs_ray
@pytest.mark.ray
def test_run_no_node_can_hold_is_refused(tmp_path: Path, cluster: Cluster) -> None:
    # Every node has 1 CPU: a run asking for 2 would wait forever; one line instead.
    out, err = tmp_path / "out", tmp_path / "err"
    proc = _archlab([str(_write_study(tmp_path)), "--executor", "ray", "--address",
                     cluster.address, "--ray-cpus-per-run", "2", "--out", str(out)],
                    cluster.env, err)
    assert _wait(proc, err) == 2
    lines = err.read_text().strip().splitlines()
    assert len(lines) == 1 and "Expected a Ray node with 2 CPU(s)" in lines[0], lines
    assert "at most 1 CPU(s)" in lines[0]
    assert not _maybe_runs(out)  # nothing trained, no run recorded


def _wait_until(proc: subprocess.Popen, err: Path, out: Path,
                ready: Callable[[list[RunRecord]], bool]) -> list[RunRecord]:
    """Poll the store until ``ready(runs)``; return those runs."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert proc.poll() is None, err.read_text()[-3000:]
        assert time.monotonic() < deadline, "the runs never got there"
        runs = _maybe_runs(out)
        if ready(runs):
            return runs
        time.sleep(0.05)


@needs_ray
@pytest.mark.ray
def test_ctrl_c_then_worker_node_killed_mid_run(tmp_path: Path, cluster: Cluster,
                                                reference: Path) -> None:
    # Runs last in this module: the worker node does not come back.
    study, out = _write_study(tmp_path), tmp_path / "out"
    args = [str(study), "--executor", "ray", "--address", cluster.address, "--out", str(out)]

    # Ctrl-C once a run has an epoch in the store (and two to go): its task is cancelled, the
    # run is interrupted, its checkpoint kept (verified), and the command exits 130.
    err = tmp_path / "err-ctrl-c"
    proc = _archlab(args, cluster.env, err)
    try:
        _wait_until(proc, err, out, lambda runs: any(
            r.status is RunStatus.RUNNING and 1 <= r.epochs_done <= 2 for r in runs))
        os.kill(proc.pid, signal.SIGINT)
        code = _wait(proc, err)
    finally:
        kill_session(proc.pid)
    assert code == 130, err.read_text()[-3000:]
    runs = _runs(out)
    assert not [r for r in runs.values() if r.status is RunStatus.RUNNING]
    kept = [r for r in runs.values() if r.status is RunStatus.INTERRUPTED and r.epochs_done]
    assert kept, [(r.status, r.epochs_done) for r in runs.values()]
    with Store(out) as store:
        for run in kept:
            assert store.read_verified(run.run_id, CHECKPOINT_FILE)

    # The same command again, and the worker node killed while a run trains on it, at least
    # one epoch in (the driver holds a checkpoint) and at least one epoch from its end.
    err = tmp_path / "err"
    worker = cluster.node_id("worker")

    def on_worker(runs: list[RunRecord]) -> list[RunRecord]:
        return [r for r in runs if r.status is RunStatus.RUNNING and 1 <= r.epochs_done <= 3
                and r.environment.get("ray_node") == worker]

    proc = _archlab(args, cluster.env, err)
    try:
        (victim,) = on_worker(_wait_until(proc, err, out, on_worker))
        kill_session(cluster.sessions["worker"])  # its raylet and every worker it started
        code = _wait(proc, err)
    finally:
        kill_session(proc.pid)
    assert code == 0, err.read_text()[-3000:]
    runs = _runs(out)
    retried = [r for r in runs.values() if any("ray worker lost" in w for w in r.warnings)]
    assert [r.run_id for r in retried] == [victim.run_id], [r.warnings for r in runs.values()]
    assert any(re.search(r"retry 1 of 2 from epoch [1-3]$", w) for w in retried[0].warnings)
    assert runs[victim.run_id].environment["ray_node"] == cluster.node_id("head")
    _assert_same_numbers(out, reference)


def _running(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status is RunStatus.RUNNING]


def _maybe_runs(out: Path) -> list[RunRecord]:
    if not (out / "store.sqlite").exists():
        return []
    try:
        return list(_runs(out).values())
    except ArchlabError:  # being created
        return []
