"""The CLI's consoles: stdout for results, stderr for progress and messages."""

from __future__ import annotations

import os

from rich.console import Console


def make_console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    # Piped or captured: don't squeeze tables into 80 columns, unless COLUMNS says how wide.
    if not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


out = make_console(stderr=False)
err = make_console(stderr=True)
