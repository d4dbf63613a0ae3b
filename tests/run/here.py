"""`archlab ...` run in the test's own process, with a time limit like a subprocess's.

A rerun of the command a test killed does not need a fresh interpreter: run here it skips
the seconds of imports (torch, scipy) another Python pays, and `--jobs 2` reuses the fork
server that an earlier run here started. The kills themselves still hit real subprocesses.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from archlab.cli import main


class HungError(AssertionError):
    """The command ran past its time limit."""


def main_here(args: list[str], timeout: float) -> int:
    """``main(args)``, failing with :class:`HungError` after ``timeout`` seconds (a SIGALRM:
    the command unwinds as from an exception, its pool killing its workers)."""
    assert threading.current_thread() is threading.main_thread()

    def expired(signum: int, frame: Any) -> None:
        raise HungError(f"archlab {' '.join(args)} still running after {timeout:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return main(args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
