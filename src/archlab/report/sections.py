"""One report section per model: what it is, how its runs went, its metrics and its figures.

Figures come from the store's histories and from the files the model's first finished run
wrote (weights, predictions). A file that is missing, unreadable or does not fit is refused
with a note in the section and a warning; the report is built without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archlab.analysis.conclusions import stuck_at_chance
from archlab.analysis.predictions import Predictions
from archlab.analysis.results import ModelResult, accuracy_ci, run_file
from archlab.analysis.stats import Summary
from archlab.describe import compact_architecture, summary_text
from archlab.errors import ArchlabError
from archlab.model import BuiltModel, build_model
from archlab.report.figures import (
    CONFUSION_MAX,
    Image,
    confusion_figure,
    curves_figure,
    gallery_figure,
    violin_figure,
)
from archlab.report.gather import (
    Curves,
    gather_curves,
    gather_gallery,
    gather_weights,
    read_predictions,
    read_weights,
)
from archlab.spec import TrainSpec
from archlab.store import PREDICTIONS_FILE, WEIGHTS_FILE, RunStatus, Store

__all__ = ["Section", "format_training", "model_section"]

Warn = Callable[[str], None]


@dataclass
class Section:
    result: ModelResult
    anchor: str
    description: str
    status: str
    ok: bool
    badge: str
    badge_class: str  # ok | bad
    training: str
    seeds: str
    errors: list[str]
    notes: list[str]
    metrics: list[tuple[str, str, str, str, str]]  # metric, mean, std, 95 % CI, n
    compact: str | None
    summary: str | None
    images: list[Image]
    per_class: list[tuple[str, str, int]]  # class, accuracy, test images (worst first: many)
    #: the most frequent mistakes: true class, predicted class, count, share of the true class
    confused: list[tuple[str, str, int, str]] = field(default_factory=list)
    many_classes: bool = False  # over CONFUSION_MAX classes: no matrix, the lists instead
    predictions: Predictions | None = None  # the first finished run's (the sample gallery's)
    rank: str = ""  # the model's rank by mean test accuracy ("" before ranking, "–" unranked)


def format_training(train: TrainSpec) -> str:
    """'adadelta(learning_rate=1.0) · batch 128 · 12 epochs · …' for a run's training."""
    opt = train.optimizer.to_config()
    name = opt.pop("name", "?")
    args = ", ".join(f"{k}={v}" for k, v in opt.items())
    parts = [f"{name}({args})" if args else str(name), f"batch {train.batch_size}",
             f"{train.epochs} epoch{'s' if train.epochs != 1 else ''}"]
    if train.early_stopping is not None:
        es = train.early_stopping
        parts.append(f"early stopping on {es.monitor} (patience {es.patience})")
    if train.restore_best:
        parts.append("best-validation weights restored")
    return " · ".join(parts)


def _summary_row(label: str, s: Summary | None, pct: bool, digits: int = 4,
                 unit: str = "%") -> tuple[str, str, str, str, str]:
    if s is None:
        return (label, "–", "–", "–", "0")
    scale, d, unit = (100.0, 2, unit) if pct else (1.0, digits, "")

    def f(x: float) -> str:
        return f"{x * scale:.{d}f}{unit}" if math.isfinite(x) else "–"

    ci = f"{f(s.ci_low)} to {f(s.ci_high)}" if s.n > 1 else "–"
    if pct and unit == "%" and s.n > 1 and math.isfinite(s.ci_low):
        ci = accuracy_ci(s)[0]  # clipped to [0, 100] % and marked
    return (label, f(s.mean), f(s.std) if s.n > 1 else "–", ci, str(s.n))


_LABELS = {"train_loss": "train loss (eval)", "train_accuracy": "train accuracy (eval)",
           "val_loss": "validation loss", "val_accuracy": "validation accuracy",
           "test_loss": "test loss", "test_accuracy": "test accuracy"}


def _metric_rows(m: ModelResult) -> list[tuple[str, str, str, str, str]]:
    order = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_accuracy",
             "train_loss")
    rows = [_summary_row(_LABELS[k], m.metrics.get(k), k.endswith("accuracy")) for k in order]
    rows.append(_summary_row("train − val accuracy gap", m.overfit_gap, True, unit=" pp"))
    rows.append(_summary_row("training time (s)", m.train_seconds, False, 1))
    rows.append(_summary_row("best epoch (val loss)", m.best_epoch, False, 1))
    return rows


def _status(m: ModelResult, classes: int) -> tuple[str, bool, str, str]:
    """(run counts, has a finished run, badge text, badge class)."""
    total = sum(m.statuses.values())
    counts = ", ".join(f"{v} {k}" for k, v in m.statuses.items())
    ok = m.n > 0
    kind = "ok"
    if "test_accuracy" in m.metrics:
        badge = f"{m.metrics['test_accuracy'].mean * 100:.2f}%"
        if stuck_at_chance(m, classes):
            badge, kind = badge + " · at chance", "bad"
    elif ok:
        badge = "done"
    elif m.diverged_epochs:
        badge, kind = "diverged", "bad"
    else:
        badge, kind = str(next(iter(m.statuses), "no run")), "bad"
    return f"{total} run{'s' if total != 1 else ''}: {counts}", ok, badge, kind


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _build(m: ModelResult, notes: list[str]) -> BuiltModel | None:
    """The model rebuilt on the meta device (no memory, nothing run) for its description."""
    try:
        return build_model(m.runs[0].config.study("report"), m.model, device="meta")
    except ArchlabError as exc:
        notes.append(f"The model cannot be built from its stored config: {exc}")
        return None


