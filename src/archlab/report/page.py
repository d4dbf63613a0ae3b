"""The study report: ``report.html`` (one file, images embedded, opens offline) and ``report.md``
with its PNGs in ``report_files/``.

Nothing here recomputes a number the store already holds: the table, the per-model statistics
and the conclusions come from :func:`archlab.analysis.results.collect`; the curves from the
stored per-epoch histories; the weight violins from each model's first finished run's weights;
the confusion matrices, per-class accuracies and confident mistakes from the predictions that
run stored when it finished. Pages are rendered with Jinja2 templates (HTML autoescaped).
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from archlab.analysis.conclusions import conclusions, num_classes, stuck_at_chance
from archlab.analysis.predictions import PREDICTIONS_FILE, load_predictions
from archlab.analysis.results import TEST_AS_VALIDATION_NOTE, ModelResult, StudyResults, collect
from archlab.analysis.stats import Summary
from archlab.describe import ARROW, compact_architecture, summary_text
from archlab.errors import ArchlabError
from archlab.model import BuiltModel, build_model
from archlab.report.figures import (
    RC,
    REPORT_FILES,
    Curves,
    Image,
    confusion_figure,
    curves_figure,
    gallery_figure,
    gather_curves,
    overlay_figure,
    scatter_figure,
    short_label,
    violin_figure,
)
from archlab.report.tables import COLUMNS, fmt_metric, format_duration, row_cells
from archlab.store import FINAL_METRICS, Store

# ---------------------------------------------------------------------------------------------
# Page model


@dataclass
class Cell:
    text: str
    sort: str  # the value the in-page sort uses (a number where the column is numeric)
    best: bool = False
    numeric: bool = False


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
    per_class: list[tuple[str, str, int]]


def _fmt_train(cfg: dict[str, Any]) -> str:
    opt = dict(cfg.get("optimizer", {}))
    name = opt.pop("name", "?")
    args = ", ".join(f"{k}={v}" for k, v in opt.items())
    parts = [f"{name}({args})" if args else name, f"batch {cfg.get('batch_size')}",
             f"{cfg.get('epochs')} epoch{'s' if cfg.get('epochs') != 1 else ''}"]
    if cfg.get("early_stopping"):
        es = cfg["early_stopping"]
        parts.append(f"early stopping on {es.get('monitor')} (patience {es.get('patience')})")
    if cfg.get("restore_best"):
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
    return (label, f(s.mean), f(s.std) if s.n > 1 else "–", ci, str(s.n))


def _metric_rows(m: ModelResult) -> list[tuple[str, str, str, str, str]]:
    labels = {"train_loss": "train loss", "train_accuracy": "train accuracy",
              "val_loss": "validation loss", "val_accuracy": "validation accuracy",
              "test_loss": "test loss", "test_accuracy": "test accuracy"}
    rows = [_summary_row(labels[k], m.metrics.get(k), k.endswith("accuracy"))
            for k in FINAL_METRICS]
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
        badge, kind = next(iter(m.statuses), "no run"), "bad"
    return f"{total} run{'s' if total != 1 else ''}: {counts}", ok, badge, kind


def _table(results: StudyResults) -> tuple[list[str], list[list[Cell]]]:
    """The CLI table's columns (plus the test accuracy CI with repeats), cells with sort keys
    and the best value of each metric column marked."""
    header = list(COLUMNS)
    with_ci = any(m.metrics.get("test_accuracy") and m.metrics["test_accuracy"].n > 1
                  for m in results.models)
    if with_ci:
        header.insert(header.index("test acc") + 1, "test acc 95% CI")
    rows: list[list[Cell]] = []
    numeric_cols = {"n", "conv", "BN", "params", "time (s)", "test acc 95% CI",
                    "train loss", "train acc", "val loss", "val acc", "test loss", "test acc"}
    better = {"train loss": min, "val loss": min, "test loss": min, "train acc": max,
              "val acc": max, "test acc": max, "time (s)": min, "params": min}
    for m in results.models:
        texts = row_cells(m)
        a = m.architecture
        sorts: list[Any] = [m.model, m.n, a.conv_layers, a.kernels, a.channels, a.pooling,
                            a.dropout, a.batch_norm, a.l2, m.total_params]
        sorts += [m.metrics[k].mean if k in m.metrics else None for k in FINAL_METRICS]
        sorts.append(m.train_seconds.mean if m.train_seconds else None)
        if with_ci:
            s = m.metrics.get("test_accuracy")
            i = COLUMNS.index("test acc") + 1
            if s is not None and s.n > 1:
                texts.insert(i, f"{s.ci_low * 100:.2f} to {s.ci_high * 100:.2f}%")
                sorts.insert(i, s.ci_low)
            else:
                texts.insert(i, "-")
                sorts.insert(i, None)
        cells = []
        for col, text, key in zip(header, texts, sorts, strict=True):
            numeric = col in numeric_cols
            if key is None:
                sort = ""
            elif numeric:
                sort = repr(float(key))
            else:
                sort = str(key)
            cells.append(Cell(text, sort, numeric=numeric))
        rows.append(cells)
    for j, col in enumerate(header):
        pick = better.get(col)
        if pick is None:
            continue
        vals = [float(r[j].sort) for r in rows if r[j].sort != ""]
        if len(vals) < 2:
            continue
        target = pick(vals)
        for r in rows:
            if r[j].sort != "" and float(r[j].sort) == target:
                r[j].best = True
    return header, rows


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _header(results: StudyResults, study: Any, data_info: str | None) -> dict[str, Any]:
    runs = [r for m in results.models for r in m.runs]
    data_cfgs = _unique(r.config.data.model_dump(mode="json") for r in runs)
    data = data_cfgs[0] if data_cfgs else {}
    validation = data.get("validation")
    if validation == "test":
        protocol = "validation on the test set (the notebooks' protocol)"
    elif isinstance(validation, dict):
        seeds = _unique(r.config.split_seed for r in runs)
        protocol = (f"validation on a stratified {validation.get('split', 0) * 100:g}% of the "
                    f"training set (split seed {', '.join(map(str, seeds))}); test set held out")
    else:
        protocol = "-"
    pre = data.get("preprocessing", "scale")
    pre_text = "x / 255" if pre == "scale" else f"keras normalize {pre.get('normalize', pre)}"
    envs = [r.environment for r in runs if r.environment]

    def vals(key: str) -> str:
        return ", ".join(str(v) for v in _unique(e.get(key) for e in envs)) or "-"

    def machine(e: dict[str, Any]) -> str:
        cpu, arch = e.get("processor") or e.get("machine"), e.get("machine")
        return (f"{cpu}{f' ({arch})' if arch and arch != cpu else ''}, {e.get('cpu_count')} "
                f"CPUs, {e.get('threads')} torch threads"
                + (f", device {e['device']}" if e.get("device") else ""))

    hardware = "; ".join(_unique(machine(e) for e in envs)) or "-"
    wall = sum(r.wall_seconds or 0.0 for r in runs)
    train = sum(r.train_seconds or 0.0 for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    trainings = _unique(_fmt_train(r.config_json.get("train", {})) for r in runs)
    repeats = _unique(sum(m.statuses.values()) for m in results.models)
    facts = [
        ("dataset", data.get("dataset", "-") + (f" ({data_info})" if data_info else "")),
        ("preprocessing", pre_text),
        ("protocol", protocol),
        ("training", trainings[0] if len(trainings) == 1 else
         f"{len(trainings)} different configurations (see each model)"),
        ("runs", f"{len(runs)} ({', '.join(f'{v} {k}' for k, v in statuses.items())}) over "
                 f"{len(results.models)} models; runs per model: "
                 f"{', '.join(map(str, sorted(repeats)))}"),
        ("versions", f"archlab {vals('archlab')} · torch {vals('torch')} · "
                     f"python {vals('python')}"),
        ("hardware", hardware),
        ("total time", f"{format_duration(wall, precise=True)} wall "
                       f"({format_duration(train, precise=True)} of it training), "
                       "summed over runs"),
    ]
    if study is not None and study.source and study.source != "<memory>":
        facts.insert(0, ("source", str(results.meta.get("source", study.source))))
    elif results.meta.get("source"):
        facts.insert(0, ("source", str(results.meta["source"])))
    return {"facts": facts, "description": getattr(study, "description", "") or ""}


def _load_study(directory: Path) -> Any:
    from archlab.spec import load_study

    try:
        return load_study(directory / "study.yaml")
    except ArchlabError:
        return None


def _section(m: ModelResult, i: int, study: Any, store: Store,
             curves_out: list[tuple[str, Curves]], classes: int) -> Section:
    from safetensors.torch import load_file

    status, ok, badge, badge_class = _status(m, classes)
    run0 = m.runs[0]
    desc = ""
    if study is not None and m.model in study.models:
        desc = study.models[m.model].description
    notes: list[str] = []
    errors = [f"{r.run_id} ({r.status}): {r.error}" for r in m.runs if r.error]
    images: list[Image] = []
    compact = summary = None
    built: BuiltModel | None = None
    try:
        built = build_model(run0.config.study("report"), m.model, device="meta")
        compact = compact_architecture(built)
        summary = summary_text(built)
    except ArchlabError as exc:
        notes.append(f"The model cannot be built from its stored config: {exc}")
    finished = [r for r in m.runs if r.status == "finished"]
    done = finished or [r for r in m.runs if r.status == "diverged"]
    curves = gather_curves([store.history(r.run_id) for r in done])
    if curves is not None:
        images.append(curves_figure(m.model, curves))
        if finished:
            curves_out.append((m.model, curves))
        if not finished:
            notes.append("No run finished: the curves are those of the diverged run(s), up to "
                         "the epoch where the loss became non-finite.")
    per_class: list[tuple[str, str, int]] = []
    if not finished:
        notes.append("No finished run, so no saved weights: weight distributions, confusion "
                     "matrix and misclassified images are not available.")
    elif built is not None:
        first = finished[0]
        path = store.directory / "runs" / first.run_id / "weights.safetensors"
        if not path.exists():
            notes.append(f"The weights of run {first.run_id} are missing ({path.name} not "
                         "found): weight distributions and predictions are skipped.")
        else:
            weights = load_file(str(path))
            images.append(violin_figure(m.model, _weighted_layers(built, weights)))
            notes.append(f"Weights, confusion matrix and misclassified images: run "
                         f"{first.run_id} (repeat {first.repeat}, seed {first.seed}).")
        pred_path = store.directory / "runs" / first.run_id / PREDICTIONS_FILE
        if not pred_path.exists():
            notes.append(f"The predictions of run {first.run_id} are missing ({pred_path.name} "
                         "not found): no confusion matrix or misclassified images.")
        else:
            pred = load_predictions(pred_path)
            images.append(confusion_figure(m.model, pred.confusion, pred.class_names))
            if len(pred.mistake_true):
                captions = [f"{short_label(pred.class_names[t])}{ARROW}"
                            f"{short_label(pred.class_names[p])} {c * 100:.0f}%"
                            for t, p, c in zip(pred.mistake_true, pred.mistake_pred,
                                               pred.mistake_confidence, strict=True)]
                images.append(gallery_figure(m.model, pred.mistake_images, captions))
            else:
                notes.append("No test image is misclassified.")
            per_class = [(c, f"{a * 100:.2f}%" if math.isfinite(a) else "–", n)
                         for c, a, n in pred.per_class()]
    train_cfgs = _unique(_fmt_train(r.config_json.get("train", {})) for r in m.runs)
    return Section(
        result=m, anchor=f"model-{i}", description=desc, status=status, ok=ok, badge=badge,
        badge_class=badge_class,
        training="; ".join(train_cfgs), seeds=", ".join(str(r.seed) for r in m.runs),
        errors=errors, notes=notes, metrics=_metric_rows(m), compact=compact, summary=summary,
        images=images, per_class=per_class)


def _weighted_layers(built: BuiltModel, weights: dict[str, Any]
                     ) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """(Keras layer name, weights, biases) of each Conv2D/Dense, in model order."""
    order = [k[: -len(".core.weight")] for k in built.module.state_dict()
             if k.endswith(".core.weight")]
    names = [r.name for r in built.rows if r.layer in ("Conv2D", "Dense")]
    if len(names) != len(order):
        names = order
    out = []
    for prefix, label in zip(order, names, strict=True):
        w = weights.get(prefix + ".core.weight")
        b = weights.get(prefix + ".core.bias")
        out.append((label, w.float().numpy().ravel() if w is not None else None,
                    b.float().numpy().ravel() if b is not None else None))
    return out


# ---------------------------------------------------------------------------------------------
# Rendering


def _env(autoescape: bool) -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("archlab", "templates"),
                              autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(directory: str | Path) -> list[Path]:
    """Write ``report.html`` and ``report.md`` (PNGs in ``report_files/``) for a study directory.

    Returns ``[report.html, report.md]``. Reads only the store and the files each run wrote
    (histories, weights, predictions): it never loads data, trains or runs a model.
    """
    from matplotlib import rc_context

    t0 = time.perf_counter()
    directory = Path(directory)
    results = collect(directory)
    study = _load_study(directory)
    found = conclusions(results)
    curves: list[tuple[str, Curves]] = []
    with rc_context(RC), Store(directory, create=False) as store:
        classes = num_classes(results)
        sections = [_section(m, i, study, store, curves, classes)
                    for i, m in enumerate(results.models)]
        overview = _overview(results, curves)
    sizes = results.meta.get("data_sizes")
    data_info = (f"{sizes['train']:,} train / {sizes['val']:,} validation / {sizes['test']:,} "
                 f"test images, {sizes['classes']} classes") if sizes else None
    header, rows = _table(results)
    context = {
        "study": results.study,
        "results": results,
        "head": _header(results, study, data_info),
        "note": TEST_AS_VALIDATION_NOTE if results.validation_is_test else None,
        "columns": header,
        "rows": rows,
        "ci_note": any(m.n > 1 for m in results.models),
        "conclusions": found,
        "overview": overview,
        "sections": sections,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "fmt_metric": fmt_metric,
    }
    files_dir = directory / REPORT_FILES
    files_dir.mkdir(exist_ok=True)
    for old in files_dir.glob("*.png"):
        old.unlink()
    images = [*overview, *(img for s in sections for img in s.images)]
    for img in images:
        _atomic_write(files_dir / f"{img.name}.png", img.png)
    context["seconds"] = time.perf_counter() - t0
    html = _env(True).get_template("report.html.j2").render(**context)
    md = _env(False).get_template("report.md.j2").render(**context)
    html_path, md_path = directory / "report.html", directory / "report.md"
    _atomic_write(html_path, html)
    _atomic_write(md_path, md)
    return [html_path, md_path]


def _overview(results: StudyResults, curves: list[tuple[str, Curves]]) -> list[Image]:
    colors = {m.model: i for i, m in enumerate(results.models)}  # one colour per model
    out: list[Image] = []
    if curves:
        out.append(overlay_figure(curves, colors))
    scored = [m for m in results.models if "test_accuracy" in m.metrics]

    def err(m: ModelResult) -> float:
        s = m.metrics["test_accuracy"]
        return s.std if s.n > 1 else 0.0

    pts = [(m.model, float(m.total_params), m.metrics["test_accuracy"].mean, err(m))
           for m in scored if m.total_params]
    if pts:
        out.append(scatter_figure(pts, colors, "parameters (log scale)",
                                   "test accuracy vs parameters", "overview_params", False))
    pts = [(m.model, m.train_seconds.mean, m.metrics["test_accuracy"].mean, err(m))
           for m in scored if m.train_seconds and m.train_seconds.mean > 0]
    if pts:
        out.append(scatter_figure(pts, colors, "training time (log scale)",
                                   "test accuracy vs training time", "overview_time", True))
    return out
