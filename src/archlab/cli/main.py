"""``archlab`` command line: a thin shell over the Python API.

Every user error (spec, data, store) is printed as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from archlab.describe import summary_text
from archlab.errors import ArchlabError, SpecError
from archlab.model import build_model, validate_study
from archlab.report.tables import format_duration
from archlab.spec import Study, load_study, override_training, study_json_schema, zoo_names


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # piped or captured: don't squeeze tables into 80 columns
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


out = _console(stderr=False)
err = _console(stderr=True)


def _load(source: str, models: str | None = None, **overrides: Any) -> Study:
    study = load_study(source)
    if models:
        study = study.select([m.strip() for m in models.split(",") if m.strip()])
    return override_training(study, **overrides)


def _compute_table(study: Study, project: bool, repeats: int | None = None,
                   device: str = "cpu") -> Table:
    from archlab.run.projection import DATASET_SIZES, projected_seconds

    built = validate_study(study)
    n_train = DATASET_SIZES[study.data.dataset][0]
    if study.data.validation != "test":
        n_train -= round(n_train * study.data.validation.split)  # type: ignore[union-attr]
    table = Table(title=f"{study.name} ({study.source}) — {study.data.dataset}",
                  title_justify="left")
    for col in ("model", "params", "trainable", "non-trainable", "MACs/sample", "MACs/epoch",
                "epochs", "batch", "optimizer") + (("projected",) if project else ()):
        table.add_column(col, justify="left" if col in ("model", "optimizer") else "right")
    total = 0.0
    for name, b in built.items():
        train = study.train_for(name)
        row = [name, f"{b.total_params:,}", f"{b.trainable_params:,}",
               f"{b.non_trainable_params:,}", f"{b.macs_per_sample / 1e6:,.2f} M",
               f"{b.macs_per_sample * n_train / 1e9:,.1f} G", str(train.epochs),
               str(train.batch_size), train.optimizer.name]
        if project:
            secs = projected_seconds(study, name, device=device) * (repeats or train.repeats)
            total += secs
            row.append(format_duration(secs))
        table.add_row(*row)
    if project:
        table.caption = (f"projected total on this machine ({device}): {format_duration(total)} "
                         "(from a few timed training steps; all repeats)")
    return table


def cmd_validate(args: argparse.Namespace) -> int:
    study = _load(args.study, args.models)
    out.print(_compute_table(study, project=not args.no_timing))
    out.print(f"[green]ok[/]: {len(study.models)} model(s) valid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from archlab.analysis.results import collect
    from archlab.cli.progress import ProgressView
    from archlab.report.tables import write_tables
    from archlab.run import resolve_device, run_study, study_dir

    study = _load(args.study, args.models, epochs=args.epochs, batch_size=args.batch_size)
    device = resolve_device(args.device)
    out.print(_compute_table(study, project=True, repeats=args.repeats, device=device))
    if args.dry_run:
        return 0
    outcome = run_study(study, args.out, data_dir=args.data_dir, repeats=args.repeats,
                        jobs=args.jobs, threads=args.threads, device=device,
                        progress=None if args.quiet else ProgressView(err))
    if outcome.skipped:
        out.print(f"{len(outcome.skipped)} run(s) already in the store were kept.")
    directory = study_dir(study, args.out)
    results = collect(directory, run_ids=[p.run_id for p in outcome.planned])
    _print_results(results)
    write_tables(results)
    if not args.no_report:
        from archlab.report import write_report

        try:
            paths = write_report(directory)
            out.print(f"report: {paths[0]}")
        except Exception as exc:  # noqa: BLE001 - training results are safe in the store
            err.print(f"warning: the report failed ({exc.__class__.__name__}: {exc}); the "
                      f"results are in the store: retry with `archlab report {directory}`",
                      markup=False)
    if outcome.interrupted:
        err.print("interrupted: rerun the same command to resume")
        return 130
    return 0


def _print_results(results: Any) -> None:
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
        _print_results(results)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from archlab.report import write_report

    paths = write_report(args.directory)
    for p in paths:
        out.print(str(p))
    return 0


def _split_model_ref(ref: str) -> tuple[str, str]:
    if ref.startswith("zoo:"):
        parts = ref.split(":")
        if len(parts) != 3:
            raise SpecError(f"{ref}: Expected zoo:STUDY:MODEL, received {ref!r}")
        return f"zoo:{parts[1]}", parts[2]
    if ":" not in ref or Path(ref).exists():
        raise SpecError(f"{ref}: Expected STUDY_FILE:MODEL or zoo:STUDY:MODEL, received {ref!r}")
    source, model = ref.rsplit(":", 1)
    return source, model


def cmd_summary(args: argparse.Namespace) -> int:
    source, model = _split_model_ref(args.ref)
    study = load_study(source)
    print(summary_text(build_model(study, model, device="meta")))
    return 0


def zoo_entries() -> list[dict[str, Any]]:
    """Every built-in study's models with their Keras param counts."""
    rows = []
    for name in zoo_names():
        study = load_study(f"zoo:{name}")
        for model, b in validate_study(study).items():
            rows.append({"study": name, "model": model, "ref": f"zoo:{name}:{model}",
                         "total_params": b.total_params, "trainable_params": b.trainable_params,
                         "non_trainable_params": b.non_trainable_params,
                         "macs_per_sample": b.macs_per_sample,
                         "description": study.models[model].description})
    return rows


