"""The machine a run ran on: device resolution, thread counts and the recorded environment."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from archlab.errors import ArchlabError


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


def environment(threads: int, device: str = "cpu") -> dict[str, Any]:
    """What a run ran on, recorded at its start.

    ``load_average`` (1 minute) over ``cpu_count`` says whether the machine was shared while
    the run's timings were taken (the report uses it to qualify time comparisons).
    """
    from archlab import __version__

    env = {"archlab": __version__, "torch": torch.__version__,
           "python": platform.python_version(), "machine": platform.machine(),
           "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "load_average": load_average(), "threads": threads,
           "device": device}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env




def default_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))
