"""Live progress: one overall bar (runs done / total, ETA) plus one line per running run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressView:
    """Receives run events (from this process or worker queues) and draws them with rich."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self._overall: TaskID | None = None
        self._tasks: dict[str, TaskID] = {}
        self._epoch: dict[str, int] = {}
        self._names: dict[str, str] = {}

    def start(self, plans: list[Any], skipped: int) -> None:
        # Sweep points are named like mlp[units=32]: escaped, or rich reads the brackets
        # as markup and every point shows as "mlp".
        self._names = {p.run_id: escape(f"{p.model}#{p.repeat}") for p in plans}
        self._epochs = {p.run_id: p.config.train.epochs for p in plans}
        info = f"({skipped} already in the store)" if skipped else ""
        if self._overall is not None:  # a second phase (a study's search): its own bar only
            self._progress.remove_task(self._overall)
        self._overall = self._progress.add_task("runs", total=len(plans), info=info)
        self._progress.start()

    def add(self, plans: list[Any]) -> None:
        """Runs decided while others run (a search's trials): named, and counted in the bar."""
        self._names.update({p.run_id: escape(f"{p.model}#{p.repeat}") for p in plans})
        self._epochs.update({p.run_id: p.config.train.epochs for p in plans})
        if self._overall is not None:
            total = next(t.total for t in self._progress.tasks if t.id == self._overall) or 0
            self._progress.update(self._overall, total=total + len(plans))

    def stop(self) -> None:
        self._progress.stop()

    def _task(self, run_id: str) -> TaskID:
        if run_id not in self._tasks:
            self._tasks[run_id] = self._progress.add_task(
                f"  {self._names.get(run_id, run_id)}", total=None, info="starting")
        return self._tasks[run_id]

    def event(self, run_id: str, ev: dict[str, Any]) -> None:
        kind = ev["kind"]
        task = self._task(run_id)
        epochs = self._epochs.get(run_id, 0)
        if kind == "batch":
            epoch = self._epoch.get(run_id, 0) + 1
            self._progress.update(task, completed=ev["done"], total=ev["total"],
                                  info=f"epoch {epoch}/{epochs}")
        elif kind in ("epoch", "resumed"):
            self._epoch[run_id] = ev["epoch"]
            if kind == "epoch":
                self._progress.update(task, info=(
                    f"epoch {ev['epoch']}/{epochs} loss {ev['loss']:.4f} acc (running) "
                    f"{ev['accuracy']:.4f} val_loss {ev['val_loss']:.4f} val_acc "
                    f"{ev['val_accuracy']:.4f}"))
        elif kind == "done":
            status = ev.get("status", "?")
            summary = (f"test_acc {ev['test_accuracy']:.4f}" if "test_accuracy" in ev else
                       ev.get("error", ""))
            self._progress.console.print(
                f"[bold]{self._names.get(run_id, run_id)}[/] {status} {summary}")
            self._progress.remove_task(task)
            del self._tasks[run_id]
            if self._overall is not None:
                self._progress.advance(self._overall)