def _read(m: ModelResult, store: Store, what: str, name: str, reader: Callable[[Any], Any],
          skipped: str, notes: list[str], warn: Warn) -> Any:
    """``reader`` applied to the first finished run's file ``name``; None, with a note in the
    section and a warning, when the file is missing or refused."""
    run = m.finished[0]
    try:
        if not (store.run_dir(run.run_id) / name).exists():
            raise ArchlabError(f"{name} not found")
        return reader(run_file(store, run.run_id, name))
    except ArchlabError as exc:
        text = f"The {what} of run {run.run_id} are not used: {exc}. {skipped}"
        notes.append(text)
        warn(f"{m.model}: {text}")
        return None


@dataclass
class _RunFiles:
    """What the first finished run's files give a section."""

    images: list[Image] = field(default_factory=list)
    per_class: list[tuple[str, str, int]] = field(default_factory=list)
    confused: list[tuple[str, str, int, str]] = field(default_factory=list)
    predictions: Predictions | None = None


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%" if math.isfinite(x) else "–"


def _run_files(m: ModelResult, store: Store, built: BuiltModel | None, notes: list[str],
               warn: Warn) -> _RunFiles:
    """The first finished run's weight violins, confusion matrix (up to CONFUSION_MAX
    classes), mistakes, per-class accuracy and most-confused pairs."""
    first = m.finished[0]
    out = _RunFiles()
    if built is not None:
        violins = _read(m, store, "weights", WEIGHTS_FILE,
                        lambda path: gather_weights(built, read_weights(path)),
                        "No weight distributions.", notes, warn)
        if violins is not None:
            out.images.append(violin_figure(m.model, violins))
    pred = _read(m, store, "predictions", PREDICTIONS_FILE, read_predictions,
                 "No confusion matrix or misclassified images.", notes, warn)
    if pred is not None:
        out.predictions = pred
        k = len(pred.class_names)
        if k <= CONFUSION_MAX:
            out.images.append(confusion_figure(m.model, pred.confusion, pred.class_names))
        else:
            notes.append(f"With {k} classes the confusion matrix is not drawn (it would not be "
                         "readable): the most-confused pairs and each class's accuracy, lowest "
                         "first, are listed instead.")
        gallery = gather_gallery(pred)
        if gallery is not None:
            out.images.append(gallery_figure(m.model, gallery))
        else:
            notes.append("No test image is misclassified.")
        rows = pred.per_class()
        if k > CONFUSION_MAX:  # a long list: the classes that need attention first
            rows.sort(key=lambda r: (math.isnan(r[1]), r[1]))
        out.per_class = [(c, _pct(a), n) for c, a, n in rows]
        names = pred.class_names
        out.confused = [(names[t], names[p], n, _pct(share))
                        for t, p, n, share in pred.confused_pairs()]
    if out.images:
        notes.append(f"Weights and test-set predictions (per-class accuracy, confusions, "
                     f"misclassified images): run {first.run_id} (repeat {first.repeat}, seed "
                     f"{first.seed}).")
    return out


def model_section(m: ModelResult, i: int, study: Any, store: Store,
                  curves_out: list[tuple[str, Curves]], classes: int, warn: Warn) -> Section:
    """The section of model ``m`` (``i``-th in the table). Its curves are appended to
    ``curves_out`` for the overview when it has a finished run."""
    status, ok, badge, badge_class = _status(m, classes)
    desc = ""
    if study is not None and m.model in study.models:
        desc = study.models[m.model].description
    notes: list[str] = [m.race] if m.race else []  # the seeds a race gave it, and why
    errors = [f"{r.run_id} ({r.status}): {r.error}" for r in m.runs if r.error]
    images: list[Image] = []
    built = _build(m, notes)
    compact = compact_architecture(built) if built is not None else None
    summary = summary_text(built) if built is not None else None
    finished = m.finished
    done = finished or [r for r in m.runs if r.status is RunStatus.DIVERGED]
    curves = gather_curves([store.history(r.run_id) for r in done])
    if curves is not None:
        images.append(curves_figure(m.model, curves))
        if finished:
            curves_out.append((m.model, curves))
        else:
            notes.append("No run finished: the curves are those of the diverged run(s), up to "
                         "the epoch where the loss became non-finite.")
    files = _RunFiles()
    if not finished:
        notes.append("No finished run, so no saved weights: weight distributions, confusion "
                     "matrix and misclassified images are not available.")
    else:
        files = _run_files(m, store, built, notes, warn)
        images += files.images
    trainings = _unique([format_training(r.config.train) for r in m.runs])
    return Section(
        result=m, anchor=f"model-{i}", description=desc, status=status, ok=ok, badge=badge,
        badge_class=badge_class, training="; ".join(trainings),
        seeds=", ".join(str(r.seed) for r in m.runs), errors=errors, notes=notes,
        metrics=_metric_rows(m), compact=compact, summary=summary, images=images,
        per_class=files.per_class, confused=files.confused,
        many_classes=len(files.per_class) > CONFUSION_MAX, predictions=files.predictions)
