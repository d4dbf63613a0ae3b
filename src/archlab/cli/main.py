"""``archlab`` command line: a thin shell over the Python API, and the only place with
process-wide policy (signals, exit codes, console width).

Every user error (spec, data, store) is printed as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from archlab.cli import export, results, run, zoo
from archlab.cli.console import err
from archlab.errors import ArchlabError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archlab", description="Declarative neural-architecture "
                                "studies: Keras spec, PyTorch engine, honest statistics.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    run.add_parsers(sub)
    zoo.add_parsers(sub)
    results.add_parsers(sub)
    export.add_parsers(sub)
    return p


def _version() -> str:
    from archlab import __version__

    return f"archlab {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ArchlabError as exc:
        # One line, never wrapped or styled: scripts and tests read it.
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
