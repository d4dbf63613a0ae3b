"""`archlab zoo list|show`, `archlab summary` and `archlab schema`."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from rich.table import Table

from archlab.cli.console import out
from archlab.describe import summary_text
from archlab.errors import SpecError
from archlab.model import build_model, validate_study
from archlab.spec import load_study, study_json_schema, zoo_names


def split_ref(ref: str) -> tuple[str, str | None]:
    """``(study source, model or None)`` from ``zoo:NAME[:MODEL]`` or ``FILE[:MODEL]``."""
    if ref.startswith("zoo:"):
        parts = ref.split(":")
        if len(parts) not in (2, 3) or not all(parts[1:]):
            raise SpecError(f"{ref}: Expected zoo:STUDY or zoo:STUDY:MODEL, received {ref!r}")
        return f"zoo:{parts[1]}", parts[2] if len(parts) == 3 else None
    # An existing file is a whole study even if its name has a ':' in it.
    if ":" not in ref or Path(ref).exists():
        return ref, None
    source, model = ref.rsplit(":", 1)
    if not model:
        raise SpecError(f"{ref}: Expected STUDY_FILE or STUDY_FILE:MODEL, received {ref!r}")
    return source, model


def cmd_summary(args: argparse.Namespace) -> int:
    source, model = split_ref(args.ref)
    study = load_study(source)
    names = list(study.models) if model is None else [model]
    print("\n\n".join(summary_text(build_model(study, name, device="meta")) for name in names))
    return 0


def zoo_text(name: str) -> str:
    """The YAML of built-in study ``name`` (or ``zoo:name``), exactly as shipped."""
    name = name.removeprefix("zoo:")
    if name not in zoo_names():
        load_study(f"zoo:{name}")  # raises the one-line "did you mean" error for unknown names
    return resources.files("archlab").joinpath("zoo", f"{name}.yaml").read_text(encoding="utf-8")


def cmd_zoo_show(args: argparse.Namespace) -> int:
    # Plain stdout, not rich: the text must come out byte for byte, ready to redirect to a file.
    sys.stdout.write(zoo_text(args.name))
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


def cmd_zoo_list(args: argparse.Namespace) -> int:
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
    s = sub.add_parser("summary", help="Keras-style layer table of one model, or of every model "
                       "of a study")
    s.add_argument("ref", help="zoo:STUDY, zoo:STUDY:MODEL, STUDY_FILE or STUDY_FILE:MODEL")
    s.set_defaults(func=cmd_summary)

    z = sub.add_parser("zoo", help="built-in studies")
    actions = z.add_subparsers(dest="action", required=True)
    zl = actions.add_parser("list", help="every built-in study and model, Keras param counts")
    zl.add_argument("--format", choices=["table", "json"], default="table")
    zl.set_defaults(func=cmd_zoo_list)
    zs = actions.add_parser("show", help="print a built-in study's YAML (to copy and edit)")
    zs.add_argument("name", help="NAME or zoo:NAME (see `archlab zoo list`)")
    zs.set_defaults(func=cmd_zoo_show)

    sc = sub.add_parser("schema", help="print the study file's JSON Schema")
    sc.set_defaults(func=cmd_schema)
