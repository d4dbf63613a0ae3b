"""The comparison table: one column model shared by the terminal (rich), the report page,
Markdown, CSV and JSON.

Test accuracy comes first after the model name. Only validation and test metrics can be
"best": train metrics say how well a model fits what it saw, not how good it is. The terminal
shows a compact table (model, test accuracy ± std and CI, n, params, time) that fits 80
columns; ``--wide`` and the files carry every column.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from archlab.analysis.conclusions import points, race_summary
from archlab.analysis.results import (
    CLIPPED_NOTE,
    TEST_AS_VALIDATION_NOTE,
    ModelResult,
    StudyResults,
)
from archlab.analysis.stats import Comparison, Summary
from archlab.report.files import atomic_write
from archlab.report.formats import any_clipped, ci_cell, ci_text, fmt_metric, format_duration
from archlab.report.pivot import pivot_markdown, swept_paths
from archlab.store import FINAL_METRICS

__all__ = [
    "COLUMNS",
    "COMPACT_COLUMNS",
    "EVAL_NOTE",
    "STATS_COLUMNS",
    "TIME_NOTE",
    "Cell",
    "Column",
    "any_clipped",
    "cell_rows",
    "ci_clipped",
    "ci_text",
    "column_values",
    "finite",
    "fmt_metric",
    "format_duration",
    "json_text",
    "model_record",
    "race_json",
    "race_lines",
    "ranking_lines",
    "records_csv",
    "swept_paths",
    "table_cells",
    "to_csv",
    "to_markdown",
    "to_records",
    "verdict_lines",
    "verdict_note",
    "verdicts",
    "write_tables",
]

EVAL_NOTE = (
    "train loss/acc (eval): the final model evaluated on the training set after training "
    "(dropout off, final weights), like val and test. The progress bar's running accuracy is "
    "averaged over the batches while training (dropout on, weights still changing), so it "
    "reads lower."
)


@dataclass(frozen=True)
class Column:
    """One table column. ``best`` (min or max) marks the best value; only validation and test
    metrics have one."""

    header: str
    numeric: bool = False
    best: Callable[[Sequence[float]], float] | None = None


#: What the "time (s)" column holds, in every table that shows it.
TIME_NOTE = ("time: mean training seconds per run (a packed run counts its equal share of its "
             "pack's time, so packed and separate runs compare)")
CI_HEADER = "test acc 95% CI"
COLUMNS: tuple[Column, ...] = (
    Column("model"),
    Column("test acc", True, max),
    Column(CI_HEADER, True),
    Column("n", True),
    Column("verdict"),
    Column("params", True),
    Column("time (s)", True),
    Column("val acc", True, max),
    Column("val loss", True, min),
    Column("test loss", True, min),
    Column("train acc (eval)", True),
    Column("train loss (eval)", True),
    Column("conv", True),
    Column("kernels"),
    Column("channels"),
    Column("pooling"),
    Column("dropout"),
    Column("BN", True),
    Column("L2"),
    Column("data"),
)
COMPACT_COLUMNS = ("model", "test acc", CI_HEADER, "n", "verdict", "params", "time (s)")
_METRIC_COLUMN = {"test_accuracy": "test acc", "val_accuracy": "val acc", "val_loss": "val loss",
                  "test_loss": "test loss", "train_accuracy": "train acc (eval)",
                  "train_loss": "train loss (eval)"}


@dataclass
class Cell:
    """A table cell: its text, the value the in-page sort uses ("" for none) and whether it is
    the best value of its column."""

    text: str
    sort: str
    numeric: bool = False
    best: bool = False


# ---------------------------------------------------------------------------------------------
# Formatting


def ci_clipped(results: StudyResults) -> bool:
    """Whether some model's test-accuracy CI is shown clipped (the table needs CLIPPED_NOTE)."""
    return any_clipped([m.metrics.get("test_accuracy") for m in results.models])


def _model_label(m: ModelResult) -> str:
    if m.diverged_epochs:
        return f"{m.model} (diverged @{m.diverged_epochs[0]})"
    if m.n == 0:
        return f"{m.model} (" + ", ".join(str(k) for k in m.statuses) + ")"
    return m.model


