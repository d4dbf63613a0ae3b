"""The comparison table as a rich table (terminal), Markdown, CSV and JSON files."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from archlab.analysis.results import TEST_AS_VALIDATION_NOTE, ModelResult, StudyResults
from archlab.analysis.stats import Summary
from archlab.store import FINAL_METRICS

# ---------------------------------------------------------------------------------------------
# Formatting

COLUMNS = ("model", "n", "conv", "kernels", "channels", "pooling", "dropout", "BN", "L2",
           "params", "train loss", "train acc", "val loss", "val acc", "test loss", "test acc",
           "time (s)")


def format_duration(seconds: float, precise: bool = False) -> str:
    """'42 s', '17 min', '4.3 h' (one more digit with ``precise``)."""
    d = 1 if precise else 0
    if seconds < 120:
        return f"{seconds:.{d}f} s"
    if seconds < 7200:
        return f"{seconds / 60:.{d}f} min"
    return f"{seconds / 3600:.{d + 1}f} h"


def fmt_metric(s: Summary | None, *, pct: bool) -> str:
    if s is None:
        return "-"
    scale, digits = (100.0, 2) if pct else (1.0, 4)
    text = f"{s.mean * scale:.{digits}f}"
    if s.n > 1:
        text += f" ± {s.std * scale:.{digits}f}"
    return text + ("%" if pct else "")


def row_cells(m: ModelResult) -> list[str]:
    a = m.architecture
    status = ""
    if m.diverged_epochs:
        status = f" (diverged @{m.diverged_epochs[0]})"
    elif m.n == 0:
        status = " (" + ", ".join(f"{k}" for k in m.statuses) + ")"
    cells = [m.model + status, str(m.n), str(a.conv_layers), a.kernels, a.channels, a.pooling,
             a.dropout, str(a.batch_norm), a.l2,
             f"{m.total_params:,}" if m.total_params else "-"]
    for k in FINAL_METRICS:
        cells.append(fmt_metric(m.metrics.get(k), pct=k.endswith("accuracy")))
    cells.append(f"{m.train_seconds.mean:.1f}" if m.train_seconds else "-")
    return cells


STATS_COLUMNS = ("model", "n", "test acc (mean)", "95 % CI", "train − val gap", "best epoch",
                 "status")


def stats_cells(m: ModelResult) -> list[str]:
    """Per-model statistics: CI of test accuracy and the over-fitting indicators."""
    acc = m.metrics.get("test_accuracy")
    ci = (f"{acc.ci_low * 100:.2f} to {acc.ci_high * 100:.2f}%" if acc is not None and acc.n > 1
          else "n/a (n = 1)" if acc is not None else "-")
    gap = (f"{m.overfit_gap.mean * 100:+.2f} pp" if m.overfit_gap is not None else "-")
    best = f"{m.best_epoch.mean:.1f}" if m.best_epoch is not None else "-"
    status = ", ".join(f"{v} {k}" for k, v in m.statuses.items())
    if m.diverged_epochs:
        status += " (diverged at epoch " + ", ".join(map(str, m.diverged_epochs)) + ")"
    return [m.model, str(m.n), fmt_metric(acc, pct=True).split(" ±")[0] if acc else "-", ci,
            gap, best, status]


def ranking_lines(results: StudyResults) -> list[str]:
    if not results.ranking:
        return []
    lines = [c.verdict for c in results.ranking]
    if all(c.n_best < 2 or c.n_other < 2 for c in results.ranking):
        lines.append("With one run per model no ranking claim can be made: seed-to-seed noise "
                     "is unknown. Use `repeats: 5` (or --repeats 5) for confidence intervals.")
    return lines


def to_markdown(results: StudyResults) -> str:
    lines = [f"# {results.study}: results", ""]
    if results.validation_is_test:
        lines += [f"> {TEST_AS_VALIDATION_NOTE}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_cells(m)) + " |" for m in results.models]
    lines += ["", "Metrics are mean ± std over n finished repeats; accuracy in %.", ""]
    lines += ["## Statistics", "", "| " + " | ".join(STATS_COLUMNS) + " |",
              "|" + "---|" * len(STATS_COLUMNS)]
    lines += ["| " + " | ".join(stats_cells(m)) + " |" for m in results.models]
    lines += ["", "95 % CI: Student t over the n repeats (none with n = 1). Gap: final train "
              "accuracy − validation accuracy, both evaluated after training; best epoch: the "
              "epoch of lowest validation loss.", ""]
    rl = ranking_lines(results)
    if rl:
        lines += ["## Ranking (test accuracy)", ""] + [f"- {t}" for t in rl] + [""]
    return "\n".join(lines)


def _summary_fields(prefix: str, s: Summary | None) -> dict[str, Any]:
    if s is None:
        return {f"{prefix}_{k}": "" for k in ("mean", "std", "ci_low", "ci_high")}
    return {f"{prefix}_mean": s.mean, f"{prefix}_std": s.std, f"{prefix}_ci_low": s.ci_low,
            f"{prefix}_ci_high": s.ci_high}


def to_records(results: StudyResults) -> list[dict[str, Any]]:
    """One flat dict per model (the CSV/JSON rows)."""
    rows = []
    for m in results.models:
        row: dict[str, Any] = {"model": m.model, "n": m.n,
                               "statuses": ";".join(f"{k}={v}" for k, v in m.statuses.items()),
                               **asdict(m.architecture), "total_params": m.total_params,
                               "macs_per_sample": m.macs_per_sample}
        for k in FINAL_METRICS:
            row |= _summary_fields(k, m.metrics.get(k))
        row |= _summary_fields("train_seconds", m.train_seconds)
        row |= _summary_fields("overfit_gap", m.overfit_gap)
        row["validation_is_test"] = results.validation_is_test
        rows.append(row)
    return rows


def to_csv(results: StudyResults) -> str:
    rows = to_records(results)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def write_tables(results: StudyResults) -> list[Path]:
    """Write results.md, results.csv and results.json into the study directory."""
    d = results.directory
    files = {"results.md": to_markdown(results), "results.csv": to_csv(results),
             "results.json": json.dumps({"study": results.study,
                                         "validation_is_test": results.validation_is_test,
                                         "models": to_records(results),
                                         "ranking": [asdict(c) for c in results.ranking]},
                                        indent=2, default=str)}
    for name, text in files.items():
        (d / name).write_text(text)
    return [d / n for n in files]


def rich_stats_table(results: StudyResults) -> Any:
    from rich.table import Table

    table = Table(title="statistics (test accuracy, over-fitting)", title_justify="left")
    for c in STATS_COLUMNS:
        table.add_column(c, justify="left" if c in ("model", "status") else "right")
    for m in results.models:
        table.add_row(*stats_cells(m))
    return table


def rich_table(results: StudyResults) -> Any:
    from rich.table import Table

    table = Table(title=f"{results.study}", title_justify="left")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("model", "kernels", "channels", "pooling",
                                                     "dropout", "L2") else "right")
    best = results.best()
    for m in results.models:
        style = "bold green" if best is not None and m is best else None
        table.add_row(*row_cells(m), style=style)
    return table
