"""The results tables on the terminal (rich): the compact table that fits 80 columns, the wide
tables of ``archlab results --wide``, the statistics table, and any table of cells (a
comparison's). The cells and their notes are :mod:`archlab.report.tables`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archlab.analysis.results import CLIPPED_NOTE, StudyResults
from archlab.report.tables import (
    COMPACT_COLUMNS,
    EVAL_NOTE,
    STATS_COLUMNS,
    TIME_NOTE,
    Cell,
    Column,
    ci_clipped,
    stats_cells,
    table_cells,
    verdict_note,
)

__all__ = ["rich_cells_table", "rich_stats_table", "rich_table", "rich_wide_tables"]


def rich_stats_table(results: StudyResults) -> Any:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="statistics (test accuracy, over-fitting)", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in STATS_COLUMNS:
        if c == "model":
            table.add_column(c, overflow="fold", min_width=5)
        else:
            table.add_column(c, justify="left" if c == "status" else "right", overflow="fold")
    for m in results.models:
        table.add_row(*map(escape, stats_cells(m)))  # a sweep point's name has [...]
    return table


def rich_cells_table(title: str, cols: Sequence[Column], rows: Sequence[Sequence[Cell]],
                     caption: list[str], highlight: int | None = None) -> Any:
    """A rich table of cells: numbers never wrap or shorten, text folds onto more lines where
    space is short (never cut); row ``highlight`` in bold green. The ``caption`` lines follow
    the table as lines of their own, wrapped (between words) only at the console's width: a
    table caption would wrap at the table's width, mid-phrase, even when piped."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False)
    for j, c in enumerate(cols):
        if c.numeric:  # never wrapped, never shortened
            width = max([len(c.header)] + [len(r[j].text) for r in rows])
            table.add_column(c.header, justify="right", no_wrap=True, min_width=width)
        else:  # text folds onto more lines where space is short; it is never cut
            table.add_column(c.header, justify="right" if c.numeric else "left",
                             overflow="fold", min_width=min(len(c.header), 6))
    for i, r in enumerate(rows):
        style = "bold green" if i == highlight else None
        table.add_row(*(escape(x.text) for x in r), style=style)  # names like mlp[units=32]
    if not caption:
        return table
    return Group(table, *(Text(line, style="table.caption") for line in caption))


def _rich(results: StudyResults, title: str, headers: Sequence[str], caption: list[str]) -> Any:
    cols, rows = table_cells(results, headers)
    best = results.best()
    highlight = next((i for i, m in enumerate(results.models) if m is best), None)
    return rich_cells_table(title, cols, rows, caption, highlight)


#: Left out of the terminal's table, in this order, where the console is too narrow for them
#: and the model names (the essentials, model, test accuracy with its CI, n and the verdict,
#: always stay).
_DROPPABLE = ("params", "time (s)")
_NAME_ROOM = 24  # a longer model name may fold: it does not push columns out


def _compact_headers(results: StudyResults, width: int | None) -> list[str]:
    """The compact table's columns that fit ``width`` (None: all of them)."""
    headers = list(COMPACT_COLUMNS)
    if width is None:
        return headers
    cols, rows = table_cells(results, headers)

    def size(j: int, header: str) -> int:
        widest = max([len(header)] + [len(r[j].text) for r in rows])
        return min(_NAME_ROOM, widest) if header == "model" else widest

    def needed(keep: list[str]) -> int:
        sizes = [size(j, c.header) for j, c in enumerate(cols) if c.header in keep]
        return sum(sizes) + 3 * (len(sizes) - 1)  # a space of padding either side of a rule

    for header in _DROPPABLE:
        if needed(headers) <= width:
            break
        headers.remove(header)
    return headers


def rich_table(results: StudyResults, width: int | None = None) -> Any:
    """The comparison table for the terminal: model, test accuracy (mean ± std, 95 % CI), n,
    the verdict against the best model, params and time. The numbers never wrap or shorten,
    and a long model name folds onto more lines instead of being cut; where ``width`` (the
    console's) is too narrow, params and then time are left out (--wide has them)."""
    any_ci = any(s is not None and s.n > 1
                 for m in results.models if (s := m.metrics.get("test_accuracy")))
    headers = _compact_headers(results, width)
    left_out = [h for h in COMPACT_COLUMNS if h not in headers]
    caption = ["test acc: mean ± std over the n finished runs"
               + ("; 95% CI: Student t" if any_ci else " (n = 1: no CI; use --repeats 5)"),
               *([CLIPPED_NOTE] if ci_clipped(results) else []),
               *([TIME_NOTE] if "time (s)" in headers else []),
               ", ".join([*left_out, "validation, train and architecture columns"])
               + ": --wide, results.md"]
    if (note := verdict_note(results)) is not None:
        caption.insert(1, note)
    return _rich(results, results.study, headers, caption)


def rich_wide_tables(results: StudyResults) -> list[Any]:
    """The columns the compact table leaves out (``archlab results --wide``): the other
    metrics, the architecture, and the statistics."""
    metrics = ("model", "val acc", "val loss", "test loss", "train acc (eval)",
               "train loss (eval)")
    arch = ("model", "conv", "kernels", "channels", "pooling", "dropout", "BN", "L2", "data")
    return [_rich(results, "other metrics (mean ± std)", metrics, [EVAL_NOTE]),
            _rich(results, "architecture", arch, []),
            rich_stats_table(results)]