def column_values(m: ModelResult) -> dict[str, tuple[str, Any]]:
    """Every column's (text, sort key) for one model."""
    a = m.architecture
    out: dict[str, tuple[str, Any]] = {
        "model": (_model_label(m), m.model),
        CI_HEADER: ci_cell(m.metrics.get("test_accuracy")),
        "n": (str(m.n), m.n),
        "params": (f"{m.total_params:,}" if m.total_params else "-", m.total_params),
        "time (s)": (f"{m.train_seconds.mean:.1f}" if m.train_seconds else "-",
                     m.train_seconds.mean if m.train_seconds else None),
        "conv": (str(a.conv_layers), a.conv_layers), "kernels": (a.kernels, a.kernels),
        "channels": (a.channels, a.channels), "pooling": (a.pooling, a.pooling),
        "dropout": (a.dropout, a.dropout), "BN": (str(a.batch_norm), a.batch_norm),
        "L2": (a.l2, a.l2), "data": (m.data, m.data),
    }
    for key, header in _METRIC_COLUMN.items():
        s = m.metrics.get(key)
        out[header] = (fmt_metric(s, pct=key.endswith("accuracy")), s.mean if s else None)
    return out


def table_cells(results: StudyResults, headers: Sequence[str] | None = None,
                ) -> tuple[list[Column], list[list[Cell]]]:
    """The columns (all, or those named in ``headers``; the CI column only when some model has
    repeats) and one row of cells per model, the best value of each validation and test metric
    column marked (when at least two models have one)."""
    with_ci = any(s is not None and s.n > 1
                  for m in results.models if (s := m.metrics.get("test_accuracy")))
    wanted = set(headers) if headers is not None else None
    cols = [c for c in COLUMNS if (wanted is None or c.header in wanted)
            and (with_ci or c.header != CI_HEADER)]
    verdict = verdicts(results)
    values = [{**column_values(m), "verdict": (verdict[m.model], verdict[m.model])}
              for m in results.models]
    return cols, cell_rows(cols, values)


def verdicts(results: StudyResults) -> dict[str, str]:
    """Each model against the best on test accuracy, after the ranking's correction: 'best',
    'worse' (significantly), 'n.s.' (not significantly different), 'dropped' (a race stopped
    giving it seeds: worse than the leader then) or '-' (no test: n = 1 or no result)."""
    out = {m.model: "-" for m in results.models}
    if results.ranking:
        out[results.ranking[0].best] = "best"
        for c in results.ranking:
            if c.n_best >= 2 and c.n_other >= 2:
                out[c.other] = "worse" if c.significant else "n.s."
    if results.race is not None:
        for m in results.race.drops:
            if out.get(m) != "worse":
                out[m] = "dropped"
    return out


def verdict_note(results: StudyResults) -> str | None:
    """The line that says how the verdict column was decided (None: nothing to say)."""
    if results.ranked is None:
        return None
    return (f"verdict: against the best model, with {results.ranked.text}; worse: "
            "significantly worse after the correction, n.s.: not significantly different"
            + ("; dropped: left the race" if results.race is not None else ""))


def cell_rows(cols: Sequence[Column], values: Sequence[dict[str, tuple[str, Any]]], *,
              mark_best: bool = True) -> list[list[Cell]]:
    """One row of cells per entry of ``values`` (header -> (text, sort key), as
    :func:`column_values` gives), in the order of ``cols``; with ``mark_best``, the best value
    of each column that has a ``best`` is marked (when at least two rows have one)."""
    rows: list[list[Cell]] = []
    for v in values:
        row = []
        for c in cols:
            text, key = v[c.header]
            sort = "" if key is None else repr(float(key)) if c.numeric else str(key)
            row.append(Cell(text, sort, numeric=c.numeric))
        rows.append(row)
    if not mark_best:
        return rows
    for j, c in enumerate(cols):
        if c.best is None:
            continue
        vals = [float(r[j].sort) for r in rows if r[j].sort != ""]
        if len(vals) < 2:
            continue
        target = c.best(vals)
        for r in rows:
            r[j].best = r[j].sort != "" and float(r[j].sort) == target
    return rows


STATS_COLUMNS = ("model", "n", "test acc (mean)", "95 % CI", "train − val gap", "best epoch",
                 "status")


