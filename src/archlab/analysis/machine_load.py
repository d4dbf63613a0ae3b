"""How busy the machine was while a study's runs trained, from the load each run recorded at its
start: whether their times compare (the report's header, the conclusions' time-efficiency)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from archlab.store import RunRecord

__all__ = ["SHARED_LOAD", "MachineLoad", "machine_load"]

#: 1-minute load average per CPU at a run's start above which the machine counts as shared.
#: Higher than the projection's "busy" threshold: at a run's start the load still includes the
#: study's own previous run (up to one thread per CPU), so only load beyond that is someone else.
SHARED_LOAD = 1.25


@dataclass(frozen=True)
class MachineLoad:
    """How busy the machine was when runs started (``environment["load_average"]`` and
    ``environment["cpu_count"]``, recorded at run start; older stores lack them)."""

    runs: int  # runs considered
    recorded: int  # runs whose load average and CPU count are known
    busy: int  # runs that started with the load average above SHARED_LOAD × CPUs
    peak_load: float | None  # the highest load average recorded
    cpus: int | None  # the CPU count that went with it

    @property
    def shared(self) -> bool:
        return self.busy > 0

    @property
    def unknown(self) -> int:
        return self.runs - self.recorded


def _load_of(run: RunRecord) -> tuple[float, int] | None:
    env = run.environment or {}
    load, cpus = env.get("load_average"), env.get("cpu_count")
    if isinstance(load, list | tuple):  # (1, 5, 15 min): the 1-minute average
        load = load[0] if load else None
    if not isinstance(load, int | float) or not isinstance(cpus, int) or cpus < 1:
        return None
    if not math.isfinite(load) or load < 0:
        return None
    return float(load), cpus


def machine_load(runs: Iterable[RunRecord]) -> MachineLoad:
    """Summarize the recorded load of ``runs``; missing records count as unknown."""
    runs = list(runs)
    known = [x for r in runs if (x := _load_of(r)) is not None]
    busy = [x for x in known if x[0] > SHARED_LOAD * x[1]]
    peak = max(known, key=lambda x: x[0] / x[1]) if known else None
    return MachineLoad(runs=len(runs), recorded=len(known), busy=len(busy),
                       peak_load=peak[0] if peak else None, cpus=peak[1] if peak else None)
