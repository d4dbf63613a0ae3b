"""archlab in a Jupyter notebook: live progress that renders in the cell, Ctrl-C (the kernel's
interrupt) that stops at the next batch, results as pandas DataFrames and the report's figures
as matplotlib Figures that show inline.

``archlab.run_study`` and ``archlab.collect_results`` are this module's :func:`run_study` and
:func:`collect_results`. Outside a notebook they behave as the library's (silent, no signal
handler) unless asked otherwise. pandas is optional: ``pip install 'archlab[notebook]'``.
"""

from __future__ import annotations

import dataclasses
import html
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from archlab.analysis.results import StudyResults, collect, open_store, resolve_study_directory
from archlab.errors import ArchlabError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from archlab.run import StudyOutcome
    from archlab.run.config import RunPlan
    from archlab.run.study import Stop
    from archlab.spec import Study

__all__ = ["NotebookProgress", "Results", "StudyInterrupted", "as_study", "collect_results",
           "in_notebook", "require_pandas", "run_study"]

#: The tables :meth:`Results.to_pandas` gives.
TABLES = ("models", "runs", "epochs")


def require_pandas() -> ModuleType:
    """The ``pandas`` module, or one line saying how to install it."""
    try:
        import pandas
    except ImportError:
        raise ArchlabError("pandas is not installed: pip install 'archlab[notebook]'") \
            from None
    return pandas


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code, nbclient)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def as_study(study: Study | Mapping[str, Any] | str | Path) -> Study:
    """A :class:`~archlab.spec.Study` from a Study, a dict, YAML text, a file or ``zoo:NAME``."""
    from archlab.spec import Study, load_study

    return study if isinstance(study, Study) else load_study(study)


