"""How long archlab's light commands take to start, in fresh processes.

    python benchmarks/startup.py [--repeat 7]

Times `archlab --version`, `--help`, `zoo list`, a `validate` refused by a schema error and a
whole `validate zoo:quickstart --no-timing` (each run --repeat times as `python -m archlab`,
wall time from spawn to exit), prints the median, min and max of each as a table, the CPU
model and the load average, and whether each command imported torch (a separate run with
`-X importtime`). Run it on a quiet machine: the numbers are seconds of start-up, and other
processes' load inflates them.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAD_STUDY = ("name: bad\ndata: {dataset: mnist-sample}\nmodels:\n  m:\n    layers:\n"
             "      - Dense: {units: 0}\n")


def commands(bad: Path) -> list[tuple[str, list[str], int]]:
    """(label, archlab arguments, expected exit code)."""
    return [("archlab --version", ["--version"], 0),
            ("archlab --help", ["--help"], 0),
            ("archlab zoo list", ["zoo", "list"], 0),
            ("archlab validate (schema error)", ["validate", str(bad)], 2),
            ("archlab validate zoo:quickstart --no-timing",
             ["validate", "zoo:quickstart", "--no-timing"], 0)]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def once(argv: list[str], expected: int) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "archlab", *argv], capture_output=True,
                          text=True, timeout=300)
    seconds = time.perf_counter() - began
    if done.returncode != expected:
        raise SystemExit(f"{argv}: exit {done.returncode}, expected {expected}\n{done.stderr}")
    return seconds


def imports_torch(argv: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "archlab", *argv],
                          capture_output=True, text=True, timeout=300)
    return any(re.search(r"\|\s+torch$", line.rstrip()) for line in done.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (default 7)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text(BAD_STUDY, encoding="utf-8")
        cmds = commands(bad)
        for _, argv, code in cmds:  # warm the disk cache and the bytecode once
            once(argv, code)
        rows = []
        for label, argv, code in cmds:
            times = [once(argv, code) for _ in range(args.repeat)]
            rows.append((label, statistics.median(times), min(times), max(times),
                         imports_torch(argv)))
    load = os.getloadavg()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; Python {platform.python_version()}; "
          f"{args.repeat} runs each")
    width = max(len(r[0]) for r in rows)
    print(f"| {'command':<{width}} | median (s) | min (s) | max (s) | imports torch |")
    print(f"|{'-' * (width + 2)}|-----------:|--------:|--------:|:-------------:|")
    for label, median, low, high, torch in rows:
        print(f"| {label:<{width}} | {median:10.2f} | {low:7.2f} | {high:7.2f} | "
              f"{'yes' if torch else 'no':^13} |")


if __name__ == "__main__":
    main()