def stats_cells(m: ModelResult) -> list[str]:
    """Per-model statistics: CI of test accuracy and the over-fitting indicators."""
    acc = m.metrics.get("test_accuracy")
    ci = (ci_cell(acc)[0] if acc is not None and acc.n > 1
          else "n/a (n = 1)" if acc is not None else "-")
    gap = (f"{m.overfit_gap.mean * 100:+.2f} pp" if m.overfit_gap is not None else "-")
    best = f"{m.best_epoch.mean:.1f}" if m.best_epoch is not None else "-"
    status = ", ".join(f"{v} {k}" for k, v in m.statuses.items())
    if m.diverged_epochs:
        status += " (diverged at epoch " + ", ".join(map(str, m.diverged_epochs)) + ")"
    return [m.model, str(m.n), fmt_metric(acc, pct=True).split(" ±")[0] if acc else "-", ci,
            gap, best, status]


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict_lines(ranking: Sequence[Comparison], advice: str = "Use `repeats: 5` (or "
                  "--repeats 5) for confidence intervals.") -> list[str]:
    """The verdicts of a ranking (best against each other model, in order; accuracies in pp):
    one line per tested comparison, and one line for all the comparisons that cannot be tested
    because a model ran once, instead of a "No claim can be made" line each. When no
    comparison could be tested, that line ends with ``advice``."""
    tested = [c.verdict for c in ranking if c.n_best >= 2 and c.n_other >= 2]
    untested = [c for c in ranking if c.n_best < 2 or c.n_other < 2]
    if not untested:
        return tested
    best = untested[0].best
    others = [c.other for c in untested]
    gaps = [f"{abs(c.diff) * 100:.2f}" for c in untested]
    once = ([best] if untested[0].n_best < 2 else []) + [c.other for c in untested
                                                          if c.n_other < 2]
    if not tested:
        who = "every model ran only once" if len(once) == len(ranking) + 1 else \
            f"{_names(once)} ran only once"
        return [f"With one run per model no ranking claim can be made about {best} vs "
                f"{_names(others)}: {who} (n = 1), so seed-to-seed noise is unknown: no "
                f"confidence interval, no p-value (observed differences {_names(gaps)} pp"
                f"{', in that order' if len(gaps) > 1 else ''}). {advice}"]
    who = ("each of them" if len(once) == len(others) and best not in once
           else _names(once)) + (" ran" if len(once) > 1 else " ran")
    return [*tested, f"No claim can be made about {best} vs {_names(others)}: {who} only once "
            f"(n = 1), so there is no confidence interval and no p-value (observed "
            f"difference{'s' if len(gaps) > 1 else ''} {_names(gaps)} pp"
            f"{', in that order' if len(gaps) > 1 else ''})."]


def ranking_lines(results: StudyResults) -> list[str]:
    """The ranking in lines: which correction over how many comparisons, the best against
    each other model, each model against the next (difference with its CI), and the race."""
    if not results.ranking:
        return []
    lines = verdict_lines(results.ranking)
    if results.ranked is not None and any(c.n_best >= 2 and c.n_other >= 2
                                          for c in results.ranking):
        lines.insert(0, f"Ranking on test accuracy, with {results.ranked.text}: "
                        "significant means after the correction.")
        steps = [f"{c.best} − {c.other}: {points(c)}"
                 + ("" if c.significant else ", not significant")
                 for c in results.adjacent if c.n_best >= 2 and c.n_other >= 2]
        if len(results.adjacent) > 1 and steps:
            lines.append("Each model against the next: " + "; ".join(steps) + ".")
    return lines + race_lines(results)


def race_lines(results: StudyResults) -> list[str]:
    """The race, when the study raced: how it ended, its cost, who was dropped when and why."""
    text = race_summary(results)
    return [text] if text else []


def race_json(results: StudyResults) -> dict[str, Any] | None:
    """The race for results.json: limits, looks, drops (with the comparison that decided
    each), why it ended and what it cost (None when the study did not race)."""
    r = results.race
    if r is None:
        return None
    info = results.meta.get("race") if isinstance(results.meta.get("race"), dict) else {}
    return {
        "limits": {m: {"min": lim.min, "max": lim.max} for m, lim in r.limits.items()},
        "alpha": r.alpha, "correction": r.correction, "max_looks": r.max_looks,
        "reason": r.reason, "winner": r.winner, "stopped": info.get("stopped"),
        "budget": info.get("budget"), "runs": r.runs, "fixed_runs": r.fixed_runs,
        "seeds": dict(r.targets),
        "looks": [{"number": look.number, "seeds": look.seeds, "leader": look.leader,
                   "alpha": look.alpha, "dropped": list(look.dropped)} for look in r.looks],
        "drops": {m: {"look": d.look, "seeds": d.seeds, "against": d.against or None,
                      "comparison": None if d.comparison is None else {
                          k: finite(v) for k, v in asdict(d.comparison).items()}}
                  for m, d in r.drops.items()},
    }


# ---------------------------------------------------------------------------------------------
# Files


