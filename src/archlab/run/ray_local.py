"""Ray nodes on this machine, on 127.0.0.1: a head and worker nodes started with ``ray start``,
for trying ``archlab run --executor ray --address ...`` with more than one node and no cluster
(docs/ray.md). The Ray tests and ``benchmarks/ray_nodes.py`` start theirs with it.

Each node runs in a session of its own, so that one node's processes (its raylet and every
worker it started) can be killed together, and every process left is killed when the cluster
is closed. The nodes share a temporary directory of their own, without a dashboard, usage
stats or token authentication (else a local instance saves a token in ~/.ray that every later
``ray start --head`` on the machine asks for).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalCluster", "free_port", "kill_session", "local_cluster", "ray_env",
           "session_pids", "start_node"]


@dataclass
class LocalCluster:
    address: str  # host:port of the head node, for ``--address``
    sessions: dict[str, int]  # node ("head", "worker", "worker2", ...) -> its session id
    env: dict[str, str]  # the environment the nodes run in: give it to drivers too


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env(temp: Path) -> dict[str, str]:
    """This machine's environment for Ray nodes and drivers in ``temp``: no RAY_* settings from
    outside (RAY_ADDRESS above all), no usage stats, no token authentication, and this archlab
    importable by Ray's workers."""
    from archlab import version  # its file's folder's parent: the directory archlab is in

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(temp), RAY_AUTH_MODE="disabled",
               PYTHONPATH=os.pathsep.join([str(Path(version.__file__).parents[1]),
                                           env.get("PYTHONPATH", "")]))
    return env


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies excluded), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` until none is left (or 2 s have passed)."""
    for _ in range(20):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def start_node(args: list[str], env: dict[str, str], timeout: float = 180.0) -> int:
    """``ray start ARGS`` in a new session; returns that session's id. A node that fails to
    start is killed, and RuntimeError carries the end of what ``ray start`` printed."""
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        raise
    if proc.returncode != 0:
        kill_session(proc.pid)
        raise RuntimeError(f"ray start failed:\n{output.decode(errors='replace')[-3000:]}")
    return proc.pid


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1,
                  object_store_mb: int = 100) -> Iterator[LocalCluster]:
    """A head node and ``nodes - 1`` worker nodes on 127.0.0.1 (a free port), each with
    ``cpus_per_node`` CPUs; every node's processes are killed and the temporary directory
    removed on exit."""
    temp = Path(tempfile.mkdtemp(prefix="alr", dir="/tmp"))  # short: Unix socket paths
    env = ray_env(temp)
    port = free_port()
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node),
              "--object-store-memory", str(object_store_mb * 2**20), "--disable-usage-stats"]
    sessions: dict[str, int] = {}
    try:
        sessions["head"] = start_node(["--head", "--port", str(port), "--temp-dir", str(temp),
                                       "--include-dashboard", "false", *common], env)
        for i in range(1, nodes):
            name = "worker" if i == 1 else f"worker{i}"
            sessions[name] = start_node(["--address", f"127.0.0.1:{port}", *common], env)
        yield LocalCluster(f"127.0.0.1:{port}", sessions, env)
    finally:
        for sid in sessions.values():
            kill_session(sid)
        shutil.rmtree(temp, ignore_errors=True)
