"""``archlab`` command line: a thin shell over the Python API."""

from archlab.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
