"""The comparison of several studies (``archlab results DIR1 DIR2 ...``, ``archlab report DIR1
DIR2 ... -o OUT``): one table of every model (study, model, dataset, test accuracy with its
95 % CI, n, params, time), the ranking verdicts per dataset, and a report page.

Everything comes from :func:`archlab.analysis.compare.collect_comparison` (the stores, opened
read-only) and the per-epoch histories the stores hold: nothing trains, loads data or runs a
model, and nothing is written into a compared study.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from archlab.analysis.compare import StudyComparison, collect_comparison, data_text
from archlab.analysis.results import CLIPPED_NOTE
from archlab.errors import ArchlabError
from archlab.report.figures import RC, Image
from archlab.report.files import atomic_write
from archlab.report.gather import Curves, gather_curves, gather_model_scatter
from archlab.report.overview_plot import overlay_figure, scatter_figure
from archlab.report.tables import (
    CI_HEADER,
    COLUMNS,
    EVAL_NOTE,
    Cell,
    Column,
    any_clipped,
    cell_rows,
    column_values,
    finite,
    model_record,
    records_csv,
    verdict_lines,
)
from archlab.report.terminal import rich_cells_table

__all__ = ["COMPARE_COLUMNS", "check_outside", "compare_cells", "compare_csv", "compare_json",
           "compare_markdown", "compare_records", "ranking_lines", "report_paths",
           "rich_compare_table", "write_compare_tables", "write_comparison"]

COMPARE_COLUMNS = ("study", "model", "dataset", "test acc", CI_HEADER, "n", "params",
                   "time (s)")
WIDE_COLUMNS = (*COMPARE_COLUMNS, "val acc", "val loss", "test loss", "train acc (eval)")
#: The terminal's compact table (80 columns): the dataset only when the studies' differ.
TERMINAL_COLUMNS = ("study", "model", "dataset", "test acc", CI_HEADER, "n")
_BY_HEADER = {c.header: c for c in COLUMNS}


def compare_cells(comparison: StudyComparison, headers: Sequence[str] = WIDE_COLUMNS,
                  ) -> tuple[list[Column], list[list[Cell]]]:
    """The columns and one row of cells per model. The CI column only when some model has
    repeats; "best" marks only when every model ran on the same dataset (a best across test
    sets means nothing)."""
    models = comparison.models
    with_ci = any((s := m.result.metrics.get("test_accuracy")) is not None and s.n > 1
                  for m in models)
    cols = [Column(h) if h in ("study", "dataset") else _BY_HEADER[h] for h in headers
            if with_ci or h != CI_HEADER]
    values = [{**column_values(m.result), "study": (m.study, m.study),
               "dataset": (m.dataset, m.dataset)} for m in models]
    return cols, cell_rows(cols, values, mark_best=comparison.same_dataset)


def ranking_lines(comparison: StudyComparison) -> list[tuple[str, list[str]]]:
    """(heading, verdicts) per dataset with two or more models (the heading names the
    dataset only when the studies use several)."""
    out = []
    for dataset, ranking in comparison.rankings.items():
        heading = "" if comparison.same_dataset else f"on {dataset}"
        out.append((heading, verdict_lines(ranking, "Use `repeats: 5` (or --repeats 5).")))
    return out


def _header_lines(comparison: StudyComparison) -> list[str]:
    lines = []
    if comparison.warning:
        lines.append(comparison.warning)
    return lines + comparison.notes


def _studies(comparison: StudyComparison) -> list[tuple[str, str, str, str]]:
    """(study, directory, data settings, runs) per compared study."""
    out = []
    for label, s in zip(comparison.study_labels, comparison.studies, strict=True):
        datas = list(dict.fromkeys(data_text(m.data) for m in comparison.models
                                   if m.study == label and m.dataset != "-"))
        runs = sum(sum(m.statuses.values()) for m in s.models)
        n = len(s.models)
        out.append((label, str(s.directory), "; ".join(datas) or "-",
                    f"{runs} run{'s' if runs != 1 else ''} over {n} model{'s' if n != 1 else ''}"))
    return out


# ---------------------------------------------------------------------------------------------
# Terminal and files


def rich_compare_table(comparison: StudyComparison, *, wide: bool = False) -> Any:
    """The comparison for the terminal: study, model, test accuracy (mean ± std, 95 % CI)
    and n, with the dataset column when the datasets differ (``wide``: every column)."""
    headers = WIDE_COLUMNS if wide else tuple(
        h for h in TERMINAL_COLUMNS if h != "dataset" or not comparison.same_dataset)
    cols, rows = compare_cells(comparison, headers)
    caption = ["test acc: mean ± std over the n finished runs; 95% CI: Student t"]
    if any_clipped([m.result.metrics.get("test_accuracy") for m in comparison.models]):
        caption.append(CLIPPED_NOTE)
    if comparison.same_dataset and comparison.datasets:
        caption.append(f"dataset: {comparison.datasets[0]} (every model)")
    else:
        caption.append("datasets differ: no best value is marked")
    if not wide:
        caption.append("params, time and the other metrics: --wide, results.md (-o DIR)")
    return rich_cells_table(comparison.title, cols, rows, caption)


def compare_markdown(comparison: StudyComparison) -> str:
    """results.md of a comparison: the warning and notes, the studies, the table, the
    verdicts."""
    cols, rows = compare_cells(comparison)
    lines = [f"# {comparison.title}", ""]
    lines += [f"> ⚠ {line}" if line == comparison.warning else f"> {line}"
              for line in _header_lines(comparison)]
    if _header_lines(comparison):
        lines.append("")
    lines += ["## Studies", "", "| study | directory | data | runs |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _studies(comparison)]
    lines += ["", "## Comparison", "", "| " + " | ".join(c.header for c in cols) + " |",
              "|" + "".join("---:|" if c.numeric else "---|" for c in cols)]
    lines += ["| " + " | ".join(f"**{x.text}**" if x.best else x.text for x in r) + " |"
              for r in rows]
    lines += ["", "Metrics are mean ± std over n finished repeats; accuracy in %; time: mean "
              "training seconds." + (" Bold: the best validation or test value."
                                     if comparison.same_dataset else ""), "", EVAL_NOTE, ""]
    ranked = ranking_lines(comparison)
    if ranked:
        lines += ["## Ranking (test accuracy)", "", _correction_line(comparison), ""]
        for heading, verdicts in ranked:
            if heading:
                lines += [f"### {heading}", ""]
            lines += [f"- {v}" for v in verdicts] + [""]
    return "\n".join(lines)


def _correction_line(comparison: StudyComparison) -> str:
    return f"With {comparison.correction_text}: significant means after the correction."


def compare_records(comparison: StudyComparison) -> list[dict[str, Any]]:
    """One flat dict per model: its study, label, dataset, then results.csv's columns."""
    out = []
    for m, s in ((m, _study_of(comparison, m.study)) for m in comparison.models):
        record = model_record(m.result, s.validation_is_test)
        record.pop("model")
        out.append({"study": m.study, "model": m.label, "model_name": m.model,
                    "dataset": m.dataset, **record})
    return out


