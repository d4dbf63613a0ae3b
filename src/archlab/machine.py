"""What archlab measures about this machine and keeps between processes: small JSON files in
the user cache (step timings, layout choices, packing probes), keyed by what a measurement
depends on (CPU model, threads, torch version), written atomically, the newest entries kept.
A cache is an optimisation: a read-only home or a damaged file only costs a measurement."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["CACHE_FILE", "MAX_ENTRIES", "cpu_model", "load_per_core", "put_cache",
           "read_cache", "timings_cache_path"]

#: The step timings' file in the user cache; other measurements sit beside it.
CACHE_FILE = "step-timings.json"
#: Entries a cache file keeps (the newest, by ``measured_at``).
MAX_ENTRIES = 1000


def load_per_core() -> float | None:
    """The machine's 1-minute load average divided by its CPU count (None where unknown)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        return None


def timings_cache_path() -> Path:
    from archlab.datasets.listing import cache_root

    return cache_root() / CACHE_FILE


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable or damaged: start afresh
        return {}
    return data if isinstance(data, dict) else {}


def put_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Store ``entry`` under ``key`` in the cache file ``path``, keeping the newest
    MAX_ENTRIES entries (by ``measured_at``)."""
    entries = read_cache(path)
    entries[key] = entry
    if len(entries) > MAX_ENTRIES:
        ordered = sorted(entries.items(), key=lambda kv: kv[1].get("measured_at", 0.0))
        entries = dict(ordered[-MAX_ENTRIES:])
    # A cache is an optimisation: a read-only home must not stop a run.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: a reader (another archlab) sees the old file or the new one, never half.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(entries, fh)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
