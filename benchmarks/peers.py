"""archlab against its peers: Keras 3 + TensorFlow, Keras 3 + JAX and a plain PyTorch loop.

The same models (from archlab's zoo specs), batch sizes, optimizers and synthetic MNIST-shaped
data (28x28x1, 10 classes) for every peer:

  cnn         keras-mnist-cnn's cnn              Adam      batch 128
  conv3-wide  depth-l2's conv3-wide (3x Conv2D(64, same) + BN + Dropout)  Adadelta  batch 128
  mlp32       mlp-hparams' 32-32 MLP             SGD (lr 0.09, momentum 0.9)  batch 32

Each run is a fresh subprocess (peers_worker_*.py; the Keras peers with the python of
benchmarks/.venvs/{tf,jax}, made by benchmarks/setup_peers.sh) that times ``--steps`` training
steps after a warm-up and prints JSON. Rounds are interleaved (archlab, tf, jax, torch, then
again). For each run the worker records the machine's foreign CPU share over its timed window
(/proc/stat busy jiffies minus its own utime+stime, over elapsed x cores; the benchmark's own
--background-load is left out) and runs above --max-foreign are dropped. Each round also times
a large fp32 matmul on the same threads: the GEMM peak that achieved GFLOP/s are compared with
(training FLOPs per sample = 3 x forward MACs x 2).

    nice -n 10 bash benchmarks/setup_peers.sh      # once, ~1 GB
    python benchmarks/peers.py --rounds 3
    python benchmarks/peers.py --models mlp32 --peers archlab,jax --variant compile
    python benchmarks/peers.py --background-load --threads 1 --peers archlab
    python benchmarks/peers.py --profile 25 --models conv3-wide   # archlab's ops, no timing
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers_worker_common import CORES, Snapshot, cpu_window  # noqa: E402

#: name -> (zoo study, zoo model, optimizer, batch size, default steps, default warm-up steps)
MODELS = {
    "cnn": ("zoo:keras-mnist-cnn", "cnn", {"name": "adam"}, 128, 40, 5),
    "conv3-wide": ("zoo:depth-l2", "conv3-wide", {"name": "adadelta"}, 128, 30, 5),
    "mlp32": ("zoo:mlp-hparams", "mlp32", {"name": "sgd", "learning_rate": 0.09,
                                           "momentum": 0.9}, 32, 3000, 300),
}
PEERS = ("archlab", "tf", "jax", "torch")
OPTIONAL_PEERS = ("tf-xla",)  # Keras 3 + TensorFlow with jit_compile=True (XLA)


def peer_command(peer: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if peer.startswith("archlab"):
        return [sys.executable, str(HERE / "peers_worker_archlab.py")], env
    if peer == "torch":
        return [sys.executable, str(HERE / "peers_worker_torch.py")], env
    venv = HERE / ".venvs" / peer.split("-")[0] / "bin" / "python"
    if not venv.exists():
        raise SystemExit(f"{venv} is missing: run `nice -n 10 bash benchmarks/setup_peers.sh`")
    env["KERAS_BACKEND"] = {"tf": "tensorflow", "tf-xla": "tensorflow", "jax": "jax"}[peer]
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return [str(venv), str(HERE / "peers_worker_keras.py")], env


def run_worker(peer: str, job: dict, timeout: float, xla_dump: Path | None = None) -> dict:
    cmd, env = peer_command(peer)
    if peer == "tf-xla":
        job = dict(job, jit_compile=True)
    if xla_dump is not None and peer in ("tf", "tf-xla", "jax"):
        env["XLA_FLAGS"] = (f"--xla_dump_to={xla_dump / (peer + '-' + job['name'])} "
                            "--xla_dump_hlo_as_text")
    if job["threads"]:  # 0: each engine's own default
        env["OMP_NUM_THREADS"] = str(job["threads"])
    if job.get("variant") == "omp-passive":  # idle OpenMP threads sleep instead of spinning
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        job = dict(job, variant="eager")
    try:
        proc = subprocess.run(cmd + [json.dumps(job)], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over --timeout {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if job.get("profile"):
        result["profile"] = proc.stderr
    return result


def gemm_peak(threads: int, background_pid: int | None, n: int = 2048,
              seconds: float = 1.5) -> dict:
    """fp32 GEMM GFLOP/s of one large torch matmul, repeated for ~``seconds``, on ``threads``."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    reps = 0
    start = Snapshot.take(background_pid)
    while True:
        torch.mm(a, b)
        reps += 1
        if time.perf_counter() - start.wall >= seconds:
            break
    window = cpu_window(start, Snapshot.take(background_pid))
    return {"gflops": 2 * n ** 3 * reps / window["seconds"] / 1e9, **window}


