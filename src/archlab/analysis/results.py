"""The comparison table the notebooks typed by hand, generated from the store.

One row per model: architecture at a glance (from the stored spec), params, and every final
metric as mean ± std over its finished repeats, with 95 % CIs and n. The report package writes
it as a rich table (terminal), Markdown, CSV and JSON; this module only reads the store.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlab.analysis.multiplicity import Ranking, rankings
from archlab.analysis.racing import SPENDING_POWER, Limits, Race, race
from archlab.analysis.stats import CORRECTIONS, Comparison, Summary, summarize
from archlab.describe import Architecture, describe_architecture
from archlab.errors import ArchlabError, StoreError
from archlab.store import FINAL_METRICS, RunRecord, RunStatus, Store

if TYPE_CHECKING:
    from archlab.plan import RunConfig

__all__ = [
    "CLIPPED_MARK",
    "CLIPPED_NOTE",
    "TEST_AS_VALIDATION_NOTE",
    "ModelResult",
    "PivotRow",
    "StudyResults",
    "accuracy_ci",
    "architecture_of",
    "collect",
    "model_result",
    "open_store",
    "pivot",
    "race_of",
    "rank_models",
    "ranking_of",
    "resolve_study_directory",
    "run_file",
]

TEST_AS_VALIDATION_NOTE = (
    "Note: this study validates on the test set (`validation: test`, the notebooks' protocol): "
    "the test set was used for model selection, so test metrics are optimistic."
)


#: Marks an accuracy CI shown clipped to [0, 100] %.
CLIPPED_MARK = "†"
CLIPPED_NOTE = ("† a 95 % CI bound clipped to 0-100 %: with few repeats the Student t interval "
                "reaches past it (results.json keeps the raw bounds)")


def accuracy_ci(s: Summary) -> tuple[str, bool]:
    """An accuracy's 95 % CI as text, and whether a bound was clipped: ``'97.90 to 98.30%'``;
    a bound outside [0, 1] (a Student t interval at n = 2 can reach 106 %) is shown at the
    limit and marked, ``'78.62 to 100.00%†'``. The raw bounds stay in ``s`` (and results.json)."""
    low, high = max(s.ci_low, 0.0), min(s.ci_high, 1.0)
    clipped = low != s.ci_low or high != s.ci_high
    return f"{low * 100:.2f} to {high * 100:.2f}%{CLIPPED_MARK if clipped else ''}", clipped


def open_store(directory: str | Path) -> Store:
    """The store of an existing study directory, opened for reading only (so a read-only or
    archived copy can be analysed). Raises :class:`StoreError` when there is none."""
    return Store(directory, create=False, readonly=True)


def run_file(store: Store, run_id: str, name: str) -> Path:
    """The path of a file a run wrote (``weights.safetensors``, ``predictions.safetensors``),
    checked against the checksum the store recorded. Raises :class:`StoreError` when it is
    missing or does not match.

    A schema-v1 store (archlab 0.1, before checksums) opened read-only records none: its files
    get the readers' structural checks only (safetensors, names and shapes), as when loading
    a model for inference."""
    if store.version >= 2:
        return store.verify_file(run_id, name)
    path = store.run_dir(run_id) / name
    if not path.is_file():
        raise StoreError(f"{path}: missing")
    return path


def architecture_of(config: RunConfig) -> Architecture:
    """The notebooks' architecture columns for a run's model (the one call into describe)."""
    return describe_architecture(config.layers)


@dataclass
class ModelResult:
    """One model's row: its finished repeats summarized."""

    model: str
    architecture: Architecture
    total_params: int | None
    macs_per_sample: int | None
    n: int
    statuses: dict[RunStatus, int]
    metrics: dict[str, Summary]
    train_seconds: Summary | None
    overfit_gap: Summary | None  # final train accuracy − validation accuracy (evaluated)
    best_epoch: Summary | None
    diverged_epochs: list[int]
    runs: list[RunRecord] = field(repr=False, default_factory=list)
    race: str | None = None  # what the study's race did with this model (None: no race)

    @property
    def finished(self) -> list[RunRecord]:
        """The runs that finished (diverged, failed and interrupted ones excluded)."""
        return [r for r in self.runs if r.status is RunStatus.FINISHED]

    @property
    def test_accuracies(self) -> list[float]:
        return [r.metrics["test_accuracy"] for r in self.finished if "test_accuracy" in r.metrics]

    @property
    def seeds(self) -> list[int]:
        """The seeds of the finished runs that have a test accuracy (for paired tests)."""
        return [r.seed for r in self.finished if "test_accuracy" in r.metrics]

    @property
    def data(self) -> str:
        """The data its runs saw: a built-in's name, or a user's source with its content's
        fingerprint (``folder:pets@1a2b3c4d``); several, comma-separated, if they differ."""
        return ", ".join(sorted({r.config.data_label for r in self.runs})) or "-"

    @property
    def median_train_seconds(self) -> float | None:
        """The median training time of the finished runs: robust to one noisy timing."""
        times = [r.train_seconds for r in self.finished
                 if r.train_seconds is not None and math.isfinite(r.train_seconds)]
        return float(statistics.median(times)) if times else None


