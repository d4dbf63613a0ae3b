"""TensorBoard event files of a study's runs: written from the store afterwards
(:func:`export_tensorboard`, ``archlab export-logs DIR --tensorboard OUT``) or live while it
trains (:class:`TensorBoardWriter`, ``archlab run --tensorboard OUT``).

Layout: one TensorBoard run per archlab run, in ``OUT/<model>/<seed>``, with per-epoch
scalars (step = epoch, from 1) ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
``lr`` and ``epoch_time`` (seconds), the final metrics ``final/test_accuracy``, ... at the
run's last epoch, and the HParams plugin's session record: ``model``, ``seed`` and each swept
or searched field of the run's model. ``OUT`` itself holds the HParams experiment (every
hyperparameter, with the values seen, and the final metrics as its columns).

Event files are written with torch's ``SummaryWriter`` and the HParams protos of the
``tensorboard`` package (no TensorFlow needed); ``pip install 'archlab[tracking]'``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from archlab.errors import ArchlabError
from archlab.store import FINAL_METRICS, RunStatus
from archlab.tracking._runs import (
    FINAL_PREFIX,
    epoch_scalars,
    final_scalars,
    read_runs,
    run_hparams,
    run_name,
)

if TYPE_CHECKING:
    from archlab.plan import RunPlan
    from archlab.spec import Study

__all__ = ["TensorBoardWriter", "export_tensorboard", "require_tensorboard"]

EVENT_GLOB = "events.out.tfevents.*"
#: The HParams columns: the final metrics, by their scalar tags.
METRIC_TAGS = tuple(FINAL_PREFIX + k for k in FINAL_METRICS)


def require_tensorboard() -> ModuleType:
    """The ``tensorboard`` package, or one line saying how to install it."""
    try:
        import tensorboard
        from tensorboard.plugins.hparams import summary_v2  # noqa: F401 - checked here
    except ImportError:
        raise ArchlabError("tensorboard is not installed: pip install 'archlab[tracking]'") \
            from None
    return tensorboard


class _RunLog:
    """One archlab run's event file."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=5)

    def epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=epoch)

    def final(self, step: int, metrics: dict[str, Any],
              hparams: dict[str, bool | int | float | str], name: str) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hp

        for tag, value in final_scalars(metrics).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.file_writer.add_summary(hp.hparams_pb(hparams, trial_id=name))

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _experiment(out: Path, values: dict[str, list[Any]]) -> None:
    """The HParams experiment in ``out``: each hyperparameter (a discrete domain of the values
    seen, where they share one type) and the final metrics."""
    from tensorboard.plugins.hparams import summary_v2 as hp
    from torch.utils.tensorboard import SummaryWriter

    hparams = []
    for name, seen in values.items():
        kinds = {bool if isinstance(v, bool) else float if isinstance(v, int | float) else str
                 for v in seen}
        domain = None
        if len(kinds) == 1 and seen:
            kind = kinds.pop()
            domain = hp.Discrete(sorted({kind(v) for v in seen}, key=lambda v: (str(type(v)), v)))
        hparams.append(hp.HParam(name, domain))
    metrics = [hp.Metric(tag) for tag in METRIC_TAGS]
    writer = SummaryWriter(log_dir=str(out))
    try:
        writer.file_writer.add_summary(hp.hparams_config_pb(hparams, metrics,
                                                            time_created_secs=time.time()))
    finally:
        writer.close()


def _clear(folder: Path) -> None:
    """Drop the event files an earlier export left in ``folder`` (not its subfolders)."""
    if folder.is_dir():
        for f in folder.glob(EVENT_GLOB):
            f.unlink()


def export_tensorboard(directory: str | Path, out: str | Path) -> list[str]:
    """Write the event files of every run of the study in ``directory`` (the runs of its
    latest plan that recorded an epoch) into ``out``; return their names (``model/seed``).

    Exporting again rewrites them (the event files of an earlier export of the same runs are
    replaced, so no value appears twice). Raises :class:`ArchlabError` (one line) when the
    study directory has no store or ``tensorboard`` is not installed."""
    require_tensorboard()
    study = read_runs(directory)
    out = Path(out)
    _check_out(out)
    _clear(out)
    names: list[str] = []
    values: dict[str, list[Any]] = {}
    for run in study.runs:
        if not run.history:
            continue
        folder = out / run.name
        _clear(folder)
        log = _RunLog(folder)
        try:
            config = run.record.config
            for row in run.history:
                log.epoch(int(row["epoch"]), epoch_scalars(row, config))
            if run.record.status.is_finished():
                log.final(int(run.history[-1]["epoch"]), run.record.metrics, run.hparams,
                          run.name)
                for k, v in run.hparams.items():
                    values.setdefault(k, []).append(v)
        finally:
            log.close()
        names.append(run.name)
    _experiment(out, values)
    return names


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ArchlabError(f"--tensorboard {out}: Expected a directory, received a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchlabError(f"--tensorboard {out}: cannot create the directory "
                           f"({exc.strerror})") from None


