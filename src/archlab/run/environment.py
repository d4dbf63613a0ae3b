"""The machine a run ran on: device resolution, thread counts and the recorded environment."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Literal

import torch

from archlab.errors import ArchlabError

__all__ = [
    "PRECISIONS",
    "busy_cores",
    "default_threads",
    "environment",
    "load_average",
    "resolve_device",
]


def resolve_device(device: str | None) -> str:
    """'auto' (the default) is the first CUDA device when torch sees one, else the CPU."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise ArchlabError(f"--device: Expected cpu, cuda, cuda:N or auto, received "
                           f"{device!r}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArchlabError(f"--device: {device!r} requested but this torch build sees no CUDA "
                           f"device (torch {torch.__version__})")
    return device


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, machine-wide), None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # not every platform has one
        return None


#: Numeric precisions of ``--precision``: fp32 (the default) or bf16 autocast.
PRECISIONS = ("fp32", "bf16")


def environment(threads: int, device: str = "cpu", *, precision: str = "fp32",
                threads_from: str | None = None,
                busy: float | None = None) -> dict[str, Any]:
    """What a run ran on, recorded at its start.

    ``load_average`` (1 minute) over ``cpu_count`` says whether the machine was shared while
    the run's timings were taken (the report uses it to qualify time comparisons).
    ``threads_from`` says where ``threads`` came from: ``"given"`` (``--threads``),
    ``"default"`` (:func:`default_threads`; ``busy`` records the busy cores it saw) or
    ``"checkpoint"`` (a resumed run keeps the count it started with). ``precision`` is
    recorded only when it is not fp32.
    """
    from archlab.version import __version__

    env: dict[str, Any] = {
        "archlab": __version__, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_average": load_average(), "threads": threads,
        "device": device}
    if threads_from is not None:
        env["threads_from"] = threads_from
    if busy is not None:
        env["busy_cores"] = round(busy, 2)
    if precision != "fp32":
        env["precision"] = precision
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def busy_cores(samples: int = 11, interval: float = 0.01) -> float | None:
    """How many cores other processes keep busy now (None where the OS does not say).

    The larger of the 1-minute load average and the median number of runnable tasks in
    ``/proc/loadavg`` over ``samples`` reads ``interval`` apart, less this process: the load
    average lags a minute behind a job that just started; the instant count sees it at once
    but jitters (the median of ~0.1 s of reads steadies it). Erring high costs little (one
    thread where two would do: at most 2x on an idle 2-core machine); erring low costs much
    (two threads on a shared 2-core machine: epochs 1.6-3.3x slower, a whole quickstart 14x;
    docs/cpu-trainer.md).
    """
    avg = load_average()
    running: list[int] = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                running.append(int(fh.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            break
        if i + 1 < samples:
            time.sleep(interval)
    now = max(0.0, statistics.median(running) - 1) if running else None
    if avg is None:
        return now
    return avg if now is None else max(avg, now)


def default_threads(jobs: int = 1, busy: float | None | Literal["measure"] = "measure") -> int:
    """torch threads per job when ``--threads`` is not given: the cores other processes leave
    free, shared among the jobs, at least 1 and at most ``cores // jobs``.

    torch's parallel regions wait for their slowest thread, so a thread that shares a core
    with another process stalls every step: on a shared 2-core machine 2 threads ran an epoch
    1.6-3.3x slower than 1 (benchmarks/threads_under_load.py). ``busy``: cores taken
    by others (default: :func:`busy_cores` now; None: assume an idle machine). The count is
    chosen once per run and kept in its checkpoint, so a resumed run reuses it whatever the
    load then (same thread count, same float reduction order, same numbers).
    """
    cores = os.cpu_count() or 1
    jobs = max(1, jobs)
    fair = max(1, cores // jobs)
    if busy == "measure":
        busy = busy_cores()
    if busy is None:
        return fair
    free = int(cores - busy + 0.5)  # a core more than half free counts as free
    return max(1, min(fair, free // jobs))