def cmd_zoo(args: argparse.Namespace) -> int:
    rows = zoo_entries()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="archlab zoo", title_justify="left")
    for col in ("study", "model", "params", "trainable", "non-trainable", "MACs/sample",
                "description"):
        table.add_column(col, justify="right" if col in ("params", "trainable", "non-trainable",
                                                          "MACs/sample") else "left")
    for r in rows:
        table.add_row(r["study"], r["model"], f"{r['total_params']:,}",
                      f"{r['trainable_params']:,}", f"{r['non_trainable_params']:,}",
                      f"{r['macs_per_sample'] / 1e6:,.1f} M", r["description"])
    out.print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(study_json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archlab", description="Declarative neural-architecture "
                                "studies: Keras spec, PyTorch engine, honest statistics.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train a study (skips runs already in the store)")
    r.add_argument("study", help="study file (YAML) or zoo:NAME")
    r.add_argument("--models", help="comma-separated model names (default: all)")
    r.add_argument("--epochs", type=int, help="override epochs for every model")
    r.add_argument("--batch-size", type=int, help="override batch size for every model")
    r.add_argument("--repeats", type=int, help="seeds per model (default: the study's)")
    r.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each")
    r.add_argument("--threads", type=int, help="torch threads per job (default cores/jobs)")
    r.add_argument("--data-dir", help="directory holding the dataset files")
    r.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (CUDA when torch sees it; default)")
    r.add_argument("--out", help="study directory (default archlab-runs/NAME)")
    r.add_argument("--dry-run", action="store_true", help="validate, print compute, stop")
    r.add_argument("--no-report", action="store_true", help="skip report.html/report.md")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check spec and shapes, print params and compute")
    v.add_argument("study")
    v.add_argument("--models")
    v.add_argument("--no-timing", action="store_true", help="skip the timed projection")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("summary", help="Keras-style layer table of one model")
    s.add_argument("ref", help="zoo:STUDY:MODEL or STUDY_FILE:MODEL")
    s.set_defaults(func=cmd_summary)

    z = sub.add_parser("zoo", help="built-in studies")
    z.add_argument("action", choices=["list"])
    z.add_argument("--format", choices=["table", "json"], default="table")
    z.set_defaults(func=cmd_zoo)

    res = sub.add_parser("results", help="the comparison table again, from the store")
    res.add_argument("directory")
    res.add_argument("--format", choices=["table", "json", "csv"], default="table")
    res.set_defaults(func=cmd_results)

    rep = sub.add_parser("report", help="write report.html and report.md for a study dir")
    rep.add_argument("directory")
    rep.set_defaults(func=cmd_report)

    sc = sub.add_parser("schema", help="print the study file's JSON Schema")
    sc.set_defaults(func=cmd_schema)
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
