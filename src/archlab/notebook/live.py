"""The notebook's live side: whether code runs in a Jupyter kernel, a study from a cell (a dict
or YAML text), the progress that renders in the cell, and :func:`run_study` with the kernel's
interrupt stopping the runs at their next batch."""

from __future__ import annotations

import html
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archlab.plan import RunPlan
    from archlab.run import StudyOutcome
    from archlab.run.study import Stop
    from archlab.spec import Study

__all__ = ["NotebookProgress", "StudyInterrupted", "as_study", "in_notebook", "run_study"]


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