@dataclass
class StudyResults:
    """Everything the table and report show, computed once from the store."""

    directory: Path
    study: str
    meta: dict[str, Any]
    models: list[ModelResult]
    validation_is_test: bool
    ranking: list[Comparison]  # the best model against each other one (corrected)
    #: every pair compared and corrected as one family; the adjacent pairs' effect sizes
    ranked: Ranking | None = None
    race: Race | None = None  # the study's race, replayed from its runs (None: no race)

    @property
    def correction(self) -> str:
        """The multiple-comparison correction the ranking used (holm, bh or none)."""
        return self.ranked.correction if self.ranked is not None else "holm"

    @property
    def adjacent(self) -> list[Comparison]:
        """Each model against the next one in the ranking: mean difference with its CI."""
        return self.ranked.adjacent if self.ranked is not None else []

    def best(self) -> ModelResult | None:
        """The model with the highest mean test accuracy (the ranking's, on ties)."""
        if self.ranking:
            return next(m for m in self.models if m.model == self.ranking[0].best)
        ranked = [m for m in self.models if "test_accuracy" in m.metrics]
        return max(ranked, key=lambda m: m.metrics["test_accuracy"].mean) if ranked else None


def _summ(values: list[float | None]) -> Summary | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return summarize(vals) if vals else None


def model_result(name: str, runs: list[RunRecord]) -> ModelResult:
    """Summarize one model's runs (finished ones count; the others are tallied by status)."""
    finished = [r for r in runs if r.status is RunStatus.FINISHED]
    statuses: dict[RunStatus, int] = {}
    for r in runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    metrics = {k: s for k in FINAL_METRICS
               if (s := _summ([r.metrics.get(k) for r in finished])) is not None}
    gaps: list[float | None] = [r.metrics["train_accuracy"] - r.metrics["val_accuracy"]
                                for r in finished
                                if "train_accuracy" in r.metrics and "val_accuracy" in r.metrics]
    done = [r for r in runs if r.status.is_finished()]
    first = done[0] if done else runs[0]
    return ModelResult(
        model=name, architecture=architecture_of(runs[0].config),
        total_params=first.total_params, macs_per_sample=first.macs_per_sample,
        n=len(finished), statuses=statuses, metrics=metrics,
        train_seconds=_summ([r.train_seconds for r in finished]),
        overfit_gap=_summ(gaps),
        best_epoch=_summ([None if r.best_epoch is None else float(r.best_epoch)
                          for r in finished]),
        diverged_epochs=[r.diverged_epoch for r in runs if r.diverged_epoch is not None],
        runs=runs)


