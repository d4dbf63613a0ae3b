"""Throughput of `archlab run --executor ray` on a Ray cluster of 1 node against 2 nodes.

Each configuration starts a fresh cluster on 127.0.0.1 (`ray start --head`, then `ray start
--address` for each further node; one CPU per node, its own temporary directory, no
dashboard), trains the same study from scratch with `archlab run STUDY --executor ray
--address ...` (one CPU and one torch thread per run), times that command (driver start-up,
data put once, every run, the driver's store writes), and stops the cluster. Prints a table:
nodes, runs, wall seconds, runs per minute, and the 1-minute load average before and after
(from /proc/loadavg: on a shared machine, say so beside the figure).

    python benchmarks/ray_nodes.py [--nodes 1 2] [--repeats 4] [--epochs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STUDY = {
    "name": "ray-nodes-bench",
    "seed": 1,
    "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
    "train": {"optimizer": {"name": "adam"}, "batch_size": 64, "epochs": 2},
    "models": {
        "mlp": {"layers": ["Flatten", {"Dense": {"units": 64, "activation": "relu"}},
                           {"Dense": {"units": 10, "activation": "softmax"}}]},
        "cnn": {"layers": [{"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
                           {"MaxPooling2D": {"pool_size": 2}},
                           "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]},
    },
}


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int) -> None:
    for _ in range(20):
        pids = session(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def ray_start(args: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    output, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        kill_session(proc.pid)
        raise SystemExit(f"ray start failed:\n{output.decode(errors='replace')[-2000:]}")
    return proc.pid


def timed(nodes: int, study: Path) -> float:
    temp = Path(tempfile.mkdtemp(prefix="alb", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(temp), RAY_AUTH_MODE="disabled")
    port = free_port()
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1",
              "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]
    sessions = []
    try:
        sessions.append(ray_start(["--head", "--port", str(port), "--temp-dir", str(temp),
                                   "--include-dashboard", "false", *common], env))
        for _ in range(nodes - 1):
            sessions.append(ray_start(["--address", f"127.0.0.1:{port}", *common], env))
        out = temp / "out"
        cmd = [sys.executable, "-m", "archlab", "run", str(study), "--executor", "ray",
               "--address", f"127.0.0.1:{port}", "--out", str(out), "--quiet", "--no-report",
               "--no-timing"]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0
    finally:
        for sid in sessions:
            kill_session(sid)
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=4, help="seeds per model (2 models)")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    cfg = {**STUDY, "train": {**STUDY["train"], "epochs": args.epochs,
                              "repeats": args.repeats}}
    runs = len(cfg["models"]) * args.repeats
    with tempfile.TemporaryDirectory() as d:
        study = Path(d) / "study.yaml"
        study.write_text(yaml.safe_dump(cfg))
        print(f"{runs} runs ({len(cfg['models'])} models x {args.repeats} seeds, "
              f"{args.epochs} epochs, mnist-sample), 1 CPU per node and per run, "
              f"{os.cpu_count()} cores on this machine")
        print(f"{'nodes':>5} {'runs':>5} {'wall s':>8} {'runs/min':>9} {'load before':>12} "
              f"{'load after':>11}")
        for nodes in args.nodes:
            before = load_average()
            wall = timed(nodes, study)
            print(f"{nodes:>5} {runs:>5} {wall:>8.1f} {runs / wall * 60:>9.2f} {before:>12} "
                  f"{load_average():>11}", flush=True)


if __name__ == "__main__":
    main()
