"""Models of several studies side by side: ``archlab results DIR1 DIR2 ...`` and the comparison
report read each study's store (read-only) and put every model in one table.

A model name that two studies share is qualified by its study (``mnist-study/cnn``); two
studies of the same name are told apart by their directories. Accuracies are comparable only
on the same test set: when the studies use different datasets the comparison says so (one
warning line, the dataset on every row) and significance tests are run only between models of
the same dataset, never across datasets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from archlab.analysis.multiplicity import PairKey, Ranking, rankings
from archlab.analysis.results import ModelResult, StudyResults, collect
from archlab.analysis.stats import Comparison
from archlab.errors import ArchlabError

__all__ = ["ComparedModel", "StudyComparison", "collect_comparison", "data_text"]


@dataclass(frozen=True)
class ComparedModel:
    """One model of one study in the comparison."""

    study: str  # the study's label: its name, or its directory when two studies share a name
    label: str  # the model's name, 'study/model' when another compared study has that name
    model: str  # the model's name in its study
    dataset: str  # the dataset its runs used ('-' when it has no run)
    data: dict[str, Any]  # its runs' data settings (dataset, validation, preprocessing)
    result: ModelResult  # its study's result, named ``label`` (as the table and verdicts say)
    directory: Path  # its study directory


@dataclass
class StudyComparison:
    """Every model of the compared studies, in study order, with the tests that may be run."""

    studies: list[StudyResults]
    study_labels: list[str]
    models: list[ComparedModel]
    datasets: list[str]  # the distinct datasets, in order of appearance
    rankings: dict[str, list[Comparison]]  # per dataset: its best model against each other
    notes: list[str]  # differences that do not stop a comparison (data settings, protocol)
    #: per dataset: every pair compared, all datasets' pairs corrected as one family
    ranked: dict[str, Ranking] = field(default_factory=dict)

    @property
    def correction_text(self) -> str | None:
        """How the comparisons were corrected, over how many (None: no comparison)."""
        first = next(iter(self.ranked.values()), None)
        return first.text if first is not None else None

    @property
    def same_dataset(self) -> bool:
        return len(self.datasets) <= 1

    @property
    def warning(self) -> str | None:
        """The line that says the datasets differ (None when they do not)."""
        if self.same_dataset:
            return None
        per = "; ".join(f"{d}: " + ", ".join(m.label for m in self.models if m.dataset == d)
                        for d in self.datasets)
        return (f"The compared runs use different datasets ({per}). Test accuracies "
                "on different test sets are not comparable, and no significance test is run "
                "across datasets.")

    @property
    def title(self) -> str:
        return "comparison: " + ", ".join(self.study_labels)


def preprocessing_text(pre: Any) -> str:
    """'x / 255', 'per-channel standardize' or 'keras normalize {...}' for a run's
    ``data.preprocessing``."""
    if pre == "scale":
        return "x / 255"
    if pre == "standardize":
        return "per-channel standardize (training split's mean and std)"
    if isinstance(pre, dict):
        return "keras normalize " + json.dumps(pre.get("normalize", pre), sort_keys=True)
    return str(pre)


def data_text(data: dict[str, Any]) -> str:
    """'mnist-sample, x / 255, 10% validation split' for a run's data settings."""
    pre_text = preprocessing_text(data.get("preprocessing", "scale"))
    validation = data.get("validation", {"split": 0.1})
    val_text = ("validation on the test set" if validation == "test" else
                f"{validation.get('split', 0) * 100:g}% validation split"
                if isinstance(validation, dict) else str(validation))
    dataset = data.get("dataset", "-")
    if isinstance(dataset, dict):  # a user's source: its kind and file or folder name
        kind = next((k for k in ("folder", "csv", "npz", "idx") if k in dataset), "source")
        dataset = f"{kind}:{Path(str(dataset.get(kind, '?'))).name}"
    return f"{dataset}, {pre_text}, {val_text}"


def _labels(studies: Sequence[StudyResults]) -> list[str]:
    """Each study's name; the directory where two share a name (the whole path if needed)."""
    names = [s.study for s in studies]
    if len(set(names)) == len(names):
        return names
    dirs = [s.directory.name or str(s.directory) for s in studies]
    if len(set(dirs)) == len(dirs):
        return [n if names.count(n) == 1 else d for n, d in zip(names, dirs, strict=True)]
    return [n if names.count(n) == 1 else str(s.directory)
            for n, s in zip(names, studies, strict=True)]


def _dataset(m: ModelResult) -> str:
    labels = {r.config.data_label for r in m.runs}
    return next(iter(labels)) if len(labels) == 1 else "-"


def _data(m: ModelResult) -> dict[str, Any]:
    datas = {json.dumps(r.config_json.get("data", {}), sort_keys=True) for r in m.runs}
    if len(datas) != 1:  # one model, several data settings: the plan's runs disagree
        return {"dataset": "-"} if not datas else json.loads(sorted(datas)[0])
    return json.loads(next(iter(datas)))