def ranking_of(groups: dict[str, list[ModelResult]], *, correction: str = "holm",
               race: Race | None = None) -> dict[str, Ranking]:
    """Each group's models (a dataset's, say) ranked on test accuracy, every pair within a
    group compared and all comparisons corrected as one family (``correction``: holm, bh or
    none). Models that ran the same seeds (common random numbers) are compared with a paired
    t-test, the others with Welch's. With a ``race``, its models are compared on the seeds
    they share and their pairs take the race's p-values (adjusted for its looks). Groups with
    fewer than two models with a test accuracy are left out."""
    accs = {g: {m.model: m.test_accuracies for m in ms if m.test_accuracies}
            for g, ms in groups.items()}
    accs = {g: a for g, a in accs.items() if len(a) > 1}
    if not accs:
        return {}
    seeds = {m.model: m.seeds for ms in groups.values() for m in ms if m.test_accuracies}
    if race is None:
        return rankings(accs, seeds=seeds, correction=correction)
    return rankings(accs, seeds=seeds, correction=correction, common_seeds=True,
                    p_values=race.p_values, looks=race.max_looks)


def rank_models(models: list[ModelResult], *, correction: str = "holm",
                race: Race | None = None) -> list[Comparison]:
    """The best model (test accuracy) against each other one, corrected over every pair (see
    :func:`ranking_of`)."""
    ranked = ranking_of({"": models}, correction=correction, race=race)
    return ranked[""].against_best if ranked else []


def race_of(meta: dict[str, Any], runs: list[RunRecord]) -> Race | None:
    """The race ``archlab.run.race`` recorded in the store's ``meta``, replayed from ``runs``
    (the plan's: the same decisions it made); None when the study did not race, or when its
    current plan is not the race's (a later run with fixed repeats)."""
    info = meta.get("race")
    if not isinstance(info, dict) or not isinstance(info.get("limits"), dict):
        return None
    ids = set(info.get("plan") or [])
    if not ids or not ids <= set(meta.get("plan") or []):
        return None
    try:
        limits = {m: Limits(int(lo), int(hi)) for m, (lo, hi) in info["limits"].items()}
        if any(r.model in limits and r.run_id not in ids for r in runs):
            return None  # a later run with fixed repeats gave the race's models more seeds
        values: dict[str, dict[int, float | None]] = {}
        for r in runs:
            if r.run_id in ids and r.model in limits and r.status.is_finished():
                acc = r.metrics.get("test_accuracy") if r.status is RunStatus.FINISHED \
                    else None
                values.setdefault(r.model, {})[r.repeat] = (
                    acc if acc is not None and math.isfinite(acc) else None)
        return race(values, limits, alpha=float(info.get("alpha", 0.05)),
                    correction=str(info.get("correction", "holm")),
                    power=float(info.get("power", SPENDING_POWER)))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"the store's race record is damaged ({exc})") from None


def collect(directory: str | Path, *, models: list[str] | None = None,
            run_ids: list[str] | None = None, correction: str | None = None) -> StudyResults:
    """Read a study directory's store and summarize it, model by model (in study order).

    Only the runs of the latest plan count (``run_ids``, else the plan the last `archlab run`
    recorded): runs of an older version of a model stay in the store but out of the table.
    Every pair of models is compared and the family corrected with ``correction`` (holm, bh
    or none; default: the one the last `archlab run` used, else holm); a raced study's pairs
    take the race's p-values, adjusted for its looks. The store is opened read-only: nothing
    is written.
    """
    if correction is not None and correction not in CORRECTIONS:
        raise ArchlabError(f"correction: Expected one of {', '.join(CORRECTIONS)}, received "
                           f"{correction!r}")
    with open_store(directory) as store:
        meta = store.meta()
        if run_ids is None:
            run_ids = meta.get("plan")
        runs = store.runs(models=models, run_ids=run_ids)
    order: dict[str, list[RunRecord]] = {}
    for r in runs:
        order.setdefault(r.model, []).append(r)
    out = [model_result(name, rs) for name, rs in order.items()]
    validation_is_test = any(rs[0].config.data.validates_on_test for rs in order.values())
    if correction is None:
        correction = meta.get("correction") if meta.get("correction") in CORRECTIONS else "holm"
    raced = race_of(meta if run_ids is None else {**meta, "plan": run_ids}, runs)
    if raced is not None:
        for m in out:
            if m.model in raced.limits:
                m.race = raced.model_text(m.model)
    ranked = ranking_of({"": out}, correction=correction, race=raced).get("")
    return StudyResults(Path(directory), meta.get("study", Path(directory).name), meta, out,
                        validation_is_test, ranked.against_best if ranked else [], ranked,
                        raced)


