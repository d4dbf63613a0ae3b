"""Two changes peers.py's profile of conv3-wide points at, checked outside archlab.

1. ReLU after max-pooling: ``pool(relu(conv))`` and ``relu(pool(conv))`` are the same function
   (ReLU is non-decreasing, so it commutes with max) but the second runs ReLU forward and
   backward on a quarter of the elements. Checks loss and gradients agree (dropout off), then
   times a fwd+bwd step of depth-l2's conv3-wide both ways (channels-last, interleaved rounds).
2. Dropout masks: ``F.dropout`` (``bernoulli_``) against ``x * (rand_like(x) >= p) / (1 - p)``
   on a conv3-wide-sized activation (a different random stream: see docs/performance.md).

    python benchmarks/peers_worker_reorder.py [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from peers_worker_torch import build  # noqa: E402

from archlab import load_study  # noqa: E402


def relu_after_pool(model: torch.nn.Sequential) -> torch.nn.Sequential:
    mods, out, i = list(model), [], 0
    while i < len(mods):
        if (isinstance(mods[i], torch.nn.ReLU) and i + 1 < len(mods)
                and isinstance(mods[i + 1], torch.nn.MaxPool2d)):
            out += [mods[i + 1], mods[i]]
            i += 2
        else:
            out.append(mods[i])
            i += 1
    return torch.nn.Sequential(*out)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p


def timed(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = load_study("zoo:depth-l2").to_config()["models"]["conv3-wide"]["layers"]
    a = build(layers, torch).to(memory_format=torch.channels_last)
    b = relu_after_pool(copy.deepcopy(a))
    x = torch.rand(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    grads = []
    for m in (a, b):
        set_dropout(m, 0.0)
        m.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in m.parameters()]))
        set_dropout(m, 0.5)
    diff = max((g - h).abs().max().item() for g, h in zip(grads[0][1], grads[1][1], strict=True))
    print(f"relu after pool: loss difference {(grads[0][0] - grads[1][0]).abs().item():.3g}, "
          f"largest gradient difference {diff:.3g}")

    def step(m):
        def go():
            m.zero_grad()
            F.cross_entropy(m(x), y).backward()
        return go

    h = torch.randn(128, 64, 14, 14).contiguous(memory_format=torch.channels_last)
    cases = {"conv3-wide step, relu then pool": step(a),
             "conv3-wide step, pool then relu": step(b),
             "dropout mask, F.dropout": lambda: F.dropout(h, 0.5, True),
             "dropout mask, rand_like >= p": lambda: h * (torch.rand_like(h) >= 0.5) * 2.0}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, fn in cases.items():
            times[k].append(timed(fn, 5))
    print(f"{args.threads} thread(s), {args.rounds} interleaved rounds of 5; load average "
          f"{os.getloadavg()[0]:.1f}")
    for k, v in times.items():
        print(f"  {k:<34} median {statistics.median(v):7.1f} ms  "
              f"(rounds: {', '.join(f'{t:.0f}' for t in v)})")


if __name__ == "__main__":
    main()
