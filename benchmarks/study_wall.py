"""A whole study, start to finish: `archlab run` against the same study scripted in Keras 3 + TF.

The user's real metric: zoo:keras-mnist-cnn for --epochs epochs on the full MNIST, evaluated on
the validation data (the test set, as the notebooks do) every epoch, as `archlab run` from
process start to the printed results table (and to exit: report.html written), against
study_wall_keras.py in the tf venv (benchmarks/setup_peers.sh): the same layers, optimizer,
batch and epochs, ``fit`` with ``validation_data`` then ``evaluate``, from process start to its
printed table. Both use their own default threads, as a user would run them (archlab's default
counts the cores other processes keep busy, from the load average among others, so before each
run the benchmark waits, up to --settle seconds, for the 1-minute load average to fall under
0.3: the previous run's own load would otherwise still be in it). Rounds alternate which goes
first; one untimed warm-up round of each first (disk cache, archlab's decoded-MNIST and
step-timing caches, TensorFlow's first import). Each run's own CPU seconds and the foreign CPU
share of its window (other processes' busy time over elapsed x cores) are printed; the ratio
is of medians over the rounds.

    nice -n 10 bash benchmarks/setup_peers.sh tf      # once
    python benchmarks/study_wall.py --rounds 2 --data-dir ../shared/datasets/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers_worker_common import CLK_TCK, CORES, machine_busy_jiffies  # noqa: E402

STUDY, MODEL = "zoo:keras-mnist-cnn", "cnn"


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(cmd: list[str], env: dict[str, str], table: re.Pattern[str]) -> dict[str, float]:
    """Run ``cmd``; seconds from start to the first stdout line matching ``table`` and to exit,
    its CPU seconds (children's rusage) and the foreign CPU share of its window."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = machine_busy_jiffies(), time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    at_table, lines = None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if at_table is None and table.search(line):
            at_table = time.perf_counter() - t0
    code = proc.wait()
    wall = time.perf_counter() - t0
    busy = machine_busy_jiffies() - busy0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0 or at_table is None:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed (exit {code}):\n{''.join(lines[-20:])}")
    foreign = max(busy / CLK_TCK - cpu, 0.0) / (wall * CORES)
    return {"table_s": at_table, "wall_s": wall, "cpu_s": cpu, "foreign": foreign,
            "load": load}


def archlab_threads(out: Path) -> str:
    db = sqlite3.connect(out / "store.sqlite")
    try:
        (env,) = db.execute("SELECT environment FROM runs LIMIT 1").fetchone()
    finally:
        db.close()
    return str(json.loads(env).get("threads", "?"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "datasets" /
                                              "mnist"))
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--settle", type=float, default=240,
                    help="seconds to wait at most, before each run, for the load average to fall "
                         "under 0.3 (default 240; 0: no wait)")
    args = ap.parse_args()

    def settle() -> None:
        deadline = time.monotonic() + args.settle
        while os.getloadavg()[0] >= 0.3 and time.monotonic() < deadline:
            time.sleep(5)
    keras_python = HERE / ".venvs" / "tf" / "bin" / "python"
    if not keras_python.exists():
        raise SystemExit(f"{keras_python} is missing: run "
                         "`nice -n 10 bash benchmarks/setup_peers.sh tf`")
    from archlab import load_study

    config = load_study(STUDY).to_config()
    layers = config["models"][MODEL]["layers"]
    batch = config["train"]["batch_size"]
    data_dir = str(Path(args.data_dir).resolve())
    keras_env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    tmp = Path(tempfile.mkdtemp(prefix="study-wall-"))

    def archlab(tag: str) -> dict[str, float]:
        settle()
        out = tmp / tag
        r = timed([sys.executable, "-m", "archlab", "run", STUDY, "--epochs", str(args.epochs),
                   "--data-dir", data_dir, "--out", str(out)], dict(os.environ),
                  re.compile(r"^\s*model\s+test acc"))
        r["threads"] = archlab_threads(out)  # type: ignore[assignment]
        return r

    def keras(tag: str) -> dict[str, float]:
        settle()
        return timed([str(keras_python), str(HERE / "study_wall_keras.py"), data_dir,
                      str(args.epochs), str(batch), json.dumps(layers)], keras_env,
                     re.compile(r"^model\s+test acc"))

    load = os.getloadavg()
    print(f"CPU: {cpu_model()} ({CORES} cores); load average at start {load[0]:.2f}; "
          f"{STUDY} {MODEL}, {args.epochs} epochs, batch {batch}, {args.rounds} rounds")
    if not args.no_warmup:
        archlab("warmup")
        keras("warmup")
    rows: dict[str, list[dict[str, float]]] = {"archlab": [], "keras+tf": []}
    for rnd in range(args.rounds):
        order = [("archlab", archlab), ("keras+tf", keras)]
        for name, fn in order if rnd % 2 == 0 else order[::-1]:
            r = fn(f"r{rnd}")
            rows[name].append(r)
            print(f"round {rnd + 1} {name:<9} to table {r['table_s']:6.1f} s, to exit "
                  f"{r['wall_s']:6.1f} s, CPU {r['cpu_s']:6.1f} s, foreign share "
                  f"{r['foreign']:.2f}, load average before {r['load']:.2f}"
                  + (f", threads {r['threads']}" if "threads" in r else ""), flush=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("table_s", "wall_s", "cpu_s")}
           for k, v in rows.items()}
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f}; medians of {args.rounds} rounds")
    print(f"| {'':<9} | to table (s) | to exit (s) | CPU (s) |")
    print("|-----------|-------------:|------------:|--------:|")
    for k, m in med.items():
        print(f"| {k:<9} | {m['table_s']:12.1f} | {m['wall_s']:11.1f} | {m['cpu_s']:7.1f} |")
    ratio = med["archlab"]["table_s"] / med["keras+tf"]["table_s"]
    print(f"whole study, archlab / Keras + TF (start to printed table): {ratio:.2f} "
          f"(target at most 0.80: {'met' if ratio <= 0.8 else 'not met'}); to exit: "
          f"{med['archlab']['wall_s'] / med['keras+tf']['wall_s']:.2f}")


if __name__ == "__main__":
    main()