def macs_per_sample(name: str) -> int:
    from archlab import build_model, load_study, parse_study
    source, model, *_ = MODELS[name]
    config = load_study(source).to_config()
    config["models"] = {model: config["models"][model]}
    return build_model(parse_study(config), model, seed=0).macs_per_sample


def start_background_load() -> subprocess.Popen:
    """One busy-loop process pinned to core 0 for the whole benchmark."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(proc.pid, {0})
    return proc


def kept_runs(runs: list[dict], limit: float) -> tuple[list[dict], bool]:
    """Runs at or under the foreign-share limit; all of them (marked noisy) if none is."""
    ok = [r for r in runs if "error" not in r]
    kept = [r for r in ok if r["foreign_share"] <= limit]
    return (kept, False) if kept else (ok, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=CORES,
                    help="threads per run (default: cores); 0: each engine's own default "
                         "(archlab: the cores other processes leave free, as archlab run "
                         "chooses; TensorFlow, JAX, torch: every core)")
    ap.add_argument("--steps", type=int, help="timed steps per run (default: per model)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per run (default: per model)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the per-model default steps and warm-ups (a busy machine)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"comma-separated, of {', '.join(PEERS + OPTIONAL_PEERS)}")
    ap.add_argument("--variant", choices=["autograd", "compile", "omp-passive"], action="append",
                    default=[],
                    help="also time archlab with this variant (autograd: no written-out MLP "
                         "step; compile: torch.compile'd model; omp-passive: "
                         "OMP_WAIT_POLICY=PASSIVE)")
    ap.add_argument("--max-foreign", type=float, default=0.05,
                    help="drop runs whose foreign CPU share is above this (default 0.05)")
    ap.add_argument("--background-load", action="store_true",
                    help="keep one busy-loop process pinned to core 0 for the whole benchmark")
    ap.add_argument("--profile", type=int, metavar="ROWS",
                    help="print torch.profiler's top ROWS ops of archlab's timed epoch; no table")
    ap.add_argument("--xla-dump", type=Path, help="dump the Keras peers' optimized HLO here")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    peers = [p for p in args.peers.split(",") if p]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r} (one of {', '.join(MODELS)})")
    for p in peers:
        if p not in PEERS + OPTIONAL_PEERS:
            raise SystemExit(f"unknown peer {p!r} (one of {', '.join(PEERS + OPTIONAL_PEERS)})")
    if "archlab" in peers:
        peers[peers.index("archlab") + 1:peers.index("archlab") + 1] = [
            f"archlab[{v}]" for v in args.variant]

    def job(name: str, seed: int, **extra) -> dict:
        source, model, optimizer, batch, steps, warmup = MODELS[name]
        from archlab import load_study
        layers = load_study(source).to_config()["models"][model]["layers"]
        return {"name": name, "layers": layers, "optimizer": optimizer, "batch_size": batch,
                "steps": args.steps or max(1, round(steps * args.scale)),
                "warmup": args.warmup or max(1, round(warmup * args.scale)),
                "threads": args.threads, "seed": seed, "background_pid": bg_pid, **extra}

    # A SIGTERM (timeout, kill) unwinds like Ctrl-C, so the background load is ended.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    background = start_background_load() if args.background_load else None
    bg_pid = background.pid if background else None
    try:
        if args.profile:
            for name in models:
                r = run_worker("archlab", job(name, 0, profile=args.profile), args.timeout)
                print(f"== archlab, {name}: {r.get('samples_per_s', 0):,.0f} samples/s "
                      f"(profiled epoch) {r.get('error', '')}")
                print(r.get("profile", ""))
            return
        jobs = {name: job(name, 0) for name in models}
        print(f"{CORES} cores, {args.threads} threads per run, {args.rounds} rounds, "
              f"max foreign share {args.max_foreign}"
              + (", background load: 1 busy core (pinned to core 0)" if background else ""))
        print("steps per run: " + ", ".join(f"{n} {j['steps']} (+{j['warmup']} warm-up), batch "
                                             f"{j['batch_size']}" for n, j in jobs.items()))
        runs: dict[tuple[str, str], list[dict]] = {(m, p): [] for m in models for p in peers}
        gemms: list[dict] = []
        versions: dict[str, str] = {}
        for rnd in range(args.rounds):
            gemms.append(gemm_peak(args.threads or CORES, bg_pid))
            g = gemms[-1]
            print(f"round {rnd + 1}: GEMM {g['gflops']:.1f} GFLOP/s "
                  f"(foreign {g['foreign_share']:.2f})", flush=True)
            for name in models:
                for peer in peers:
                    j = dict(jobs[name], seed=rnd)
                    if peer.startswith("archlab["):
                        j["variant"] = peer[len("archlab["):-1]
                    r = run_worker(peer, j, args.timeout, args.xla_dump)
                    runs[name, peer].append(r)
                    if "error" in r:
                        print(f"  {name:<11}{peer:<17} failed: {r['error']}", flush=True)
                        continue
                    versions.setdefault(peer, r.get("version") or r.get("torch", ""))
                    flag = "" if r["foreign_share"] <= args.max_foreign else "  (dropped)"
                    print(f"  {name:<11}{peer:<17}{r['samples_per_s']:>10,.0f} samples/s  "
                          f"foreign {r['foreign_share']:.2f}  own {r['own_cpu_share']:.2f}  "
                          f"threads {r.get('threads', '?')}{flag}", flush=True)
        summarize(args, models, peers, runs, gemms, versions)
    finally:
        if background is not None:
            background.kill()
            background.wait()


def summarize(args, models, peers, runs, gemms, versions) -> None:
    gkept, gnoisy = kept_runs(gemms, args.max_foreign)
    peak = statistics.median(g["gflops"] for g in gkept)
    all_runs = [r for rs in runs.values() for r in rs if "error" not in r]
    kept_all = [r for r in all_runs if r["foreign_share"] <= args.max_foreign]
    print()
    print(f"versions: {', '.join(f'{p} {v}' for p, v in versions.items())}")
    print(f"GEMM peak (fp32 2048x2048 matmul, {args.threads or CORES} threads): {peak:.1f} GFLOP/s "
          f"(median of {len(gkept)}{' noisy' if gnoisy else ''} rounds)")
    print(f"runs: {len(all_runs)}, dropped for foreign share > {args.max_foreign}: "
          f"{len(all_runs) - len(kept_all)}; median foreign share of those kept: "
          + (f"{statistics.median(r['foreign_share'] for r in kept_all):.3f}" if kept_all
             else "none kept"))
    if args.background_load:
        total = [r["foreign_share_total"] for r in all_runs]
        print(f"with the background load counted: median foreign share "
              f"{statistics.median(total):.2f} (one busy core of {CORES} is {1 / CORES:.2f})")
    print()
    header = (f"{'model':<12}{'batch':>6} {'peer':<17}{'samples/s':>11}{'kept':>7}"
              f"{'foreign':>9}{'/CPU-s':>9}{'GFLOP/s':>9}{'% peak':>8}{'archlab/peer':>14}")
    print(header)
    print("-" * len(header))
    for name in models:
        macs = macs_per_sample(name)
        med: dict[str, float] = {}
        for peer in peers:
            rs = runs[name, peer]
            kept, noisy = kept_runs(rs, args.max_foreign)
            if not kept:
                continue
            med[peer] = statistics.median(r["samples_per_s"] for r in kept)
        for peer in peers:
            if peer not in med:
                print(f"{name:<12}{MODELS[name][3]:>6} {peer:<17}{'failed':>11}")
                continue
            kept, noisy = kept_runs(runs[name, peer], args.max_foreign)
            gf = 6 * macs * med[peer] / 1e9
            ratio = (f"{med['archlab'] / med[peer]:.2f}" if "archlab" in med
                     and not peer.startswith("archlab") else "")
            foreign = statistics.median(r["foreign_share"] for r in kept)
            per_cpu = statistics.median(r["samples_per_s"] / max(r["own_cpu_share"] * CORES, 1e-9)
                                        for r in kept)
            count = f"{len(kept)}/{len(runs[name, peer])}" + ("*" if noisy else "")
            print(f"{name:<12}{MODELS[name][3]:>6} {peer:<17}{med[peer]:>11,.0f}{count:>7}"
                  f"{foreign:>9.2f}{per_cpu:>9,.0f}{gf:>9.2f}{100 * gf / peak:>7.1f}%{ratio:>14}")
        others = {p: v for p, v in med.items() if not p.startswith("archlab")}
        if others:
            best = max(others, key=others.get)
            for own in (p for p in med if p.startswith("archlab")):
                print(f"{'':<19}{own} / best peer ({best}): {med[own] / others[best]:.2f}")
        if "torch" in med:  # the loop archlab wraps: it should never be slower
            for own in (p for p in med if p.startswith("archlab")):
                verdict = "ok" if med[own] >= med["torch"] else "SLOWER than the plain loop"
                print(f"{'':<19}{own} / plain torch: {med[own] / med['torch']:.2f} ({verdict})")
        print(f"{'':<19}MACs per sample (forward): {macs:,}")
    print("samples/s and /CPU-s (samples per CPU-second the run's own process used) are medians "
          "of the kept runs;\nGFLOP/s = 6 x forward MACs x samples/s; % peak of the GEMM peak.")
    print("* no run of this row was under the foreign-share limit: medians of all its runs "
          "(noisy)")


if __name__ == "__main__":
    main()
