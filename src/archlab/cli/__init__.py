"""``archlab`` command line: a thin shell over the Python API.

This module is the console-script entry point and imports nothing heavy: ``archlab --version``
answers without importing torch, and a Ctrl-C while the command modules (and torch) are being
imported ends quietly with exit code 130 instead of a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from archlab.version import __version__

if TYPE_CHECKING:
    import argparse

__all__ = ["build_parser", "main"]

#: Exit code of a process ended by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the ``archlab`` command line; return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        # The one question that needs no command module: answered before importing them.
        print(f"archlab {__version__}")
        return 0
    return _import_commands()(argv)


def _import_commands() -> Callable[[list[str] | None], int]:
    """Import the command modules (torch, numpy, scipy: seconds); Ctrl-C meanwhile exits 130.

    A KeyboardInterrupt raised inside a third-party import is not reliably seen here: some
    libraries swallow it in a broad ``except`` and go on importing for seconds, then fail in
    another way (a half-imported numpy gives a RecursionError traceback). Nothing has started
    yet (no file, no child process, no output), so the handler ends the process at once.
    """

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        os.write(2, b"interrupted\n")  # not sys.stderr: its lock may be held right now
        os._exit(INTERRUPTED)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # main() called from another thread: signals stay as they are
        previous = None
    try:
        from archlab.cli.commands import main as run_command
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return run_command


def build_parser() -> argparse.ArgumentParser:
    """The ``archlab`` argument parser (imports every command module)."""
    from archlab.cli.commands import build_parser as build

    return build()