# ---------------------------------------------------------------------------------------------
# Live progress in a cell


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class NotebookProgress:
    """A study's progress as HTML in the cell, updated in place through an IPython display
    handle (no terminal escape codes): the overall bar (runs done of planned, elapsed, ETA),
    a bar per running run with its epoch and last metrics, and a line per run that ended.

    It renders wherever IPython's rich display does (JupyterLab, Notebook, VS Code, nbconvert)
    and needs no widget extension. Batch events redraw at most every ``interval`` seconds."""

    #: Runs that ended, shown individually (older ones are counted).
    SHOWN = 12

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.note = ""
        self._handle: Any = None
        self._names: dict[str, str] = {}
        self._epochs: dict[str, int] = {}
        self._total = 0
        self._skipped = 0
        self._done: list[str] = []
        self._running: dict[str, dict[str, Any]] = {}
        self._started = time.monotonic()
        self._drawn = 0.0

    # -- the protocol -------------------------------------------------------------------------

    def start(self, plans: list[RunPlan], skipped: int) -> None:
        if self._handle is None:
            self._started = time.monotonic()
            self._skipped = skipped
        self.add(plans)
        self._draw(force=True)

    def add(self, plans: list[RunPlan]) -> None:
        for p in plans:
            if p.run_id not in self._names:
                self._names[p.run_id] = f"{p.model}#{p.repeat}"
                self._epochs[p.run_id] = p.config.train.epochs
                self._total += 1
        self._draw(force=True)

    def event(self, run_id: str, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        state = self._running.setdefault(run_id, {"epoch": 0, "done": 0, "total": 0,
                                                  "info": "starting"})
        if kind == "batch":
            state["done"], state["total"] = event["done"], event["total"]
        elif kind in ("epoch", "resumed"):
            state["epoch"], state["done"] = event["epoch"], 0
            if kind == "epoch":
                state["info"] = " ".join(
                    f"{k} {event[k]:.4f}" for k in ("loss", "accuracy", "val_loss",
                                                     "val_accuracy") if k in event)
            else:
                state["info"] = f"resumed after epoch {event['epoch']}"
        elif kind == "warning":
            state["info"] = str(event.get("message", ""))
        elif kind == "done":
            self._running.pop(run_id, None)
            status = event.get("status", "?")
            summary = (f"test_accuracy {event['test_accuracy']:.4f}"
                       if "test_accuracy" in event else str(event.get("error", "")))
            self._done.append(f"{self._names.get(run_id, run_id)} {status} {summary}".strip())
        self._draw(force=kind != "batch")

    def stop(self) -> None:
        self._draw(force=True)

    # -- drawing ------------------------------------------------------------------------------

    def _fraction(self) -> float:
        part = 0.0
        for rid, s in self._running.items():
            epochs = max(self._epochs.get(rid, 1), 1)
            within = s["done"] / s["total"] if s["total"] else 0.0
            part += min(1.0, (s["epoch"] + within) / epochs)
        return (len(self._done) + part) / self._total if self._total else 1.0

    def html(self) -> str:
        """The view as HTML (what the cell shows)."""
        e = html.escape
        elapsed = time.monotonic() - self._started
        fraction = self._fraction()
        eta = f" · ETA {_clock(elapsed / fraction - elapsed)}" if 0 < fraction < 1 else ""
        skipped = f" ({self._skipped} already in the store)" if self._skipped else ""
        lines = [f"<b>runs</b> <progress value='{len(self._done)}' max='{max(self._total, 1)}' "
                 f"style='width:16em'></progress> {len(self._done)}/{self._total}{skipped}"
                 f" · {_clock(elapsed)} elapsed{eta}"]
        for rid, s in self._running.items():
            bar = (f"<progress value='{s['done']}' max='{s['total']}' style='width:10em'>"
                   "</progress>") if s["total"] else ""
            lines.append(f"&nbsp;&nbsp;{e(self._names.get(rid, rid))} {bar} epoch "
                         f"{min(s['epoch'] + 1, self._epochs.get(rid, 0))}/"
                         f"{self._epochs.get(rid, 0)} · {e(s['info'])}")
        older = len(self._done) - self.SHOWN
        if older > 0:
            lines.append(f"… {older} more run(s) ended")
        lines += [e(line) for line in self._done[-self.SHOWN:]]
        if self.note:
            lines.append(f"<b>{e(self.note)}</b>")
        body = "".join(f"<div>{line}</div>" for line in lines)
        return f"<div class='archlab-progress' style='font-family:monospace'>{body}</div>"

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < self.interval:
            return
        self._drawn = now
        from IPython.display import HTML, display

        if self._handle is None:
            self._handle = display(HTML(self.html()), display_id=True)
        else:
            self._handle.update(HTML(self.html()))


# ---------------------------------------------------------------------------------------------
# Running a study from a cell


class StudyInterrupted(KeyboardInterrupt):
    """A study stopped by Ctrl-C (the kernel's interrupt) after its current batch: checkpoints
    are kept and running the cell again resumes. ``outcome`` is what was done."""

    def __init__(self, outcome: StudyOutcome) -> None:
        super().__init__("stopped after the current batch (checkpoints are kept): run the "
                         "cell again to resume")
        self.outcome = outcome


@contextmanager
def _graceful_interrupt(view: NotebookProgress | None) -> Iterator[threading.Event]:
    """First SIGINT: set the event (runs stop at their next batch). Second: stop at once."""
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if view is not None:  # drawn with the next event; no I/O inside a signal handler
            view.note = ("stopping after the current batch (checkpoints are kept); "
                         "interrupt again to stop at once")

    old = signal.signal(signal.SIGINT, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old)


def _quiet_tqdm() -> None:
    """Import ``tqdm.auto`` without its warning: Optuna imports it, and in a kernel without
    ipywidgets it prints "IProgress not found" into the cell (archlab draws no tqdm bar)."""
    import contextlib
    import warnings

    with warnings.catch_warnings(), contextlib.suppress(ImportError):
        warnings.simplefilter("ignore")
        import tqdm.auto  # noqa: F401


def run_study(study: Study | Mapping[str, Any] | str | Path, out: str | Path | None = None, *,
              progress: Any = "auto", stop: Stop = None, catch_interrupt: bool | None = None,
              tensorboard: str | Path | None = None, **options: Any) -> StudyOutcome:
    """Train every run of ``study`` that its store does not hold yet (see
    :func:`archlab.run.run_study` for ``out`` and ``options``: ``data_dir``, ``repeats``,
    ``jobs``, ``threads``, ``device``, ``pack``, ``precision``, ``executor``, ``dataset``).

    ``study``: a Study, a dict, YAML text (a cell's string), a file or ``zoo:NAME``.
    ``progress``: "auto" draws :class:`NotebookProgress` in a notebook and nothing elsewhere;
    None for silence; or any progress receiver (:class:`archlab.run.progress.Progress`).
    ``catch_interrupt`` (default: in a notebook, when no ``stop`` is given): Ctrl-C stops
    every run at its next batch, keeps the checkpoints and raises :class:`StudyInterrupted`
    once the store is consistent; a second Ctrl-C stops at once. ``tensorboard``: a folder
    for live TensorBoard event files (docs/tracking.md).
    """
    from archlab.run import run_study as run
    from archlab.run.progress import Tee

    spec = as_study(study)
    if in_notebook():
        _quiet_tqdm()
    view = NotebookProgress() if progress == "auto" and in_notebook() else \
        None if progress == "auto" else progress
    receiver: Any = view
    if tensorboard is not None:
        from archlab.run import study_dir
        from archlab.tracking.tensorboard import TensorBoardWriter

        receiver = Tee([view, TensorBoardWriter(tensorboard, spec, study_dir(spec, out))])
    graceful = in_notebook() if catch_interrupt is None else catch_interrupt
    if stop is not None or not graceful or threading.current_thread() is not \
            threading.main_thread():
        return run(spec, out, progress=receiver, stop=stop, **options)
    with _graceful_interrupt(view if isinstance(view, NotebookProgress) else None) as event:
        outcome = run(spec, out, progress=receiver, stop=event, **options)
    if outcome.interrupted:
        raise StudyInterrupted(outcome)
    return outcome


# ---------------------------------------------------------------------------------------------
# Results: DataFrames and figures


def _kept_figures() -> Any:
    """The report's figure functions, keeping their live Figures
    (:func:`archlab.report.figures.kept_figures`; imported on first use)."""
    from archlab.report.figures import kept_figures

    return kept_figures()


def _show_inline() -> None:
    """In a notebook, let a bare matplotlib Figure display as a PNG (as pyplot's do)."""
    if not in_notebook():
        return
    from IPython import get_ipython
    from matplotlib.figure import Figure

    formatter = get_ipython().display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        from IPython.core.pylabtools import print_figure

        formatter.for_type(Figure, lambda fig: print_figure(fig, "png"))


def _one(figs: list[Figure]) -> Figure:
    _show_inline()
    return figs[0]


@dataclasses.dataclass
class Results(StudyResults):
    """:class:`~archlab.analysis.results.StudyResults` with DataFrames and figures."""

    @classmethod
    def of(cls, results: StudyResults) -> Results:
        return cls(**{f.name: getattr(results, f.name) for f in dataclasses.fields(results)})

    # -- tables -------------------------------------------------------------------------------

    def to_pandas(self, table: str = "models") -> Any:
        """A pandas DataFrame: ``models`` (one row per model: the columns of results.csv),
        ``runs`` (one row per run: status, seed, final metrics, time, swept and searched
        fields) or ``epochs`` (one row per run and epoch: the per-epoch history, long)."""
        pd = require_pandas()
        if table == "models":
            from archlab.report.tables import to_records

            return pd.DataFrame.from_records(to_records(self))
        if table not in TABLES:
            raise ArchlabError(f"to_pandas: Expected one of {', '.join(map(repr, TABLES))}, "
                               f"received {table!r}")
        return pd.DataFrame.from_records(self._runs() if table == "runs" else self._epochs())

    def _hparams(self) -> dict[str, dict[str, Any]]:
        from archlab.tracking._runs import run_hparams, stored_study

        spec = stored_study(self.meta)
        return {r.run_id: run_hparams(spec, r.model, r.seed, r.config)
                for m in self.models for r in m.runs}

    def _runs(self) -> list[dict[str, Any]]:
        from archlab.store import FINAL_METRICS

        hparams = self._hparams()
        rows = []
        for m in self.models:
            for r in m.runs:
                fields = {k: v for k, v in hparams[r.run_id].items() if k not in ("model",
                                                                                  "seed")}
                rows.append({
                    "model": r.model, "run_id": r.run_id, "repeat": r.repeat, "seed": r.seed,
                    "status": r.status.value, "epochs_done": r.epochs_done,
                    "best_epoch": r.best_epoch, "diverged_epoch": r.diverged_epoch,
                    **{k: r.metrics.get(k) for k in FINAL_METRICS},
                    "total_params": r.total_params, "macs_per_sample": r.macs_per_sample,
                    "train_seconds": r.train_seconds, "wall_seconds": r.wall_seconds,
                    "samples_per_second": r.samples_per_second, **fields, "error": r.error})
        return rows

    def _epochs(self) -> list[dict[str, Any]]:
        rows = []
        with open_store(self.directory) as store:
            for m in self.models:
                for r in m.runs:
                    for h in store.history(r.run_id):
                        rows.append({"model": r.model, "run_id": r.run_id,
                                     "repeat": r.repeat, "seed": r.seed,
                                     "status": r.status.value, "epoch": int(h["epoch"]),
                                     **{k: v for k, v in h.items() if k != "epoch"}})
        return rows

    def _repr_html_(self) -> str | None:
        try:
            return str(self.to_pandas()._repr_html_())
        except ArchlabError:
            return None

    # -- figures ------------------------------------------------------------------------------

    def _model(self, name: str) -> Any:
        from archlab.suggest import did_you_mean

        for m in self.models:
            if m.model == name:
                return m
        names = [m.model for m in self.models]
        hint = did_you_mean(name, names) or f" (one of {', '.join(names)})"
        raise ArchlabError(f"study '{self.study}': Expected a model, received {name!r}{hint}")

    def _curves(self, m: Any) -> Any:
        from archlab.report.gather import gather_curves
        from archlab.store import RunStatus

        done = m.finished or [r for r in m.runs if r.status is RunStatus.DIVERGED]
        with open_store(self.directory) as store:
            return gather_curves([store.history(r.run_id) for r in done])

    def plot_curves(self, model: str | None = None) -> Figure:
        """One model's loss and accuracy per epoch, train against validation (the report's
        per-model figure); without ``model``, every model's validation curves (the report's
        overview)."""
        from archlab.report.figures import curves_figure, overlay_figure

        if model is not None:
            m = self._model(model)
            curves = self._curves(m)
            if curves is None:
                raise ArchlabError(f"{model}: no run recorded an epoch yet")
            with _kept_figures() as figs:
                curves_figure(m.model, curves)
            return _one(figs)
        colors = {m.model: i for i, m in enumerate(self.models)}
        curves = [(m.model, c) for m in self.models if m.finished
                  and (c := self._curves(m)) is not None]
        if not curves:
            raise ArchlabError(f"study '{self.study}': no finished run to plot")
        with _kept_figures() as figs:
            overlay_figure(curves, colors)
        return _one(figs)

    def plot_ranking(self, metric: str = "test_accuracy") -> Figure:
        """Models ranked by mean ``metric`` with 95 % CIs, marked by the table's t-tests."""
        from archlab.report.ranking import ranking_figure

        with _kept_figures() as figs:
            image = ranking_figure(self, metric)
        if image is None:
            raise ArchlabError(f"study '{self.study}': no finished run has {metric}")
        return _one(figs)

    def plot_sweep(self, field: str, model: str | None = None) -> Figure:
        """Test accuracy and loss against the swept ``field`` (its path, such as
        ``layers.1.Dense.units``, or its short name, ``units``), one line per combination of
        the other swept fields (the report's sweep figure, for that field). ``model`` picks
        the swept model when several sweep the field."""
        from archlab.report.gather import SweepPlot, gather_sweeps
        from archlab.report.sweep_plot import sweep_figure
        from archlab.tracking._runs import stored_study

        spec = stored_study(self.meta)
        swept = {n: s.swept for n, s in spec.models.items() if s.swept} if spec else {}
        plots = [SweepPlot(p.sweep, panels) for p in gather_sweeps(self, swept)
                 if (model is None or p.sweep == model)
                 and (panels := [q for q in p.panels if field in (q.path, q.label)])]
        if not plots:
            fields = sorted({q.path for p in gather_sweeps(self, swept) for q in p.panels})
            raise ArchlabError(f"plot_sweep: Expected a swept field of study '{self.study}' "
                               f"({', '.join(fields) or 'it sweeps nothing'}), received "
                               f"{field!r}")
        if len(plots) > 1:
            raise ArchlabError(f"plot_sweep {field}: several models sweep it (" +
                               ", ".join(p.sweep for p in plots) + "); name one: model=...")
        with _kept_figures() as figs:
            sweep_figure(plots[0])
        return _one(figs)

    def plot_confusion(self, model: str) -> Figure:
        """The confusion matrix of ``model``'s first finished run on the test set (the
        report's)."""
        from archlab.analysis.results import run_file
        from archlab.report.figures import confusion_figure
        from archlab.report.gather import read_predictions
        from archlab.store import PREDICTIONS_FILE

        m = self._model(model)
        if not m.finished:
            raise ArchlabError(f"{model}: no finished run, so no predictions")
        with open_store(self.directory) as store:
            pred = read_predictions(run_file(store, m.finished[0].run_id, PREDICTIONS_FILE))
        with _kept_figures() as figs:
            confusion_figure(m.model, pred.confusion, pred.class_names)
        return _one(figs)


def collect_results(source: StudyOutcome | str | Path, *, models: list[str] | None = None,
                    run_ids: list[str] | None = None, correction: str | None = None) -> Results:
    """The results of a study: from what :func:`run_study` returned, a study directory, or
    the study file / ``zoo:NAME`` whose default directory holds them (read-only).
    ``correction`` (holm, bh or none) corrects every pair of models; by default the one the
    study's last run recorded, else holm (docs/statistics.md)."""
    from archlab.run import StudyOutcome

    if isinstance(source, StudyOutcome):
        directory = source.directory
        run_ids = run_ids if run_ids is not None else [p.run_id for p in source.planned]
    else:
        directory = resolve_study_directory(source)
    return Results.of(collect(directory, models=models, run_ids=run_ids,
                              correction=correction))
