"""`archlab results` and `archlab report`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from archlab.cli.console import out


def print_results(results: Any) -> None:
    from archlab.report.tables import (
        TEST_AS_VALIDATION_NOTE,
        ranking_lines,
        rich_stats_table,
        rich_table,
    )

    out.print(rich_table(results))
    out.print(rich_stats_table(results))
    if results.validation_is_test:
        out.print(f"[yellow]{TEST_AS_VALIDATION_NOTE}[/]")
    for line in ranking_lines(results):
        out.print(line)
    out.print(f"tables: {results.directory}/results.md, results.csv, results.json")


def cmd_results(args: argparse.Namespace) -> int:
    from archlab.analysis.results import collect
    from archlab.report.tables import write_tables

    results = collect(args.directory)
    write_tables(results)
    if args.format == "json":
        print((Path(args.directory) / "results.json").read_text())
    elif args.format == "csv":
        print((Path(args.directory) / "results.csv").read_text(), end="")
    else:
        print_results(results)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from archlab.report import write_report

    paths = write_report(args.directory)
    for p in paths:
        out.print(str(p))
    return 0




def add_parsers(sub: Any) -> None:
    res = sub.add_parser("results", help="the comparison table again, from the store")
    res.add_argument("directory")
    res.add_argument("--format", choices=["table", "json", "csv"], default="table")
    res.set_defaults(func=cmd_results)

    rep = sub.add_parser("report", help="write report.html and report.md for a study dir")
    rep.add_argument("directory")
    rep.set_defaults(func=cmd_report)
