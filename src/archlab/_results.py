"""The comparison table the notebooks typed by hand, generated from the store.

One row per model: architecture at a glance (from the stored spec), params, and every final
metric as mean ± std over its finished repeats, with 95 % CIs and n. Written as a rich table
(terminal), Markdown, CSV and JSON — plain files anyone can diff.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archlab._stats import Comparison, Summary, rank, summarize
from archlab._store import FINAL_METRICS, RunRecord, Store

TEST_AS_VALIDATION_NOTE = (
    "Note: this study validates on the test set (`validation: test`, the notebooks' protocol): "
    "the test set was used for model selection, so test metrics are optimistic."
)


@dataclass(frozen=True)
class Architecture:
    """What the notebooks' hand-typed tables described about each model."""

    conv_layers: int
    kernels: str
    channels: str
    padding: str
    pooling: str
    dropout: str
    batch_norm: int
    l2: str
    dense: str


def _walk(layers: Iterable[Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for item in layers:
        name, args = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        yield name, args
        for branch in args.get("branches", []):
            yield from _walk(branch)


def _pair(v: Any, default: Any = None) -> str:
    v = default if v is None else v
    if isinstance(v, list | tuple):
        return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"
    return str(v)


def describe_architecture(layers: list[Any]) -> Architecture:
    """Summarize a model's layers (its YAML form) the way the notebooks' tables did."""
    convs, pools, drops, dense, regs, pads = [], [], [], [], [], set()
    bn = 0
    for name, a in _walk(layers):
        if name == "Conv2D":
            convs.append((_pair(a["kernel_size"]), a["filters"]))
            pads.add(a.get("padding", "valid"))
        elif name in ("MaxPooling2D", "AveragePooling2D"):
            k = _pair(a.get("pool_size"), 2)
            s = _pair(a.get("strides"), a.get("pool_size", 2))
            pools.append(("avg " if name.startswith("Avg") else "") + f"{k}/{s}")
        elif name.startswith("Global"):
            pools.append("global")
        elif name == "Dropout":
            drops.append(f"{a['rate']:g}")
        elif name == "BatchNormalization":
            bn += 1
        elif name == "Dense":
            dense.append(str(a["units"]))
        for key in ("kernel_regularizer", "bias_regularizer"):
            if a.get(key):
                regs.append(", ".join(f"{k} {v:g}" for k, v in a[key].items()))
    return Architecture(
        conv_layers=len(convs), kernels=",".join(k for k, _ in convs) or "-",
        channels="-".join(str(c) for _, c in convs) or "-", padding="/".join(sorted(pads)) or "-",
        pooling=",".join(pools) or "-", dropout=",".join(drops) or "-", batch_norm=bn,
        l2=";".join(sorted(set(regs))) or "-", dense="-".join(dense))


@dataclass
class ModelResult:
    """One model's row: its finished repeats summarized."""

    model: str
    architecture: Architecture
    total_params: int | None
    macs_per_sample: int | None
    n: int
    statuses: dict[str, int]
    metrics: dict[str, Summary]
    train_seconds: Summary | None
    overfit_gap: Summary | None  # final train accuracy − validation accuracy (evaluated)
    best_epoch: Summary | None
    diverged_epochs: list[int]
    runs: list[RunRecord] = field(repr=False, default_factory=list)

    @property
    def test_accuracies(self) -> list[float]:
        return [r.metrics["test_accuracy"] for r in self.runs
                if r.status == "finished" and "test_accuracy" in r.metrics]


@dataclass
class StudyResults:
    """Everything the table and report show, computed once from the store."""

    directory: Path
    study: str
    meta: dict[str, Any]
    models: list[ModelResult]
    validation_is_test: bool
    ranking: list[Comparison]

    def best(self) -> ModelResult | None:
        """The model with the highest mean test accuracy (the ranking's, on ties)."""
        if self.ranking:
            return next(m for m in self.models if m.model == self.ranking[0].best)
        ranked = [m for m in self.models if "test_accuracy" in m.metrics]
        return max(ranked, key=lambda m: m.metrics["test_accuracy"].mean) if ranked else None


def _summ(values: list[float]) -> Summary | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return summarize(vals) if vals else None


def collect(directory: str | Path, *, models: list[str] | None = None,
            run_ids: list[str] | None = None) -> StudyResults:
    """Read a study directory's store and summarize it, model by model (in study order).

    Only the runs of the latest plan count (``run_ids``, else the plan the last `archlab run`
    recorded): runs of an older version of a model stay in the store but out of the table.
    """
    with Store(directory, create=False) as store:
        meta = store.meta()
        if run_ids is None:
            run_ids = meta.get("plan")
        runs = store.runs(models=models, run_ids=run_ids)
    order: dict[str, list[RunRecord]] = {}
    for r in runs:
        order.setdefault(r.model, []).append(r)
    out: list[ModelResult] = []
    validation_is_test = False
    for name, rs in order.items():
        finished = [r for r in rs if r.status == "finished"]
        statuses: dict[str, int] = {}
        for r in rs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        validation_is_test |= rs[0].config["data"]["validation"] == "test"
        metrics = {k: s for k in FINAL_METRICS
                   if (s := _summ([r.metrics.get(k) for r in finished])) is not None}
        gaps = [r.metrics["train_accuracy"] - r.metrics["val_accuracy"] for r in finished
                if "train_accuracy" in r.metrics and "val_accuracy" in r.metrics]
        done = [r for r in rs if r.status in ("finished", "diverged")]
        first = done[0] if done else rs[0]
        out.append(ModelResult(
            model=name, architecture=describe_architecture(rs[0].config["layers"]),
            total_params=first.total_params, macs_per_sample=first.macs_per_sample,
            n=len(finished), statuses=statuses, metrics=metrics,
            train_seconds=_summ([r.train_seconds for r in finished]),
            overfit_gap=_summ(gaps), best_epoch=_summ([r.best_epoch for r in finished]),
            diverged_epochs=[r.diverged_epoch for r in rs if r.diverged_epoch is not None],
            runs=rs))
    accs = {m.model: m.test_accuracies for m in out if m.test_accuracies}
    seeds = {m.model: [r.seed for r in m.runs if r.status == "finished"] for m in out}
    ranking = rank(accs, seeds=seeds) if len(accs) > 1 else []
    return StudyResults(Path(directory), meta.get("study", Path(directory).name), meta, out,
                        validation_is_test, ranking)


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
