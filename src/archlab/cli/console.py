"""The CLI's consoles: stdout for results, stderr for progress and messages."""

from __future__ import annotations

from rich.console import Console


def make_console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # piped or captured: don't squeeze tables into 80 columns
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


out = make_console(stderr=False)
err = make_console(stderr=True)
