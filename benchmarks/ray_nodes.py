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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from archlab.run.ray_local import local_cluster

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


def timed(nodes: int, study: Path) -> float:
    with local_cluster(nodes=nodes) as cluster:
        out = Path(cluster.env["RAY_TMPDIR"]) / "out"
        cmd = [sys.executable, "-m", "archlab", "run", str(study), "--executor", "ray",
               "--address", cluster.address, "--out", str(out), "--quiet", "--no-report",
               "--no-timing"]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=cluster.env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


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
