"""`archlab zoo list|show`, `archlab summary` and `archlab schema`."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from archlab.cli.console import out
from archlab.errors import SpecError

#: The zoo's models with their counts, shipped beside the studies: `archlab zoo list` reads it
#: instead of building 40 models with torch (seconds). Each study's entry holds the SHA-256 of
#: the YAML it was computed from; a study whose file differs is computed afresh.
#: tests/cli/test_zoo_index.py checks it against the builder and says how to regenerate it.
INDEX_FILE = "index.json"


def _zoo_files() -> dict[str, Any]:
    """name -> the shipped YAML of each built-in study (what ``zoo_names()`` lists)."""
    folder = resources.files("archlab").joinpath("zoo")
    return {f.name[:-5]: f for f in sorted(folder.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".yaml")}


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
    from archlab.describe import summary_text
    from archlab.model import build_model
    from archlab.spec import load_study

    source, model = split_ref(args.ref)
    study = load_study(source)
    names = list(study.models) if model is None else [model]
    print("\n\n".join(summary_text(build_model(study, name, device="meta")) for name in names))
    return 0


def zoo_text(name: str) -> str:
    """The YAML of built-in study ``name`` (or ``zoo:name``), exactly as shipped."""
    name = name.removeprefix("zoo:")
    if name not in _zoo_files():
        from archlab.spec import load_study

        load_study(f"zoo:{name}")  # raises the one-line "did you mean" error for unknown names
    return resources.files("archlab").joinpath("zoo", f"{name}.yaml").read_text(encoding="utf-8")


def cmd_zoo_show(args: argparse.Namespace) -> int:
    # Plain stdout, not rich: the text must come out byte for byte, ready to redirect to a file.
    sys.stdout.write(zoo_text(args.name))
    return 0


def study_entries(name: str) -> list[dict[str, Any]]:
    """One built-in study's models with their Keras param counts, built now (imports torch).
    A sweep point's row holds its values (``point``: swept path -> value)."""
    from archlab.model import validate_study
    from archlab.spec import load_study

    study = load_study(f"zoo:{name}")
    rows = []
    for model, b in validate_study(study).items():
        spec = study.models[model]
        rows.append({"study": name, "model": model, "ref": f"zoo:{name}:{model}",
                     "total_params": b.total_params, "trainable_params": b.trainable_params,
                     "non_trainable_params": b.non_trainable_params,
                     "macs_per_sample": b.macs_per_sample, "description": spec.description,
                     "point": dict(spec.swept)})
    return rows


def _digest(path: Any) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zoo_index() -> dict[str, Any]:
    """The zoo's index computed now: per study, its file's SHA-256 and its rows (seconds)."""
    return {name: {"sha256": _digest(path), "rows": study_entries(name)}
            for name, path in _zoo_files().items()}


def write_zoo_index(path: str | Path | None = None) -> Path:
    """Write :func:`zoo_index` to ``path`` (default: the package's zoo/index.json)."""
    target = Path(path) if path is not None else Path(
        str(resources.files("archlab").joinpath("zoo", INDEX_FILE)))
    target.write_text(json.dumps(zoo_index(), indent=1) + "\n",
                      encoding="utf-8")
    return target


def zoo_entries() -> list[dict[str, Any]]:
    """Every built-in study's models with their Keras param counts: from the shipped index
    where a study's file is the one it was computed from, else built now."""
    try:
        shipped = json.loads(resources.files("archlab").joinpath("zoo", INDEX_FILE)
                             .read_text(encoding="utf-8"))
    except (OSError, ValueError):
        shipped = {}
    rows: list[dict[str, Any]] = []
    for name, path in _zoo_files().items():
        entry = shipped.get(name)
        fresh = isinstance(entry, dict) and entry.get("sha256") == _digest(path)
        rows += entry["rows"] if fresh else study_entries(name)
    return rows


def cmd_zoo_list(args: argparse.Namespace) -> int:
    rows = zoo_entries()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="archlab zoo", title_justify="left")
    for col in ("study", "model", "params", "trainable", "non-trainable", "MACs/sample",
                "description"):
        table.add_column(col, justify="right" if col in ("params", "trainable", "non-trainable",
                                                          "MACs/sample") else "left")
    for r in rows:
        # escape: a sweep point's name (grid[batch_size=32,units=128]) is no markup
        table.add_row(escape(r["study"]), escape(r["model"]), f"{r['total_params']:,}",
                      f"{r['trainable_params']:,}", f"{r['non_trainable_params']:,}",
                      f"{r['macs_per_sample'] / 1e6:,.1f} M", escape(r["description"]))
    out.print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from archlab.spec import study_json_schema

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
