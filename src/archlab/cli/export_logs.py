"""`archlab export-logs`: a study's runs into TensorBoard event files and MLflow."""

from __future__ import annotations

import argparse
from typing import Any

from archlab.cli.console import out
from archlab.errors import ArchlabError


def cmd_export_logs(args: argparse.Namespace) -> int:
    from archlab.analysis.results import resolve_study_directory

    if not args.tensorboard and not args.mlflow:
        raise ArchlabError("export-logs: Expected --tensorboard OUT and/or --mlflow URI, "
                           "received neither")
    directory = resolve_study_directory(args.study)
    if args.tensorboard:
        from archlab.tracking.tensorboard import export_tensorboard

        names = export_tensorboard(directory, args.tensorboard)
        out.print(f"tensorboard: {len(names)} run(s) written to {args.tensorboard} (view: "
                  f"tensorboard --logdir {args.tensorboard})", markup=False, soft_wrap=True)
    if args.mlflow:
        from archlab.tracking.mlflow import export_mlflow

        done = export_mlflow(directory, args.mlflow, experiment=args.experiment)
        more = f", {len(done.unfinished)} not finished (left out)" if done.unfinished else ""
        out.print(f"mlflow: {len(done.logged)} run(s) logged, {len(done.already)} already "
                  f"there{more}; experiment {done.experiment_id} at {args.mlflow}",
                  markup=False, soft_wrap=True)
    return 0


def add_parsers(sub: Any) -> None:
    e = sub.add_parser("export-logs", help="write a study's runs as TensorBoard event files "
                                           "and/or into MLflow (docs/tracking.md)")
    e.add_argument("study", help="study directory (or the study file / zoo:NAME it was run "
                                 "from)")
    e.add_argument("--tensorboard", metavar="OUT",
                   help="directory for the event files: one run per archlab run, model/seed "
                        "(rewritten on a new export)")
    e.add_argument("--mlflow", metavar="URI",
                   help="MLflow tracking URI, sqlite:///PATH.db or file:///PATH (runs already "
                        "exported are skipped)")
    e.add_argument("--experiment", help="MLflow experiment (default: the study's name)")
    e.set_defaults(func=cmd_export_logs)