def resolve_study_directory(source: str | Path) -> Path:
    """The study directory ``archlab results``/``report`` read: ``source`` itself when it is a
    directory, else the default directory (``archlab-runs/<study name>``) of the study file or
    ``zoo:NAME`` it names. Raises :class:`StoreError` (or ``SpecError`` for a bad study file)."""
    from archlab.spec import load_study
    from archlab.store.layout import study_dir

    path = Path(source)
    text = str(source)
    if path.is_dir():
        return path
    if text.startswith("zoo:") or path.is_file() or path.suffix in (".yaml", ".yml"):
        study = load_study(text)
        directory = study_dir(study)
        if not directory.is_dir():
            raise StoreError(f"{text}: no results for study {study.name!r} in its default "
                             f"directory {directory} (run it with `archlab run {text}`, or "
                             "name the directory it was run into)")
        return directory
    raise StoreError(f"{text}: no such study directory or study file")


# ---------------------------------------------------------------------------------------------
# Pivot on a swept field


_MISSING: Any = object()


def config_value(config: RunConfig, path: str) -> Any:
    """The value at a sweep path (train.batch_size, layers.1.Dense.units) of a run's resolved
    config, defaults included; a sentinel when the run has no such field."""
    from pydantic import BaseModel

    parts = path.split(".")
    node: Any = config
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(node, list | tuple):
            if not part.isdigit() or int(part) >= len(node):
                return _MISSING
            node = node[int(part)]
            if isinstance(node, BaseModel) and i + 1 < len(parts) \
                    and getattr(node, "type", None) == parts[i + 1]:
                i += 1  # a layer: its name follows its index
            elif isinstance(node, BaseModel) and hasattr(node, "type"):
                return _MISSING  # another layer than the path names
        elif isinstance(node, BaseModel):
            if part not in type(node).model_fields:
                return _MISSING
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
        i += 1
    if isinstance(node, BaseModel):
        to_config = getattr(node, "to_config", None)
        return to_config() if callable(to_config) else node.model_dump(mode="json")
    return list(node) if isinstance(node, tuple) else node


@dataclass(frozen=True)
class PivotRow:
    """One value of a pivoted field: the models that have it and their runs' metric, pooled."""

    value: Any
    models: list[str]
    summary: Summary


def pivot(results: StudyResults, path: str, metric: str = "test_accuracy") -> list[PivotRow]:
    """``metric`` per value of the field at ``path`` (e.g. ``train.batch_size``), over every
    finished run of every model with that value, in order of first appearance (study order).
    Models without the field are left out; no model with it is an :class:`ArchlabError`."""
    import json

    groups: dict[str, tuple[Any, list[str], list[float]]] = {}
    for m in results.models:
        if not m.runs:
            continue
        value = config_value(m.runs[0].config, path)
        if value is _MISSING:
            continue
        key = json.dumps(value, sort_keys=True)
        _, names, values = groups.setdefault(key, (value, [], []))
        names.append(m.model)
        values += [v for r in m.finished
                   if (v := r.metrics.get(metric)) is not None and math.isfinite(v)]
    if not groups:
        raise ArchlabError(f"--pivot {path}: no model of study '{results.study}' has this field "
                           "(write a sweep path such as train.batch_size or "
                           "layers.1.Dense.units)")
    return [PivotRow(value, names, summarize(values))
            for value, names, values in groups.values() if values]