def _study_of(comparison: StudyComparison, label: str) -> Any:
    return comparison.studies[comparison.study_labels.index(label)]


def compare_csv(comparison: StudyComparison) -> str:
    return records_csv(compare_records(comparison))


def compare_json(comparison: StudyComparison) -> str:
    """Strict JSON (``null`` where a value is undefined, never ``NaN``)."""
    from dataclasses import asdict

    rankings = {d: [{k: finite(v) for k, v in asdict(c).items()} for c in ranking]
                for d, ranking in comparison.rankings.items()}
    studies = [{"study": label, "name": s.study, "directory": str(s.directory)}
               for label, s in zip(comparison.study_labels, comparison.studies, strict=True)]
    return json.dumps({"studies": studies, "datasets": comparison.datasets,
                       "same_dataset": comparison.same_dataset,
                       "warning": comparison.warning, "notes": comparison.notes,
                       "models": compare_records(comparison), "rankings": rankings},
                      indent=2, allow_nan=False) + "\n"


def write_compare_tables(comparison: StudyComparison, directory: str | Path) -> list[Path]:
    """results.md, results.csv and results.json of the comparison in ``directory``."""
    d = Path(directory)
    files = {"results.md": compare_markdown(comparison), "results.csv": compare_csv(comparison),
             "results.json": compare_json(comparison)}
    for name, text in files.items():
        atomic_write(d / name, text)
    return [d / n for n in files]


