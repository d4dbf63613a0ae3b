"""``archlab`` command line: a thin shell over the Python API, and the only place with
process-wide policy (signals, exit codes, console width).

Every user error (spec, data, store) is printed as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from archlab.cli import export, export_logs, results, run, validate, zoo
from archlab.errors import ArchlabError, is_disk_full


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archlab", description="Declarative neural-architecture "
                                "studies: Keras spec, PyTorch engine, honest statistics.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    run.add_parsers(sub)
    validate.add_parsers(sub)
    zoo.add_parsers(sub)
    results.add_parsers(sub)
    export.add_parsers(sub)
    export_logs.add_parsers(sub)
    return p


def _version() -> str:
    from archlab import __version__

    return f"archlab {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code: 0 done, 1 some run failed, 2 a user error (one
    line on stderr: spec, data, store, a full disk), 130 interrupted (Ctrl-C)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except ArchlabError as exc:
        for line in exc.lines or (str(exc),):  # every error of a study, one line each
            _error(line)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        # A full disk can surface anywhere something is written (tables, report, store):
        # one line, as for any other condition the user has to fix.
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None)
        _error(f"disk full: no space left to write {where or 'the output'} "
               f"({' '.join(str(exc).split())}); free some space and rerun the same command")
        return 2


def _error(message: str) -> None:
    # One line, never wrapped or styled: scripts and tests read it.
    sys.stderr.write(f"error: {' '.join(message.split())}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
