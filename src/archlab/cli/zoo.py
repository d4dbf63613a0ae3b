"""`archlab zoo`, `archlab summary` and `archlab schema`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from archlab.cli.console import out
from archlab.describe import summary_text
from archlab.errors import SpecError
from archlab.model import build_model, validate_study
from archlab.spec import load_study, study_json_schema, zoo_names


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




def add_parsers(sub: Any) -> None:
    s = sub.add_parser("summary", help="Keras-style layer table of one model")
    s.add_argument("ref", help="zoo:STUDY:MODEL or STUDY_FILE:MODEL")
    s.set_defaults(func=cmd_summary)

    z = sub.add_parser("zoo", help="built-in studies")
    z.add_argument("action", choices=["list"])
    z.add_argument("--format", choices=["table", "json"], default="table")
    z.set_defaults(func=cmd_zoo)

    sc = sub.add_parser("schema", help="print the study file's JSON Schema")
    sc.set_defaults(func=cmd_schema)
