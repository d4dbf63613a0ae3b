"""Packed repeats: what packing 5 seeds buys, per zoo architecture and for a whole study.

Part 1 (``--part probe``): for every model of every zoo study, the packed/separate training
throughput ratio for 5 repeats and what `archlab run` does with it: pack, separate (measured
slower packed), or separate without a probe (a CNN on the CPU; a config that cannot be
packed, and why). Conv-free models: the probe `archlab run` uses (fit against fit_packed on
synthetic input of the model's shape, timed here without the cache). CNNs: bare training
steps (forward, backward, optimizer step) on synthetic input, one warm-up and
``--conv-steps`` timed steps each way (a packed step of a large CNN takes seconds).

Part 2 (``--part study``): the headline. `archlab run` of notebook 004's 32-32 MLP under its own
protocol (zoo:mlp-hparams' mlp32: plain SGD, batch 64, 20 epochs, full MNIST, validation on the
test set) with 1 repeat, with 5 repeats (packed where the probe says so) and with 5 repeats
``--no-pack``: wall time of each `archlab run` process, rounds interleaved, medians and ratios.

    python benchmarks/repeats.py [--part probe|study|both] [--threads 1] [--rounds 1]
        [--epochs 20] [--data-dir ../shared/datasets/mnist] [--studies quickstart,...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from archlab import build_model, load_study
from archlab.layout import prefer_channels_last
from archlab.optim import make_optimizer
from archlab.packed import PackedModel, pack_blocker
from archlab.run.environment import default_threads
from archlab.run.pack import PACK_MIN_RATIO, conv_on_cpu, pack_probe

ZOO = Path(__file__).resolve().parents[1] / "src" / "archlab" / "zoo"
MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bare_ratio(study: Any, model: str, n: int, steps: int) -> tuple[float, float, float]:
    """(separate step s, packed step s, ratio) of bare training steps (forward, backward,
    optimizer step) on synthetic input: one warm-up step each, then ``steps`` interleaved."""
    train = study.train_for(model)
    single = build_model(study, model, seed=0)
    prefer_channels_last(single.module)
    opt1, _ = make_optimizer(train.optimizer, single.module.parameters())
    pack = PackedModel([build_model(study, model, seed=i) for i in range(n)])
    optn, _ = make_optimizer(train.optimizer, list(pack.leaves.values()))
    h, w, c = single.input_shape
    x = torch.rand(n, train.batch_size, c, h, w)
    y = torch.randint(0, single.output_shape[0], (n, train.batch_size))
    gens = [torch.Generator().manual_seed(i) for i in range(n)]

    def separate() -> float:
        t0 = time.perf_counter()
        loss = F.cross_entropy(single.module(x[0]), y[0])
        opt1.zero_grad()
        loss.backward()
        opt1.step()
        return time.perf_counter() - t0

    def packed() -> float:
        t0 = time.perf_counter()
        losses, _ = pack.train_step_forward(x, y, pack.draw_masks(train.batch_size, gens))
        optn.zero_grad()
        losses.sum().backward()
        optn.step()
        return time.perf_counter() - t0

    separate()
    packed()
    sep, pk = [], []
    for _ in range(steps):
        sep.append(separate())
        pk.append(packed())
    s, p = statistics.median(sep), statistics.median(pk)
    return s, p, n * s / p


def probe_table(studies: list[str], n: int, steps: int, budget: float,
                conv_steps: int) -> None:
    t_start = time.perf_counter()
    print(f"## Part 1: packed/separate throughput, {n} repeats, {torch.get_num_threads()} "
          f"thread(s); load average before: {load()}\n")
    print("| study | model | batch | separate step (ms) | packed step (ms) | ratio | how "
          "measured | run does |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    ratios: dict[str, float] = {}
    for name in studies:
        study = load_study(f"zoo:{name}")
        for model in study.models:
            bs = study.train_for(model).batch_size
            why = pack_blocker(study, model)
            if why is not None:
                print(f"| {name} | {model} | {bs} | | | | | separate: {why} |", flush=True)
                continue
            if conv_on_cpu(study, model, "cpu"):
                s, p, ratio = bare_ratio(study, model, n, conv_steps)
                how = f"bare steps x{conv_steps}"
                does = "separate (CNN on the CPU: not probed)"
            else:
                probe = pack_probe(study, model, n, steps=steps, budget_s=budget,
                                   use_cache=False)
                s, p, ratio = probe.separate_step_s, probe.packed_step_s, probe.ratio
                how = "probe (fit vs fit_packed)"
                does = "pack" if probe.pack else f"separate (ratio < {PACK_MIN_RATIO})"
            ratios[f"{name}:{model}"] = ratio
            print(f"| {name} | {model} | {bs} | {s * 1e3:.2f} | {p * 1e3:.2f} | "
                  f"{ratio:.2f}x | {how} | {does} |", flush=True)
    if ratios:
        packed = sorted(r for r in ratios.values() if r >= PACK_MIN_RATIO)
        print(f"\n{len(packed)} of {len(ratios)} packable models at >= {PACK_MIN_RATIO}x; "
              f"median ratio {statistics.median(ratios.values()):.2f}x; load average after: "
              f"{load()}; {time.perf_counter() - t_start:.0f} s\n")


def run_cli(args: list[str], cache: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one `archlab run` process. CPU time
    moves far less than wall time with other processes' load on a shared machine."""
    env = {**os.environ, "ARCHLAB_CACHE_DIR": cache}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "archlab", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def study_table(threads: int, rounds: int, epochs: int, data_dir: Path) -> None:
    base = ["run", "zoo:mlp-hparams", "--models", "mlp32", "--data-dir", str(data_dir),
            "--epochs", str(epochs), "--quiet", "--no-report", "--no-timing"]
    if threads > 0:  # 0: archlab's own choice (default_threads), as a user's run gets it
        base += ["--threads", str(threads)]
    else:
        threads = default_threads()
    configs = {"1 repeat": ["--repeats", "1"], "5 repeats": ["--repeats", "5"],
               "5 repeats --no-pack": ["--repeats", "5", "--no-pack"]}
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        os.environ["ARCHLAB_CACHE_DIR"] = cache
        torch.set_num_threads(threads)
        study = load_study("zoo:mlp-hparams")
        t0 = time.perf_counter()
        probe = pack_probe(study, "mlp32", 5)  # what the first packed run would pay, cached
        probe_s = time.perf_counter() - t0
        chosen = "given" if "--threads" in base else "archlab's default"
        print(f"## Part 2: archlab run, mlp32 (batch {study.train_for('mlp32').batch_size}, "
              f"{epochs} epochs, full MNIST), {threads} thread(s) ({chosen})\n")
        print(f"probe: {probe_s:.1f} s, ratio {probe.ratio:.2f}x -> "
              f"{'pack' if probe.pack else 'separate'} (cached for the runs below)")
        times: dict[str, list[float]] = {k: [] for k in configs}
        cpu: dict[str, list[float]] = {k: [] for k in configs}
        loads: list[str] = [load()]
        for r in range(rounds):
            for label, extra in configs.items():
                out = str(Path(tmp) / f"{r}-{label.replace(' ', '_')}")
                wall, used = run_cli([*base, *extra, "--out", out], cache)
                times[label].append(wall)
                cpu[label].append(used)
                loads.append(load())
                print(f"  round {r + 1}: {label}: {wall:.1f} s wall, {used:.1f} s CPU "
                      f"(load {loads[-1]})", flush=True)
    one = statistics.median(times["1 repeat"])
    one_cpu = statistics.median(cpu["1 repeat"])
    print("\n| config | wall s (median) | vs 1 repeat | CPU s (median) | vs 1 repeat | runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, ts in times.items():
        c = statistics.median(cpu[label])
        print(f"| {label} | {statistics.median(ts):.1f} | {statistics.median(ts) / one:.2f}x | "
              f"{c:.1f} | {c / one_cpu:.2f}x | {len(ts)} |")
    print(f"\nload averages (1, 5, 15 min) before and after each run: {' / '.join(loads)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("probe", "study", "both"), default="both")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 0: archlab's default (part 2 passes no --threads)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="timed packed steps per model")
    ap.add_argument("--budget", type=float, default=1.5, help="seconds per side, at most")
    ap.add_argument("--conv-steps", type=int, default=1,
                    help="timed bare steps per CNN (a packed CNN step can take seconds)")
    ap.add_argument("--studies", default=",".join(sorted(p.stem for p in ZOO.glob("*.yaml"))))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--data-dir", type=Path, default=MNIST)
    args = ap.parse_args()
    torch.set_num_threads(args.threads or default_threads())
    if args.part in ("probe", "both"):
        probe_table(args.studies.split(","), args.repeats, args.steps, args.budget,
                    args.conv_steps)
    if args.part in ("study", "both"):
        study_table(args.threads, args.rounds, args.epochs, args.data_dir)


if __name__ == "__main__":
    main()
