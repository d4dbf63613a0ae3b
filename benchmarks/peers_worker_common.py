"""What every peers.py worker shares: the CPU accounting of a timed window, synthetic data, the
job it reads and the JSON line it prints. Standard library and numpy only: it is imported from
the peer venvs (tensorflow, jax) as well as from the main environment.

A worker is run as ``python peers_worker_X.py JOB_JSON``; JOB_JSON has the model's Keras layers
(as archlab's study file writes them), batch size, optimizer, steps, warm-up steps, threads,
seed and the pid of the benchmark's background load (or null). It prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def machine_busy_jiffies() -> int:
    """Busy jiffies of the whole machine (all cores): user nice system irq softirq steal."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return user + nice + system + irq + softirq + steal


def process_jiffies(pid: int | str = "self") -> int:
    """utime + stime of a process, all its threads (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    rest = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on
    return int(rest[11]) + int(rest[12])        # fields 14 (utime), 15 (stime)


@dataclass
class Snapshot:
    wall: float
    busy: int
    own: int
    background: int

    @classmethod
    def take(cls, background_pid: int | None = None) -> Snapshot:
        return cls(time.perf_counter(), machine_busy_jiffies(), process_jiffies(),
                   process_jiffies(background_pid) if background_pid else 0)


def cpu_window(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """The window's wall time, own CPU share and foreign CPU share (of all cores).

    foreign = (machine busy - own process) / (elapsed x cores); ``foreign_share`` leaves out the
    benchmark's own background load (``--background-load``), ``foreign_share_total`` keeps it.
    """
    elapsed = end.wall - start.wall
    capacity = max(elapsed * CLK_TCK * CORES, 1e-9)
    busy, own, bg = end.busy - start.busy, end.own - start.own, end.background - start.background
    return {"seconds": elapsed,
            "own_cpu_share": own / capacity,
            "foreign_share": max(busy - own - bg, 0) / capacity,
            "foreign_share_total": max(busy - own, 0) / capacity,
            "background_share": bg / capacity}


def read_job() -> dict[str, Any]:
    return json.loads(sys.argv[1])


def synthetic_data(n: int, seed: int, channels_last: bool):
    """MNIST-shaped random data: n images 28x28x1 in [0, 1) (float32), labels 0-9 (int64)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1) if channels_last else (n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return x, y


def synthetic_images(n: int, seed: int):
    """The same kind of data as archlab holds it: n uint8 images (n, 28, 28, 1), labels 0-9."""
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return x, y


def layer_items(layers: list[Any]):
    """(type, args) for each layer as the study file writes it ('Flatten' or {Conv2D: {...}})."""
    for layer in layers:
        if isinstance(layer, str):
            yield layer, {}
        else:
            ((kind, args),) = layer.items()
            yield kind, dict(args or {})


def report(job: dict[str, Any], window: dict[str, float], **extra: Any) -> None:
    steps, batch = job["steps"], job["batch_size"]
    out = {"samples_per_s": steps * batch / window["seconds"], "steps": steps,
           "batch_size": batch, **window, **extra}
    print(json.dumps(out), flush=True)
