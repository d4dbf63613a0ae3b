"""The comparison table the notebooks typed by hand, generated from the store.

One row per model: architecture at a glance (from the stored spec), params, and every final
metric as mean ± std over its finished repeats, with 95 % CIs and n. Written as a rich table
(terminal), Markdown, CSV and JSON — plain files anyone can diff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.analysis.stats import Comparison, Summary, rank, summarize
from archlab.describe import Architecture, describe_architecture
from archlab.store import FINAL_METRICS, RunRecord, Store

TEST_AS_VALIDATION_NOTE = (
    "Note: this study validates on the test set (`validation: test`, the notebooks' protocol): "
    "the test set was used for model selection, so test metrics are optimistic."
)


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
        validation_is_test |= rs[0].config.data.validates_on_test
        metrics = {k: s for k in FINAL_METRICS
                   if (s := _summ([r.metrics.get(k) for r in finished])) is not None}
        gaps = [r.metrics["train_accuracy"] - r.metrics["val_accuracy"] for r in finished
                if "train_accuracy" in r.metrics and "val_accuracy" in r.metrics]
        done = [r for r in rs if r.status in ("finished", "diverged")]
        first = done[0] if done else rs[0]
        out.append(ModelResult(
            model=name,
            architecture=describe_architecture([la.to_config() for la in rs[0].config.layers]),
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
