"""``archlab`` command line: a thin shell over the Python API.

This module is the console-script entry point and imports nothing heavy: ``archlab --version``
answers without importing torch. It also owns the process's Ctrl-C policy, installed before
anything else is imported:

- Outside training (start-up, imports, validation, the projection's timed steps, tables and
  report): Ctrl-C ends the command with ``interrupted`` and exit code 130, no traceback. While
  a module is being imported (numpy, torch, matplotlib: seconds) the process ends at once: a
  KeyboardInterrupt raised inside a third-party import is not reliably seen (some libraries
  swallow it in a broad ``except`` and go on importing for seconds, then fail another way: a
  half-imported numpy gives a RecursionError traceback), and an import holds nothing to clean
  up. Anywhere else it raises KeyboardInterrupt, which the command turns into that line after
  its ``finally`` blocks ran (a file being written atomically leaves no temporary behind).
- While runs train, ``archlab run`` installs its own handler (cli/run.py): the first Ctrl-C
  stops the runs at their next batch and the tables are still written, the second stops at
  once; both end with exit code 130.
- After the command has returned, Ctrl-C is ignored while the interpreter shuts down (a
  fraction of a second), so it cannot interrupt cleanup with a traceback.

When the ``archlab`` script (or ``python -m archlab``) runs, the quiet policy is installed
the moment this module is imported, before the command modules, numpy or torch: the only
Ctrl-C it cannot answer is one during Python's own start-up, before any archlab code runs.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

from archlab.version import __version__

if TYPE_CHECKING:
    import argparse

__all__ = ["INTERRUPTED", "build_parser", "main", "quiet_interrupts"]

#: Exit code of a process ended by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C outside training (see the module doc): during an import, one line and exit 130
    at once; elsewhere KeyboardInterrupt, for the command to clean up and say the same."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            os.write(2, b"interrupted\n")  # not sys.stderr: its lock may be held right now
            os._exit(INTERRUPTED)
        frame = frame.f_back
    raise KeyboardInterrupt


def _is_the_archlab_process() -> bool:
    """Whether this interpreter is running the ``archlab`` command itself (the console script
    or ``python -m archlab``), not a program or a test that imports archlab."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and spec.name == "archlab.__main__":
        return True
    script = os.path.basename(getattr(main_module, "__file__", None) or "")
    return script in ("archlab", "archlab.exe", "archlab-script.py")


def quiet_interrupts() -> signal.Handlers | object | None:
    """Install the quiet Ctrl-C policy (see the module doc); return the handler it replaced,
    or None where signals cannot be set (not the main thread)."""
    try:
        return signal.signal(signal.SIGINT, _exit_interrupted)
    except ValueError:  # called from another thread: signals stay as they are
        return None


if _is_the_archlab_process():
    quiet_interrupts()  # before anything else is imported


def main(argv: list[str] | None = None) -> int:
    """Run the ``archlab`` command line; return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        # The one question that needs no command module: answered before importing them.
        print(f"archlab {__version__}")
        return 0
    previous = quiet_interrupts()
    try:
        from archlab.cli.commands import main as run_command

        return run_command(argv)
    finally:
        if previous is not None:
            # The archlab process: Ctrl-C is ignored while it exits. A caller in Python (a
            # test, a notebook) gets its own handler back.
            signal.signal(signal.SIGINT, signal.SIG_IGN if _is_the_archlab_process()
                          else previous)


def build_parser() -> argparse.ArgumentParser:
    """The ``archlab`` argument parser (imports every command module)."""
    from archlab.cli.commands import build_parser as build

    return build()
