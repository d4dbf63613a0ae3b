"""How close the projection comes: projected range against the actual wall time of the run.

    python benchmarks/projection_accuracy.py [STUDY] [--out DIR]

Runs `archlab validate STUDY --retime` (a fresh timing, in a fresh step-timing cache) and
prints its projected wall time, then times `archlab run STUDY --out DIR --no-timing
--no-report --quiet` from spawn to exit, with the load average before and after. STUDY
defaults to benchmarks/projection_fashion3.yaml (needs Fashion-MNIST: Debian's
dataset-fashion-mnist, or --data-dir through ARCHLAB_DATA_DIR). DIR must not hold the study
yet (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default=str(HERE / "projection_fashion3.yaml"))
    parser.add_argument("--out", help="study directory for the run (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ARCHLAB_CACHE_DIR": str(Path(tmp) / "cache"), "COLUMNS": "200"}
        out = args.out or str(Path(tmp) / "study")
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, "-m", "archlab", "validate", args.study,
                               "--retime"], capture_output=True, text=True, env=env,
                              check=True)
        text = " ".join(done.stdout.split())
        projected = re.search(r"projected wall time on this machine \(\w+\): ([^(]+)\(", text)
        print(f"load average while timing: {load:.2f}")
        print(f"projected: {projected.group(1).strip() if projected else '?'}")
        if done.stderr.strip():
            print(" ".join(done.stderr.split()))
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "archlab", "run", args.study, "--out", out,
                        "--no-timing", "--no-report", "--quiet"], capture_output=True,
                       env=env, check=True)
        print(f"actual wall: {time.perf_counter() - began:.1f} s "
              f"(load average after: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