def to_markdown(results: StudyResults) -> str:
    cols, rows = table_cells(results)
    lines = [f"# {results.study}: results", ""]
    if results.validation_is_test:
        lines += [f"> {TEST_AS_VALIDATION_NOTE}", ""]
    lines += ["| " + " | ".join(c.header for c in cols) + " |",
              "|" + "".join("---:|" if c.numeric else "---|" for c in cols)]
    lines += ["| " + " | ".join(f"**{x.text}**" if x.best else x.text for x in r) + " |"
              for r in rows]
    lines += ["", "Metrics are mean ± std over n finished repeats; accuracy in %; "
              f"{TIME_NOTE}. Bold: the best validation or test value."
              + (f" {CLIPPED_NOTE}." if ci_clipped(results) else ""), "",
              f"{EVAL_NOTE}", ""]
    lines += ["## Statistics", "", "| " + " | ".join(STATS_COLUMNS) + " |",
              "|" + "---|" * len(STATS_COLUMNS)]
    lines += ["| " + " | ".join(stats_cells(m)) + " |" for m in results.models]
    lines += ["", "95 % CI: Student t over the n repeats (none with n = 1). Gap: final train "
              "accuracy − validation accuracy, both evaluated after training; best epoch: the "
              "epoch of lowest validation loss.", ""]
    rl = ranking_lines(results)
    if rl:
        lines += ["## Ranking (test accuracy)", ""] + [f"- {t}" for t in rl] + [""]
    lines += pivot_markdown(results)
    return "\n".join(lines)


def finite(v: Any) -> Any:
    """NaN and ±inf become None: JSON has no NaN (``JSON.parse`` rejects it)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _summary_fields(prefix: str, s: Summary | None) -> dict[str, Any]:
    if s is None:
        return {f"{prefix}_{k}": None for k in ("mean", "std", "ci_low", "ci_high")}
    return {f"{prefix}_mean": finite(s.mean), f"{prefix}_std": finite(s.std),
            f"{prefix}_ci_low": finite(s.ci_low), f"{prefix}_ci_high": finite(s.ci_high)}


def model_record(m: ModelResult, validation_is_test: bool) -> dict[str, Any]:
    """One model's flat dict (a CSV/JSON row). Values with no meaning (the std and CI of a
    single run, say) are None."""
    row: dict[str, Any] = {"model": m.model, "n": m.n,
                           "statuses": ";".join(f"{k}={v}" for k, v in m.statuses.items()),
                           **asdict(m.architecture), "total_params": m.total_params,
                           "macs_per_sample": m.macs_per_sample, "data": m.data}
    for k in FINAL_METRICS:
        row |= _summary_fields(k, m.metrics.get(k))
    row |= _summary_fields("train_seconds", m.train_seconds)
    row["train_seconds_median"] = m.median_train_seconds
    row |= _summary_fields("overfit_gap", m.overfit_gap)
    row["validation_is_test"] = validation_is_test
    return row


def to_records(results: StudyResults) -> list[dict[str, Any]]:
    """One flat dict per model (the CSV/JSON rows)."""
    return [model_record(m, results.validation_is_test) for m in results.models]


def records_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of flat dicts sharing their keys (a header line, then a line per dict)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def to_csv(results: StudyResults) -> str:
    return records_csv(to_records(results))


def json_text(results: StudyResults) -> str:
    """results.json: strict JSON (``null`` where a value is undefined, never ``NaN``)."""
    def rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
        return [{k: finite(v) for k, v in asdict(c).items()} for c in comparisons]

    r = results.ranked
    correction = None if r is None else {"method": r.correction, "family": r.family,
                                         "alpha": r.alpha, "looks": r.looks, "text": r.text}
    return json.dumps({"study": results.study, "validation_is_test": results.validation_is_test,
                       "models": to_records(results), "correction": correction,
                       "ranking": rows(results.ranking), "adjacent": rows(results.adjacent),
                       "pairs": rows(r.pairs if r is not None else []),
                       "race": race_json(results)},
                      indent=2, allow_nan=False) + "\n"


def write_tables(results: StudyResults, directory: str | Path | None = None) -> list[Path]:
    """Write results.md, results.csv and results.json into ``directory`` (default: the study
    directory), each atomically. An unwritable directory raises ``OSError``."""
    d = Path(directory) if directory is not None else results.directory
    files = {"results.md": to_markdown(results), "results.csv": to_csv(results),
             "results.json": json_text(results)}
    for name, text in files.items():
        atomic_write(d / name, text)
    return [d / n for n in files]
