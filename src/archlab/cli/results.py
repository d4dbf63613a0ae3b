"""`archlab results` and `archlab report`: read a finished study (never write into its store).

Both take a study directory, a study file or ``zoo:NAME`` (its default directory,
``archlab-runs/<name>``). The study directory may be read-only: the table is printed, and the
files go where ``-o DIR`` says (or into the study directory when it is writable). Given two or
more studies they compare them in one table (and, with ``-o``, one report), writing nothing
into any of them.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any, Literal

from archlab.cli.console import out
from archlab.errors import ArchlabError


def print_results(results: Any, *, wide: bool = False,
                  tables: Path | Literal["study"] | None = "study") -> None:
    """The comparison table (compact; every column with ``wide``), the ranking verdicts and,
    unless ``tables`` is None, where results.md/csv/json are ("study": the study directory)."""
    from archlab.analysis.results import TEST_AS_VALIDATION_NOTE
    from archlab.report.tables import ranking_lines
    from archlab.report.terminal import rich_table, rich_wide_tables

    out.print(rich_table(results, width=out.width))
    if wide:
        for table in rich_wide_tables(results):
            out.print(table)
    if results.validation_is_test:
        out.print(f"[yellow]{TEST_AS_VALIDATION_NOTE}[/]")
    for line in ranking_lines(results):
        out.print(line, markup=False)
    from archlab.report.search import gather_search, rich_search_tables, search_lines

    search = gather_search(results.directory, results)  # a study's search: trials, ranking
    if search is not None:
        for table in rich_search_tables(search):
            out.print(table)
        for line in search_lines(search):
            out.print(line, markup=False, soft_wrap=True)
    where = results.directory if tables == "study" else tables
    if where is not None:
        out.print(f"tables: {where}/results.md, results.csv, results.json", markup=False)


def _line(message: str) -> None:
    """One line on stderr, never wrapped (scripts and tests read it)."""
    sys.stderr.write(" ".join(message.split()) + "\n")


def _out_dir(path: str) -> Path:
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ArchlabError(f"-o {path}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchlabError(f"-o {path}: cannot create it ({exc.strerror or exc})") from None
    return directory


def _compare_results(args: argparse.Namespace) -> int:
    """`archlab results DIR1 DIR2 ...`: one table of every model of the studies. Nothing is
    written into them; -o DIR writes the comparison's results.md/csv/json there."""
    from archlab.analysis.compare import collect_comparison
    from archlab.analysis.results import resolve_study_directory
    from archlab.report.compare import (
        check_outside,
        compare_csv,
        compare_json,
        ranking_lines,
        rich_compare_table,
        write_compare_tables,
    )

    if args.pivot:
        raise ArchlabError(f"--pivot {args.pivot[0]}: Expected one study to pivot, received "
                           f"{len(args.study)} (pivot each study on its own)")
    directories = [resolve_study_directory(s) for s in args.study]
    if args.out:
        check_outside(args.out, directories)
    comparison = collect_comparison(directories, correction=args.correction or "holm")
    written = None
    if args.out:
        target = _out_dir(args.out)
        try:
            written = write_compare_tables(comparison, target)
        except OSError as exc:
            raise ArchlabError(f"{target}: cannot write results.md/csv/json "
                               f"({exc.strerror or exc})") from None
    if args.format in ("json", "csv"):
        print(compare_json(comparison) if args.format == "json" else compare_csv(comparison),
              end="")
        if comparison.warning:
            _line(f"warning: {comparison.warning}")
        return 0
    out.print(rich_compare_table(comparison, wide=args.wide))
    for note in comparison.notes:
        out.print(f"note: {note}", markup=False)
    if comparison.correction_text and comparison.rankings:
        out.print(f"Rankings on test accuracy, with {comparison.correction_text}: "
                  "significant means after the correction.", markup=False)
    for heading, verdicts in ranking_lines(comparison):
        if heading:
            out.print(f"{heading}:", markup=False)
        for verdict in verdicts:
            out.print(verdict, markup=False)
    if written:
        out.print(f"tables: {written[0].parent}/results.md, results.csv, results.json",
                  markup=False)
    if comparison.warning:  # last, where it is seen
        sys.stdout.flush()
        _line(f"warning: {comparison.warning}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from archlab.analysis.results import collect, resolve_study_directory
    from archlab.report.tables import json_text, to_csv, write_tables

    if len(args.study) > 1:
        return _compare_results(args)
    directory = resolve_study_directory(args.study[0])
    results = collect(directory, correction=args.correction)
    pivots = []
    if args.pivot:  # a bad path is refused before any table is printed or written
        from archlab.report.pivot import rich_pivot_table

        pivots = [rich_pivot_table(results, path) for path in args.pivot]
    target = _out_dir(args.out) if args.out else directory
    written: Path | None = target
    try:
        write_tables(results, target)
    except OSError as exc:
        if args.out or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ArchlabError(f"{target}: cannot write results.md/csv/json "
                               f"({exc.strerror or exc})") from None
        written = None
        _line(f"note: {directory} is not writable ({exc.strerror or exc}): results.md, "
              "results.csv and results.json were not written there; use -o DIR to write them "
              "elsewhere")
    if args.format == "json":
        print(json_text(results), end="")
    elif args.format == "csv":
        print(to_csv(results), end="")
    else:
        print_results(results, wide=args.wide, tables=written)
    for table in pivots:
        out.print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from archlab.analysis.results import resolve_study_directory
    from archlab.report import write_report

    def warn(message: str) -> None:
        _line(f"warning: {message}")

    if len(args.study) > 1:
        from archlab.report.compare import check_outside, report_paths, write_comparison

        if not args.out:
            raise ArchlabError(f"report of {len(args.study)} studies: Expected -o FILE.html or "
                               "-o DIR for the comparison (nothing is written into a compared "
                               "study), received no -o")
        directories = [resolve_study_directory(s) for s in args.study]
        html_path = report_paths(args.out)[0]
        check_outside(args.out, directories, report=True)
        if html_path.parent != Path(args.out):  # -o FILE.html: its directory must exist
            _out_dir(str(html_path.parent))
        else:
            _out_dir(args.out)
        for p in write_comparison(directories, args.out, on_warning=warn,
                                  correction=args.correction or "holm"):
            out.print(str(p), markup=False)
        return 0
    directory = resolve_study_directory(args.study[0])
    target = _out_dir(args.out) if args.out else None
    for p in write_report(directory, out=target, on_warning=warn, correction=args.correction):
        out.print(str(p), markup=False)
    return 0


def add_parsers(sub: Any) -> None:
    source = ("study directory, study file (YAML) or zoo:NAME (read from its default "
              "directory, archlab-runs/NAME)")
    several = (" (two or more: one table comparing the models of those studies; a model name "
               "two studies share is written study/model)")
    res = sub.add_parser("results", help="the comparison table again, from the store")
    res.add_argument("study", metavar="STUDY", nargs="+", help=source + several)
    res.add_argument("--format", choices=["table", "json", "csv"], default="table")
    res.add_argument("--wide", action="store_true",
                     help="every column (validation, train, architecture) and the statistics")
    res.add_argument("-o", "--out", metavar="DIR",
                     help="write results.md/csv/json here (default: the study directory, when "
                          "it is writable)")
    _correction_flag(res)
    res.add_argument("--pivot", metavar="PATH", action="append",
                     help="test accuracy per value of a swept field, e.g. train.batch_size or "
                          "layers.1.Dense.units (repeatable)")
    res.set_defaults(func=cmd_results)

    rep = sub.add_parser("report", help="write report.html and report.md for a study")
    rep.add_argument("study", metavar="STUDY", nargs="+", help=source + several)
    rep.add_argument("-o", "--out", metavar="DIR",
                     help="write the report here (default: the study directory); required for "
                          "several studies: FILE.html (Markdown beside it) or DIR (compare.html, "
                          "compare.md)")
    _correction_flag(rep)
    rep.set_defaults(func=cmd_report)


def _correction_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--correction", choices=("holm", "bh", "none"),
                        help="multiple-comparison correction over every pair of models: holm "
                             "(family-wise error rate), bh (Benjamini-Hochberg, false discovery "
                             "rate) or none (default: the one the study's last run used, else "
                             "holm; holm for several studies)")
