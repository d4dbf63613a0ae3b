"""`archlab run` and `archlab validate`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from archlab.cli.console import err, out
from archlab.cli.results import print_results
from archlab.model import validate_study
from archlab.report.tables import format_duration
from archlab.spec import Study, load_study, override_training


def _load(source: str, models: str | None = None, **overrides: Any) -> Study:
    study = load_study(source)
    if models:
        study = study.select([m.strip() for m in models.split(",") if m.strip()])
    return override_training(study, **overrides)


def _compute_table(study: Study, project: bool, repeats: int | None = None,
                   device: str = "cpu") -> Table:
    from archlab.datasets import dataset_info
    from archlab.run.projection import projected_seconds

    built = validate_study(study)
    n_train = dataset_info(study.data.dataset).train_size
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
    print_results(results)
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




def add_parsers(sub: Any) -> None:
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
