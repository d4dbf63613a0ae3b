"""Wall time of a 4-model study with --jobs 1 against --jobs 2 (and more), side by side.

Each configuration trains the same study from scratch into a fresh directory; rounds are
interleaved so drifting machine load hits every configuration alike. Prints medians and the
speed-up over --jobs 1.

    python benchmarks/jobs_speedup.py [--rounds 3] [--jobs 1 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from archlab import parse_study, run_study

STUDY = {
    "name": "jobs-bench",
    "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
    "train": {"optimizer": {"name": "adam"}, "batch_size": 64, "epochs": 2},
    "models": {
        f"cnn{k}": {"layers": [
            {"Conv2D": {"filters": 16, "kernel_size": k, "padding": "same",
                        "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}},
            {"Conv2D": {"filters": 32, "kernel_size": 3, "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}},
            "Flatten",
            {"Dense": {"units": 64, "activation": "relu"}},
            {"Dense": {"units": 10, "activation": "softmax"}},
        ]} for k in (2, 3, 4, 5)
    },
}


def timed(jobs: int, epochs: int) -> float:
    cfg = {**STUDY, "train": {**STUDY["train"], "epochs": epochs}}
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        outcome = run_study(parse_study(cfg), out, jobs=jobs)
        elapsed = time.perf_counter() - t0
    assert set(outcome.statuses.values()) == {"finished"}, outcome.statuses
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    times: dict[int, list[float]] = {j: [] for j in args.jobs}
    for _ in range(args.rounds):
        for j in args.jobs:
            times[j].append(timed(j, args.epochs))
    base = statistics.median(times[args.jobs[0]])
    print(f"4-model study on mnist-sample, {args.epochs} epochs, {os.cpu_count()} cores, "
          f"{args.rounds} rounds (threads per job = cores / jobs)")
    print(f"{'jobs':>5}{'median wall (s)':>18}{'all rounds (s)':>30}{'speed-up':>10}")
    for j in args.jobs:
        med = statistics.median(times[j])
        rounds = ", ".join(f"{t:.1f}" for t in times[j])
        print(f"{j:>5}{med:>18.1f}{rounds:>30}{base / med:>10.2f}")


if __name__ == "__main__":
    main()