class TensorBoardWriter:
    """A progress receiver (:class:`archlab.run.progress.Progress`) that writes each run's
    event file while the study trains: scalars at every epoch's end, the final metrics and
    the HParams record when the run is done. Pass it to ``run_study(progress=...)`` (with
    another view through :class:`archlab.run.progress.Tee`).

    ``directory`` is the study directory: a run that resumes from its checkpoint gets the
    epochs recorded before (by a run without this writer) from its store.
    """

    def __init__(self, out: str | Path, study: Study, directory: str | Path | None = None) -> None:
        require_tensorboard()
        self.out = Path(out)
        _check_out(self.out)
        self.study = study
        self.directory = None if directory is None else Path(directory)
        self._plans: dict[str, RunPlan] = {}
        self._logs: dict[str, _RunLog] = {}
        self._last: dict[str, int] = {}
        self._experiment_written = False

    def start(self, plans: list[RunPlan], skipped: int) -> None:
        self.add(plans)
        if not self._experiment_written:
            self._experiment_written = True
            values: dict[str, list[Any]] = {}
            for name in self.study.models:
                from archlab.tracking._runs import hparam_paths

                for path in ["model", "seed", *hparam_paths(self.study, name)]:
                    values.setdefault(path, [])
            if self.study.search is not None:
                for path in self.study.search.space:
                    values.setdefault(path, [])
            _experiment(self.out, values)

    def add(self, plans: list[RunPlan]) -> None:
        self._plans.update({p.run_id: p for p in plans})

    def _log(self, run_id: str) -> _RunLog | None:
        plan = self._plans.get(run_id)
        if plan is None:
            return None
        if run_id not in self._logs:
            self._logs[run_id] = _RunLog(self.out / run_name(plan.model, plan.seed))
        return self._logs[run_id]

    def event(self, run_id: str, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind not in ("epoch", "resumed", "done"):
            return
        plan = self._plans.get(run_id)
        if plan is None:
            return
        if kind == "resumed":
            self._backfill(plan, int(event["epoch"]))
        elif kind == "epoch":
            log = self._log(run_id)
            assert log is not None
            epoch = int(event["epoch"])
            log.epoch(epoch, epoch_scalars(event, plan.config))
            log.writer.flush()
            self._last[run_id] = epoch
        elif kind == "done":
            status = event.get("status")
            log = self._logs.get(run_id) if status not in (
                RunStatus.FINISHED.value, RunStatus.DIVERGED.value, RunStatus.PRUNED.value) \
                else self._log(run_id)
            if log is None:
                return
            if status in (RunStatus.FINISHED.value, RunStatus.DIVERGED.value,
                          RunStatus.PRUNED.value):
                name = run_name(plan.model, plan.seed)
                log.final(self._last.get(run_id, 0), event,
                          run_hparams(self.study, plan.model, plan.seed, plan.config), name)
            log.close()
            del self._logs[run_id]

    def _backfill(self, plan: RunPlan, epoch: int) -> None:
        """The epochs a resumed run recorded before, when no event file has them yet."""
        folder = self.out / run_name(plan.model, plan.seed)
        if self.directory is None or epoch < 1 or any(folder.glob(EVENT_GLOB)):
            return
        from archlab.analysis.results import open_store

        with open_store(self.directory) as store:
            history = store.history(plan.run_id)
        log = self._log(plan.run_id)
        assert log is not None
        for row in history:
            if int(row["epoch"]) <= epoch:
                log.epoch(int(row["epoch"]), epoch_scalars(row, plan.config))
                self._last[plan.run_id] = int(row["epoch"])

    def stop(self) -> None:
        for log in self._logs.values():
            log.close()
        self._logs.clear()
