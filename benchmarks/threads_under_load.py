"""torch threads under foreign load: archlab training steps with 1 and 2 threads, with and
without one busy background core, interleaved; prints medians, ratios and what
``default_threads`` chose in each condition.

Each measurement trains one epoch of a zoo model on a slice of the embedded mnist-sample
(archlab's own ``fit``, training seconds only). "Busy" is one child process spinning in a pure
Python loop (one core taken) started a second before the measurement and stopped after it.
Conditions are interleaved round by round (order alternating) so drift in the machine's own
load hits all of them alike.

    python benchmarks/threads_under_load.py [--rounds 3] [--samples 1024] [--model cnn]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from archlab import build_model, load_study, parse_study
from archlab.data import load_dataset, prepare_tensors
from archlab.run.environment import busy_cores, default_threads
from archlab.spec import override_training
from archlab.train import fit

MODELS = {"cnn": ("zoo:keras-mnist-cnn", "cnn"), "quickstart-cnn": ("zoo:quickstart", None),
          "mlp": ("zoo:mlp-hparams", "mlp128-drop")}


def spin() -> subprocess.Popen[bytes]:
    """One busy core: a child process in a pure-Python loop, until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def one_epoch(study, model: str, data, threads: int) -> float:  # type: ignore[no-untyped-def]
    torch.set_num_threads(threads)
    built = build_model(study, model, seed=0)
    return fit(built, data, study.train_for(model), 0).train_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=1024, help="training images per epoch")
    ap.add_argument("--model", choices=sorted(MODELS), default="cnn")
    args = ap.parse_args()
    source, model = MODELS[args.model]
    config = load_study(source).to_config()
    config["data"].update(dataset="mnist-sample", validation={"split": 0.1})
    study = override_training(parse_study(config), epochs=1)
    model = model or next(m for m in study.models if "cnn" in m)
    data = prepare_tensors(load_dataset("mnist-sample"), study.data, 0)
    data.x_train, data.y_train = data.x_train[:args.samples], data.y_train[:args.samples]
    data.x_val, data.y_val = data.x_val[:200], data.y_val[:200]
    one_epoch(study, model, data, 1)  # warm-up: allocator, oneDNN kernel selection
    cores = os.cpu_count()
    print(f"torch {torch.__version__}, {cores} cores, {source}:{model}, {args.samples} images "
          f"per epoch, {args.rounds} rounds; load average at start {os.getloadavg()[0]:.2f}")
    conditions = [(busy, t) for busy in (False, True) for t in (1, 2)]
    times: dict[tuple[bool, int], list[float]] = {c: [] for c in conditions}
    chosen: dict[bool, list[tuple[int, float | None]]] = {False: [], True: []}
    for r in range(args.rounds):
        for busy in ((False, True) if r % 2 == 0 else (True, False)):
            child = spin() if busy else None
            try:
                time.sleep(1.0)  # the spinner is running before anything is measured
                b = busy_cores()
                chosen[busy].append((default_threads(1, b), b))
                for t in ((1, 2) if r % 2 == 0 else (2, 1)):
                    times[(busy, t)].append(one_epoch(study, model, data, t))
            finally:
                if child is not None:
                    child.kill()
                    child.wait()
    print(f"\n{'background':<22}{'threads':>8}{'median s/epoch':>16}{'runs':>28}"
          f"{'vs 1 thread':>13}")
    for busy in (False, True):
        base = statistics.median(times[(busy, 1)])
        for t in (1, 2):
            xs = times[(busy, t)]
            med = statistics.median(xs)
            label = "one core busy" if busy else "as found"
            print(f"{label:<22}{t:>8}{med:>16.3f}{' '.join(f'{x:.2f}' for x in xs):>28}"
                  f"{med / base:>12.2f}x")
    for busy in (False, True):
        picks = ", ".join(f"{n} (busy_cores {b})" for n, b in chosen[busy])
        print(f"default_threads(1) {'one core busy' if busy else 'as found'}: {picks}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
