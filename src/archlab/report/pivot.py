"""Pivots on a swept field: test accuracy per value of one field of a study's sweeps, as the
terminal table of ``archlab results --pivot PATH`` and as results.md's "By swept field" section.

The numbers come from :func:`archlab.analysis.results.pivot` (runs of every model with the
value pooled); this module only lays them out.
"""

from __future__ import annotations

import json
from typing import Any

from archlab.analysis.results import StudyResults
from archlab.report.formats import ci_text, fmt_metric

__all__ = ["pivot_markdown", "rich_pivot_table", "swept_paths"]


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def swept_paths(results: StudyResults) -> list[str]:
    """The fields the study's sweeps vary (from its study.yaml), in order; [] if none."""
    from archlab.errors import ArchlabError
    from archlab.spec import load_study

    path = results.directory / "study.yaml"
    if not path.is_file():
        return []
    try:
        study = load_study(path)
    except ArchlabError:
        return []
    shown = {m.model for m in results.models}
    return list(dict.fromkeys(p for name, spec in study.models.items() if name in shown
                              for p in spec.swept))


def pivot_markdown(results: StudyResults) -> list[str]:
    """'## By swept field': test accuracy per value of each swept field (as --pivot)."""
    from archlab.analysis.results import pivot
    from archlab.errors import ArchlabError

    tables = []
    for path in swept_paths(results):
        try:
            tables.append((path, pivot(results, path)))
        except ArchlabError:  # no finished run has the field: nothing to show
            continue
    if not tables:
        return []
    lines = ["## By swept field (test accuracy)", ""]
    for path, rows in tables:
        lines += [f"### {path}", "", f"| {path} | models | n | test acc | test acc 95% CI |",
                  "|---|---:|---:|---:|---:|"]
        for row in rows:
            lines.append(f"| {_value_text(row.value)} | {len(row.models)} | {row.summary.n} | "
                         f"{fmt_metric(row.summary, pct=True)} | {ci_text(row.summary)} |")
        lines.append("")
    lines += ["Runs of every model with the value pooled: the other swept fields vary within a "
              "row.", ""]
    return lines


def rich_pivot_table(results: StudyResults, path: str) -> Any:
    """Test accuracy per value of a swept field (``--pivot``): mean ± std and 95% CI over
    every finished run of the models with that value."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from archlab.analysis.results import pivot

    rows = pivot(results, path)
    table = Table(title=f"test accuracy by {path}", title_justify="left", box=box.SIMPLE_HEAD,
                  caption="runs of every model with the value pooled: other swept fields vary "
                          "within a row", caption_justify="left", show_edge=False,
                  pad_edge=False)
    for c in (path, "models", "n", "test acc", "test acc 95% CI"):
        table.add_column(c, justify="left" if c == path else "right", overflow="fold")
    for row in rows:
        table.add_row(escape(_value_text(row.value)), str(len(row.models)), str(row.summary.n),
                      fmt_metric(row.summary, pct=True), ci_text(row.summary))
    return table