# ---------------------------------------------------------------------------------------------
# The report page


def report_paths(out: str | Path) -> tuple[Path, Path, str]:
    """(HTML, Markdown, PNG folder name) of a comparison report: ``out`` is the HTML file when
    it ends in .html (Markdown beside it, PNGs in ``<stem>_files/``), else a directory that
    gets compare.html, compare.md and compare_files/."""
    out = Path(out)
    if out.suffix.lower() == ".html":
        return out, out.with_suffix(".md"), f"{out.stem}_files"
    return out / "compare.html", out / "compare.md", "compare_files"


def check_outside(out: str | Path, directories: Sequence[str | Path], *,
                  report: bool = False) -> None:
    """Refuse an output place inside a compared study (a comparison writes nothing there):
    ``out`` is a directory, or with ``report`` what :func:`report_paths` reads."""
    where = (report_paths(out)[0].parent if report else Path(out)).resolve()
    for d in directories:
        if where.is_relative_to(Path(d).resolve()):
            raise ArchlabError(f"-o {out}: Expected a place outside the compared studies, "
                               f"received one inside {d} (nothing is written into a compared "
                               "study)")


def _figures(comparison: StudyComparison, folder: str) -> list[Image]:
    from archlab.analysis.results import open_store

    colors = {m.label: i for i, m in enumerate(comparison.models)}
    curves: list[tuple[str, Curves]] = []
    for directory in dict.fromkeys(m.directory for m in comparison.models):
        with open_store(directory) as store:
            for m in comparison.models:
                if m.directory != directory or not m.result.finished:
                    continue
                c = gather_curves([store.history(r.run_id) for r in m.result.finished])
                if c is not None:
                    curves.append((m.label, c))
    images = []
    if curves:
        images.append(overlay_figure(curves, colors))
    points = gather_model_scatter([m.result for m in comparison.models], "params")
    if points:
        images.append(scatter_figure(points, colors, "parameters (log scale)",
                                     "test accuracy vs parameters", "overview_params", False))
    for img in images:
        img.folder = folder
    return images


def write_comparison(directories: Sequence[str | Path], out: str | Path, *,
                     on_warning: Callable[[str], None] | None = None,
                     correction: str = "holm") -> list[Path]:
    """Write the comparison report of several study directories: HTML (images embedded) and
    Markdown (PNGs in a folder beside it), where :func:`report_paths` says. Returns
    ``[html, md]``. Reads only the stores; raises :class:`ArchlabError` when a directory has
    no store or the target cannot be written."""
    import platform

    from matplotlib import rc_context

    from archlab.report.page import _check_writable, _env, _write

    t0 = time.perf_counter()
    comparison = collect_comparison(directories, correction=correction)
    html_path, md_path, folder = report_paths(out)
    check_outside(out, directories, report=True)
    target = html_path.parent
    _check_writable(target)
    with rc_context(RC):
        images = _figures(comparison, folder)
    cols, rows = compare_cells(comparison)
    context = {
        "title": comparison.title,
        "comparison": comparison,
        "warning": comparison.warning,
        "notes": comparison.notes,
        "studies": _studies(comparison),
        "columns": [c.header for c in cols],
        "rows": rows,
        "rankings": ranking_lines(comparison),
        "correction_line": _correction_line(comparison),
        "images": images,
        "eval_note": EVAL_NOTE,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "seconds": time.perf_counter() - t0,
    }
    html = _env(True).get_template("compare.html.j2").render(**context)
    md = _env(False).get_template("compare.md.j2").render(**context)
    written = _write(html_path, md_path, folder, images, html, md)
    if on_warning is not None and comparison.warning:
        on_warning(comparison.warning)
    return written
