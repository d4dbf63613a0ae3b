"""The study report: ``report.html`` (one file, images embedded, opens offline) and ``report.md``
with its PNGs in ``report_files/``.

Nothing here recomputes a number the store already holds: the table, the per-model statistics
and the conclusions come from :func:`archlab.analysis.results.collect`; the curves from the
stored per-epoch histories; the weight violins from each model's first finished run's weights;
the confusion matrices, per-class accuracies and confident mistakes from the predictions that
run stored when it finished. The report never loads data, trains or runs a model, and it opens
the store read-only, so a read-only study can be reported elsewhere (``out``).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from archlab.analysis.compare import preprocessing_text
from archlab.analysis.conclusions import conclusions, num_classes
from archlab.analysis.machine_load import machine_load
from archlab.analysis.results import (
    TEST_AS_VALIDATION_NOTE,
    StudyResults,
    collect,
    open_store,
)
from archlab.errors import ArchlabError
from archlab.report.figures import RC, REPORT_FILES, Image, gallery_figure
from archlab.report.files import atomic_write, remove_stale_temporaries
from archlab.report.gather import Curves, gather_samples, gather_scatter, gather_sweeps
from archlab.report.overview_plot import overlay_figure, scatter_figure
from archlab.report.search import search_section
from archlab.report.sections import Section, format_training, model_section
from archlab.report.sweep_plot import sweep_figure
from archlab.report.tables import EVAL_NOTE, Cell, fmt_metric, format_duration, table_cells

__all__ = ["REPORT_FILES", "write_report"]

log = logging.getLogger("archlab.report")


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _protocol(results: StudyResults, data: dict[str, Any]) -> str:
    validation = data.get("validation")
    if validation == "test":
        return "validation on the test set (the notebooks' protocol)"
    if isinstance(validation, dict):
        seeds = _unique(r.config.split_seed for m in results.models for r in m.runs)
        return (f"validation on a stratified {validation.get('split', 0) * 100:g}% of the "
                f"training set (split seed {', '.join(map(str, seeds))}); test set held out")
    return "-"


def _machine(e: dict[str, Any]) -> str:
    cpu, arch = e.get("processor") or e.get("machine"), e.get("machine")
    return (f"{cpu}{f' ({arch})' if arch and arch != cpu else ''}, {e.get('cpu_count')} "
            f"CPUs, {e.get('threads')} torch threads"
            + (f", device {e['device']}" if e.get("device") else ""))


def _load_fact(results: StudyResults) -> str | None:
    load = machine_load(r for m in results.models for r in m.runs)
    if not load.recorded:
        return None
    text = (f"highest load average at a run's start {load.peak_load:.1f} on {load.cpus} CPUs"
            + (f" ({load.unknown} runs unrecorded)" if load.unknown else ""))
    if load.shared:
        text += (f"; {load.busy} of {load.runs} runs started on a shared machine: timings "
                 "are unreliable")
    return text


def _header(results: StudyResults, study: Any, data_info: str | None) -> dict[str, Any]:
    runs = [r for m in results.models for r in m.runs]
    data_cfgs = _unique(r.config.data.model_dump(mode="json") for r in runs)
    data = data_cfgs[0] if data_cfgs else {}
    pre_text = preprocessing_text(data.get("preprocessing", "scale"))
    labels = _unique(r.config.data_label for r in runs)
    envs = [r.environment for r in runs if r.environment]

    def vals(key: str) -> str:
        return ", ".join(str(v) for v in _unique(e.get(key) for e in envs)) or "-"

    wall = sum(r.wall_seconds or 0.0 for r in runs)
    train = sum(r.train_seconds or 0.0 for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    trainings = _unique(format_training(r.config.train) for r in runs)
    repeats = _unique(sum(m.statuses.values()) for m in results.models)
    facts = [
        ("dataset", ", ".join(labels or ["-"]) + (f" ({data_info})" if data_info else "")),
        ("preprocessing", pre_text),
        ("protocol", _protocol(results, data)),
        ("training", trainings[0] if len(trainings) == 1 else
         f"{len(trainings)} different configurations (see each model)"),
        ("runs", f"{len(runs)} ({', '.join(f'{v} {k}' for k, v in statuses.items())}) over "
                 f"{len(results.models)} models; runs per model: "
                 f"{', '.join(map(str, sorted(repeats)))}"),
        ("versions", f"archlab {vals('archlab')} · torch {vals('torch')} · "
                     f"python {vals('python')}"),
        ("hardware", "; ".join(_unique(_machine(e) for e in envs)) or "-"),
        ("total time", f"{format_duration(wall, precise=True)} wall "
                       f"({format_duration(train, precise=True)} of it training), "
                       "summed over runs"),
    ]
    load = _load_fact(results)
    if load:
        facts.insert(-1, ("machine load", load))
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


def _overview(results: StudyResults, curves: list[tuple[str, Curves]]) -> list[Image]:
    colors = {m.model: i for i, m in enumerate(results.models)}  # one colour per model
    out: list[Image] = []
    if curves:
        out.append(overlay_figure(curves, colors))
    points = gather_scatter(results, "params")
    if points:
        out.append(scatter_figure(points, colors, "parameters (log scale)",
                                  "test accuracy vs parameters", "overview_params", False))
    points = gather_scatter(results, "time")
    if points:
        out.append(scatter_figure(points, colors, "training time, median over runs (log scale)",
                                  "test accuracy vs training time", "overview_time", True))
    return out


def _sweeps(results: StudyResults, study: Any) -> list[Image]:
    """One figure per swept model: its metrics against each swept field (none without a
    sweep, or without the study file that names the points' values)."""
    if study is None:
        return []
    swept = {name: spec.swept for name, spec in study.models.items() if spec.swept}
    return [sweep_figure(plot) for plot in gather_sweeps(results, swept)]


def _ranks(results: StudyResults) -> dict[str, int]:
    """Each model's rank by mean test accuracy, the ranked metric (1 is the best; equal means
    share a rank), in the ranking's order; models without a test accuracy have none."""
    scored = {m.model: m.metrics["test_accuracy"].mean for m in results.models
              if "test_accuracy" in m.metrics}
    if results.ranking:
        order = [results.ranking[0].best, *(c.other for c in results.ranking)]
    else:
        order = sorted(scored, key=lambda name: -scored[name])
    out: dict[str, int] = {}
    for i, name in enumerate(order):
        prev = order[i - 1] if i else None
        tied = prev is not None and abs(scored[name] - scored[prev]) <= 1e-12
        out[name] = out[prev] if tied and prev is not None else i + 1
    return out


def _ranked(results: StudyResults, sections: list[Section], rows: list[list[Cell]],
            ) -> tuple[list[Section], list[list[Cell]]]:
    """Sections and table rows in rank order (unranked models last, in study order), each
    row led by its rank cell and each section carrying its rank."""
    rank = _ranks(results)
    order = sorted(range(len(sections)),
                   key=lambda i: (rank.get(sections[i].result.model, len(sections) + 1), i))
    out_sections, out_rows = [], []
    for i in order:
        r = rank.get(sections[i].result.model)
        sections[i].rank = str(r) if r is not None else "–"
        out_sections.append(sections[i])
        out_rows.append([Cell(sections[i].rank, "" if r is None else repr(float(r)),
                              numeric=True), *rows[i]])
    return out_sections, out_rows


def _samples(sections: list[Section]) -> Image | None:
    """The sample test images the first model's predictions file holds (every run of a study
    stores the same ones), drawn once for the report; None when no file holds any."""
    for s in sections:
        gallery = gather_samples(s.predictions) if s.predictions is not None else None
        if gallery is None:
            continue
        k = len(s.predictions.class_names) if s.predictions is not None else 0
        shown = len(set(s.predictions.sample_labels.tolist())) if s.predictions else 0
        per = "" if shown == k else f" ({shown} of the {k} classes)"
        return gallery_figure("samples", gallery, title=f"sample test images: the first ones "
                              f"of each class{per}, as stored (model {s.result.model}'s run "
                              "file)")
    return None


# ---------------------------------------------------------------------------------------------
# Rendering and writing


def _env(autoescape: bool) -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("archlab", "templates"),
                              autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _log_warning(message: str) -> None:
    log.warning("warning: %s", message)


def _unwritable(target: Path, exc: OSError) -> ArchlabError:
    reason = exc.strerror or exc.__class__.__name__
    return ArchlabError(f"{target}: cannot write the report there ({reason}); write it to "
                        "another directory (`archlab report STUDY -o DIR`)")


def _check_writable(target: Path) -> None:
    """Fail before any figure is drawn when ``target`` cannot take the report."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        atomic_write(target / ".report-probe", b"")
        (target / ".report-probe").unlink()
    except OSError as exc:
        raise _unwritable(target, exc) from None


def _write(html_path: Path, md_path: Path, folder: str, images: list[Image], html: str,
           md: str) -> list[Path]:
    """Write the pages ``html_path`` and ``md_path`` and their PNGs (in ``folder`` beside them):
    PNGs first, then the pages, then stale PNGs go: an interrupted write leaves the previous
    report usable and no temporary file behind. Returns ``[html_path, md_path]``."""
    target = html_path.parent
    files_dir = target / folder
    try:
        files_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(files_dir)
        remove_stale_temporaries(target)
        for img in images:
            atomic_write(files_dir / f"{img.name}.png", img.png)
        atomic_write(html_path, html)
        atomic_write(md_path, md)
        keep = {f"{img.name}.png" for img in images}
        for old in files_dir.glob("*.png"):
            if old.name not in keep:
                old.unlink()
    except OSError as exc:
        raise _unwritable(target, exc) from None
    return [html_path, md_path]


def write_report(directory: str | Path, *, out: str | Path | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 correction: str | None = None) -> list[Path]:
    """Write ``report.html`` and ``report.md`` (PNGs in ``report_files/``) for a study directory,
    into ``out`` (default: the study directory). Returns ``[report.html, report.md]``.
    ``correction`` (holm, bh or none) corrects every pair of models; by default the one the
    study's last run recorded, else holm.

    Reads only the store (read-only) and the files each run wrote (histories, weights,
    predictions): it never loads data, trains or runs a model. A run file that is missing or
    refused (not safetensors, not matching the model) leaves a note in the report and is
    passed to ``on_warning`` (default: the ``archlab.report`` logger); the report is still
    written. Raises :class:`ArchlabError` when the target cannot be written.
    """
    from matplotlib import rc_context

    t0 = time.perf_counter()
    directory = Path(directory)
    target = Path(out) if out is not None else directory
    warn = on_warning or _log_warning
    results = collect(directory, correction=correction)
    _check_writable(target)
    study = _load_study(directory)
    found = conclusions(results)
    curves: list[tuple[str, Curves]] = []
    with rc_context(RC), open_store(directory) as store:
        classes = num_classes(results)
        sections = [model_section(m, i, study, store, curves, classes, warn)
                    for i, m in enumerate(results.models)]
        overview = _overview(results, curves)
        sweeps = _sweeps(results, study)
        search = search_section(directory, results, warn)
        cols, rows = table_cells(results)
        sections, rows = _ranked(results, sections, rows)
        samples = _samples(sections)
    sizes = results.meta.get("data_sizes")
    data_info = (f"{sizes['train']:,} train / {sizes['val']:,} validation / {sizes['test']:,} "
                 f"test images, {sizes['classes']} classes") if sizes else None
    context = {
        "study": results.study,
        "results": results,
        "head": _header(results, study, data_info),
        "note": TEST_AS_VALIDATION_NOTE if results.validation_is_test else None,
        "eval_note": EVAL_NOTE,
        "columns": ["rank", *(c.header for c in cols)],
        "rows": rows,
        "ci_note": any(m.n > 1 for m in results.models),
        "conclusions": found,
        "overview": overview,
        "sweeps": sweeps,
        "search": search,
        "samples": samples,
        "sections": sections,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "fmt_metric": fmt_metric,
    }
    images = [*overview, *sweeps, *(search.images if search else []),
              *([samples] if samples else []), *(img for s in sections for img in s.images)]
    context["seconds"] = time.perf_counter() - t0
    html = _env(True).get_template("report.html.j2").render(**context)
    md = _env(False).get_template("report.md.j2").render(**context)
    return _write(target / "report.html", target / "report.md", REPORT_FILES, images, html,
                  md)
