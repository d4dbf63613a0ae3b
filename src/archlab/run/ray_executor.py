"""Runs as Ray tasks (``archlab run --executor ray [--address HOST:PORT]``).

The driver (the ``archlab run`` process) holds the study lock and the store, and is the only
process that writes either. Each run is one Ray task, a streaming generator: it trains with
:func:`~archlab.run.execute.execute_run` into a scratch study directory on its worker (seeded
with the run's last checkpoint, sent from the driver, so a retried or resumed run starts from
its last epoch), and yields back, in order:

- ``("started", environment)`` when it begins (the driver marks the run running);
- ``("event", event)``: progress (batches at most every :data:`BATCH_EVENT_SECONDS`,
  ``resumed``, ``warning``);
- ``("epoch", row, checkpoint bytes, event)`` at every epoch end (the driver writes the
  checkpoint and the epoch row into the real store);
- ``("finished", final, files)`` with the run's final row and its files' bytes (weights,
  predictions), or ``("failed", reason)`` / ``("fatal", error class, message)``.

A task whose worker or node dies is submitted again by the driver (up to ``retries`` times,
from the last checkpoint that reached the driver); after that the run is recorded failed.
The dataset is prepared once in the driver and put once into Ray's object store; each node
fetches it once. ``import ray`` happens only here, and only when a Ray executor runs, so
archlab works without Ray installed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from archlab import errors as errors_module
from archlab.data import Tensors
from archlab.errors import ArchlabError, DiskFullError
from archlab.plan import RunPlan
from archlab.run.lock import disk_full_error
from archlab.run.ray_worker import BATCH_EVENT_SECONDS, one_line, train_task
from archlab.spec import Study
from archlab.store import CHECKPOINT_FILE, RunStatus, Store

__all__ = ["BATCH_EVENT_SECONDS", "RayExecutor", "require_ray", "run_on_ray"]

Report = Callable[[str, dict[str, Any]], None]

#: How long the driver waits for cancelled tasks to stop before it leaves.
CANCEL_WAIT_SECONDS = 10.0


def require_ray() -> ModuleType:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ArchlabError("ray is not installed: pip install 'archlab[ray]'") from None
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Where and how runs go to Ray: ``address`` of an existing cluster (``HOST:PORT`` of its
    head; None starts a local Ray instance), the resources each run declares (its torch
    threads are its CPUs; with a GPU share it trains on ``cuda``), and how many times a run
    whose worker died is submitted again before it is recorded failed."""

    address: str | None = None
    cpus_per_run: int = 1
    gpus_per_run: float = 0.0
    retries: int = 2

    def __post_init__(self) -> None:
        cpus = self.cpus_per_run
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            raise ArchlabError(f"--ray-cpus-per-run: Expected a whole number >= 1, received "
                               f"{cpus!r}")
        gpus = self.gpus_per_run
        if isinstance(gpus, bool) or not isinstance(gpus, int | float) or not 0 <= gpus <= 64:
            raise ArchlabError(f"--ray-gpus-per-run: Expected a number of GPUs >= 0 (a fraction "
                               f"such as 0.25 shares one), received {gpus!r}")
        if 1 < gpus != int(gpus):
            raise ArchlabError(f"--ray-gpus-per-run: Expected a fraction below 1 or a whole "
                               f"number, received {gpus!r}")
        retries = self.retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ArchlabError(f"--ray-retries: Expected a whole number >= 0, received "
                               f"{retries!r}")
        if self.address is not None and (not isinstance(self.address, str)
                                         or not self.address.strip()):
            raise ArchlabError(f"--address: Expected HOST:PORT of a Ray head node, received "
                               f"{self.address!r}")

    def check_reachable(self, timeout: float = 5.0) -> None:
        """Fail fast, in one line, when ``address`` is malformed or nothing listens there
        (Ray itself retries an unreachable address for minutes)."""
        if self.address is None:
            return
        host, sep, port = self.address.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or "://" in host:
            raise ArchlabError(f"--address: Expected HOST:PORT of a Ray head node (as `ray "
                               f"start --head` prints it), received {self.address!r}")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except (OSError, OverflowError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise ArchlabError(f"--address: Expected a Ray head node listening at "
                               f"{self.address}, received {exc.__class__.__name__}: "
                               f"{why}") from None

    @property
    def threads(self) -> int:
        """Torch threads of each run: its CPUs."""
        return self.cpus_per_run

    @property
    def device(self) -> str:
        """Where each run trains: the GPU share Ray gives it, else the CPU."""
        return "cuda" if self.gpus_per_run > 0 else "cpu"


# -- the driver side --------------------------------------------------------------------------


@dataclass
class _Task:
    plan: RunPlan
    generator: Any  # ray.ObjectRefGenerator
    attempt: int = 1
    started: bool = False
    node: str | None = None  # the Ray node id it runs on, once started
    epochs: list[int] = field(default_factory=list)


def run_on_ray(executor: RayExecutor, study: Study, todo: list[RunPlan], directory: Path,
               data: Tensors, report: Report, stop_requested: Callable[[], bool],
               statuses: dict[str, str], errors: dict[str, str]) -> None:
    """Run ``todo`` as Ray tasks, filling ``statuses`` as runs end (and ``errors`` with why
    each failed one failed). The store in ``directory`` is written here only.

    Raises :class:`ArchlabError` when Ray is missing or the cluster cannot be reached or
    cannot fit one run, and the first user error a task met (after cancelling the others;
    their runs are marked interrupted and resume on the next `archlab run`).
    """
    ray = require_ray()
    connected_here = not ray.is_initialized()
    if connected_here:
        executor.check_reachable()
        _connect(ray, executor)
    try:
        _check_resources(ray, executor)
        _Driver(ray, executor, study, directory, data, report, stop_requested, statuses,
                errors).run(todo)
    finally:
        if connected_here:
            ray.shutdown()  # a local instance stops; a cluster keeps running


def _connect(ray: ModuleType, executor: RayExecutor) -> None:
    import logging

    try:
        ray.init(address=executor.address or "local", include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"at {executor.address}" if executor.address else "locally"
        raise ArchlabError(f"--address: Expected a running Ray cluster {where}, received "
                           f"{exc.__class__.__name__}: {one_line(exc)}") from None


def _check_resources(ray: ModuleType, executor: RayExecutor) -> None:
    """A run that no node can hold would wait forever: say so instead."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= executor.cpus_per_run and r.get("GPU", 0) >= executor.gpus_per_run
           for r in nodes):
        return
    most_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
    most_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
    raise ArchlabError(f"--ray-cpus-per-run/--ray-gpus-per-run: Expected a Ray node with "
                       f"{executor.cpus_per_run} CPU(s) and {executor.gpus_per_run:g} GPU(s) "
                       f"free for one run, received nodes with at most {most_cpu:g} CPU(s) and "
                       f"{most_gpu:g} GPU(s)")


class _Driver:
    def __init__(self, ray: ModuleType, executor: RayExecutor, study: Study, directory: Path,
                 data: Tensors, report: Report, stop_requested: Callable[[], bool],
                 statuses: dict[str, str], errors: dict[str, str]) -> None:
        self.ray, self.executor, self.study, self.directory = ray, executor, study, directory
        self.report, self.stop_requested = report, stop_requested
        self.statuses, self.errors = statuses, errors
        self.cfg = study.to_config()
        self.tasks: dict[Any, _Task] = {}  # by generator
        self.fatal: ArchlabError | None = None
        self.unrecorded: dict[str, list[str]] = {}  # warnings of runs not in the store yet
        self.remote = ray.remote(train_task).options(
            num_cpus=executor.cpus_per_run, num_gpus=executor.gpus_per_run, max_retries=0,
            num_returns="streaming")
        with Store(directory) as store:
            store.set_meta(data_sizes={"train": len(data.x_train), "val": len(data.x_val),
                                       "test": len(data.x_test),
                                       "classes": len(data.class_names)})
        self.data_ref = ray.put(data.to("cpu"))  # once: every task reads this one copy

    def run(self, todo: list[RunPlan]) -> None:
        try:
            for plan in todo:
                self._submit(plan, attempt=1)
            while self.tasks:
                if self.fatal is not None or self.stop_requested():
                    self._cancel("interrupted by the user" if self.fatal is None
                                 else f"stopped: {self.fatal}")
                    break
                ready, _ = self.ray.wait(list(self.tasks), num_returns=1, timeout=0.5)
                for generator in ready:
                    self._step(generator)
        finally:
            if self.tasks:  # left early (a second Ctrl-C, an error): stop at once
                self._cancel("stopped before it finished", force=True)
        if self.fatal is not None:
            raise self.fatal

    def _submit(self, plan: RunPlan, attempt: int) -> None:
        checkpoint = None
        with Store(self.directory) as store:
            if (store.run_dir(plan.run_id) / CHECKPOINT_FILE).exists():
                try:  # only verified bytes travel; a damaged file means starting over
                    checkpoint = store.read_verified(plan.run_id, CHECKPOINT_FILE)
                except ArchlabError as exc:
                    self._warn(store, plan.run_id, f"checkpoint not sent, the run restarts "
                                                   f"from epoch 0: {exc}")
        generator = self.remote.remote(self.cfg, self.study.source, plan, self.data_ref,
                                       checkpoint, self.executor.threads, self.executor.device)
        self.tasks[generator] = _Task(plan, generator, attempt)

    def _step(self, generator: Any) -> None:
        task = self.tasks[generator]
        try:
            ref = next(generator)
        except StopIteration:  # ended without a final message: it was cancelled
            del self.tasks[generator]
            return
        ray = self.ray
        try:
            message = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            del self.tasks[generator]
            return
        except ray.exceptions.RayTaskError as exc:  # the task's own code raised
            del self.tasks[generator]
            self._failed(task, f"ray task raised: {one_line(getattr(exc, 'cause', None) or exc)}")
            return
        except ray.exceptions.RayError as exc:  # its worker or node died, or lost the result
            del self.tasks[generator]
            self._lost(task, exc)
            return
        self._handle(task, message)

    def _handle(self, task: _Task, message: tuple[Any, ...]) -> None:
        rid = task.plan.run_id
        kind = message[0]
        with Store(self.directory) as store:
            if kind == "started":
                self._check_version(message[1])
                store.start_run(rid, task.plan.model, task.plan.repeat, task.plan.seed,
                                task.plan.config.to_json(), {**message[1], "executor": "ray"})
                self._flush_warnings(store, rid)
                task.started, task.node = True, message[1].get("ray_node")
            elif kind == "event":
                event = message[1]
                if event["kind"] == "warning":
                    store.add_warning(rid, event["message"])
                elif event["kind"] == "resumed":
                    store.truncate_epochs(rid, event["epoch"])
                self.report(rid, event)
            elif kind == "epoch":
                _, row, checkpoint, event = message
                store.import_file(rid, CHECKPOINT_FILE, checkpoint)
                store.record_epoch(rid, row)
                self.report(rid, event)
            elif kind == "finished":
                del self.tasks[task.generator]
                _, final, files, environment = message
                store.start_run(rid, task.plan.model, task.plan.repeat, task.plan.seed,
                                task.plan.config.to_json(),
                                {**environment, "executor": "ray", "ray_node": task.node})
                for name, data in files.items():
                    store.import_file(rid, name, data)
                store.finish_run(rid, **final, files=list(files))
                (store.run_dir(rid) / CHECKPOINT_FILE).unlink(missing_ok=True)
                self.statuses[rid] = final["status"]
                self.report(rid, {"kind": "done", "status": final["status"],
                                  **final["metrics"]})
            elif kind == "failed":
                del self.tasks[task.generator]
                self._failed(task, message[1])
            elif kind == "fatal":
                del self.tasks[task.generator]
                reason = f"stopped: {message[2]}"
                self._record(task.plan, reason, RunStatus.INTERRUPTED)
                self.report(rid, {"kind": "done", "status": "interrupted", "error": reason})
                self.statuses[rid] = RunStatus.INTERRUPTED.value
                if self.fatal is None:
                    self.fatal = _rebuild(message[1], message[2], self.directory)
            elif kind == "interrupted":
                del self.tasks[task.generator]

    def _check_version(self, environment: dict[str, Any]) -> None:
        from archlab.version import __version__

        theirs = environment.get("archlab")
        if theirs != __version__ and self.fatal is None:
            self.fatal = ArchlabError(f"Expected archlab {__version__} on every Ray node (as on "
                                      f"the driver), received archlab {theirs} on a worker")

    def _lost(self, task: _Task, exc: BaseException) -> None:
        """The task's worker or node died: submit it again from the driver's last checkpoint,
        or record the run failed once the retries are spent."""
        rid = task.plan.run_id
        why = one_line(exc).split(". ")[0]
        if task.attempt <= self.executor.retries and not self.stop_requested():
            with Store(self.directory) as store:
                history = store.history(rid)
                self._warn(store, rid, f"ray worker lost ({exc.__class__.__name__}: {why}); "
                                       f"retry {task.attempt} of {self.executor.retries} from "
                                       f"epoch {len(history)}")
            self._submit(task.plan, attempt=task.attempt + 1)
            return
        if self.stop_requested():  # lost while stopping: resumed by the next run like the rest
            if task.started:
                self._record(task.plan, "interrupted by the user", RunStatus.INTERRUPTED)
                self.statuses[rid] = RunStatus.INTERRUPTED.value
            return
        reason = (f"ray worker lost {task.attempt} time(s), retries spent (last: "
                  f"{exc.__class__.__name__}: {why})")
        self._failed(task, reason)

    def _failed(self, task: _Task, reason: str) -> None:
        rid = task.plan.run_id
        self._record(task.plan, reason, RunStatus.FAILED)
        with Store(self.directory) as store:
            self._flush_warnings(store, rid)
        self.report(rid, {"kind": "done", "status": "failed", "error": reason})
        self.statuses[rid] = RunStatus.FAILED.value
        self.errors[rid] = reason

    def _warn(self, store: Store, run_id: str, message: str) -> None:
        """A warning on the run; kept until the run is in the store if it is not yet."""
        if store.status(run_id) is not None:
            store.add_warning(run_id, message)
        else:
            self.unrecorded.setdefault(run_id, []).append(message)
        self.report(run_id, {"kind": "warning", "message": message})

    def _flush_warnings(self, store: Store, run_id: str) -> None:
        for message in self.unrecorded.pop(run_id, []):
            store.add_warning(run_id, message)

    def _record(self, plan: RunPlan, reason: str, status: RunStatus) -> None:
        from archlab.run.pool import record_unfinished

        record_unfinished(self.directory, plan, self.executor.threads, "cpu", reason, status)

    def _cancel(self, reason: str, *, force: bool = False) -> None:
        """Cancel every task (their checkpoints in the store are kept) and mark the runs that
        had started interrupted; wait a little for the workers to stop."""
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            with contextlib.suppress(Exception):
                self.ray.cancel(task.generator, force=force)
        for task in tasks:
            if task.started:
                self._record(task.plan, reason, RunStatus.INTERRUPTED)
                self.statuses[task.plan.run_id] = RunStatus.INTERRUPTED.value
                self.report(task.plan.run_id, {"kind": "done", "status": "interrupted"})
        if force:
            return
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        pending = [t.generator for t in tasks]
        while pending and time.monotonic() < deadline:
            ready, pending = self.ray.wait(pending, num_returns=1, timeout=0.5)
            for generator in ready:
                with contextlib.suppress(Exception):
                    self.ray.get(next(generator))
                    pending.append(generator)  # more to drain


def _rebuild(kind: str, message: str, directory: Path) -> ArchlabError:
    """A task's user error, raised again in the driver (same class where archlab's)."""
    if kind == DiskFullError.__name__:
        return disk_full_error(directory, message)
    cls = getattr(errors_module, kind, None)
    if isinstance(cls, type) and issubclass(cls, ArchlabError):
        return cls(message)
    return ArchlabError(message)