def collect_comparison(directories: Sequence[str | Path], *,
                       correction: str = "holm") -> StudyComparison:
    """Read each study directory's store (read-only) and line up their models. The models of
    each dataset are compared pair by pair, and every comparison of every dataset is corrected
    as one family with ``correction`` (holm, bh or none); pairs of a raced study keep its
    race's p-values, and a pair across studies where a race chose either model's seeds has its
    p-value multiplied by the number of seed counts the races could have ended at. Raises
    :class:`ArchlabError` for fewer than two directories or the same directory twice."""
    paths = [Path(d) for d in directories]
    if len(paths) < 2:
        raise ArchlabError(f"Expected two or more study directories to compare, received "
                           f"{len(paths)}")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise ArchlabError(f"{p}: Expected each study directory once, received it twice "
                               f"(as {seen[key]} and {p})")
        seen[key] = p
    studies = [collect(p) for p in paths]
    study_labels = _labels(studies)
    counts: dict[str, int] = {}
    for s in studies:
        for m in s.models:
            counts[m.model] = counts.get(m.model, 0) + 1
    models: list[ComparedModel] = []
    for label, s in zip(study_labels, studies, strict=True):
        for m in s.models:
            data = _data(m)
            name = m.model if counts[m.model] == 1 else f"{label}/{m.model}"
            models.append(ComparedModel(label, name, m.model, _dataset(m),
                                        data, replace(m, model=name), s.directory))
    datasets = list(dict.fromkeys(m.dataset for m in models if m.dataset != "-"))
    ranked = _rank(studies, study_labels, models, datasets, correction)
    return StudyComparison(studies, study_labels, models, datasets,
                           {d: r.against_best for d, r in ranked.items()},
                           _notes(studies, study_labels, models, datasets), ranked)


def _rank(studies: list[StudyResults], labels: list[str], models: list[ComparedModel],
          datasets: list[str], correction: str) -> dict[str, Ranking]:
    """Each dataset's models compared pair by pair, all pairs one corrected family."""
    accs = {d: {m.label: m.result.test_accuracies for m in models
                if m.dataset == d and m.result.test_accuracies} for d in datasets}
    accs = {d: a for d, a in accs.items() if len(a) > 1}
    if not accs:
        return {}
    seeds = {m.label: m.result.seeds for m in models if m.result.test_accuracies}
    races: dict[PairKey, float] = {}
    looks = 1
    counts: dict[str, int] = {}  # a raced model: how many seed counts its race could end at
    for label, s in zip(labels, studies, strict=True):
        if s.race is None:
            continue
        names = {m.model: m.label for m in models if m.study == label}
        looks = max(looks, s.race.max_looks)
        for pair, q in s.race.p_values.items():
            if all(n in names for n in pair):
                races[frozenset(names[n] for n in pair)] = q
        for name, lim in s.race.limits.items():
            if name in names:
                counts[names[name]] = lim.max - lim.min + 1
    # A pair across studies whose seeds a race chose is tested at counts the race's data picked,
    # so its fixed-n p-value alone is not valid. Multiplied by K, the number of count pairs the
    # races could have ended at, it is: P(p at the counts reached <= x / K) <= the sum over
    # those (n_a, n_b) of P(p at (n_a, n_b) <= x / K) <= x (a union bound, any stopping rule).
    study_of = {m.label: m.study for m in models}
    factors = {frozenset((a, b)): float(counts.get(a, 1) * counts.get(b, 1))
               for group in accs.values() for a in group for b in group
               if a < b and study_of[a] != study_of[b] and (a in counts or b in counts)}
    return rankings(accs, seeds=seeds, correction=correction, common_seeds=bool(races),
                    p_values=races or None, looks=looks, p_factors=factors or None)


def _notes(studies: list[StudyResults], labels: list[str], models: list[ComparedModel],
           datasets: list[str]) -> list[str]:
    notes = []
    for dataset in datasets:
        settings: dict[str, list[str]] = {}
        for m in models:
            if m.dataset == dataset:
                text = data_text(m.data)
                studies_with = settings.setdefault(text, [])
                if m.study not in studies_with:
                    studies_with.append(m.study)
        if len(settings) > 1:
            notes.append(f"The data settings on {dataset} differ: "
                         + "; ".join(f"{', '.join(s)}: {t.split(', ', 1)[1]}"
                                     for t, s in settings.items())
                         + ". Test accuracies are on the same test set.")
    on_test = [label for label, s in zip(labels, studies, strict=True) if s.validation_is_test]
    if on_test:
        notes.append(f"{', '.join(on_test)} validate{'s' if len(on_test) == 1 else ''} on the "
                     "test set: its test metrics are optimistic.")
    return notes
