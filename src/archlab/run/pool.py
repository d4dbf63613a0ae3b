"""Parallel runs (--jobs N): one process per run, forked from a preloaded fork server.

Each worker talks to the parent over its own pipe, and nothing else is shared between
processes, so a worker killed at any moment (SIGKILL, the OOM killer) cannot leave behind a
lock that another process waits on. (A single ``multiprocessing.Queue`` for all workers has
one write lock: a worker killed while holding it left the other workers, and the parent
waiting for them, blocked forever.) The parent waits on every pipe and every worker's exit
sentinel at once, joins every worker it started, and kills any still alive when it leaves
early (an exception, a second Ctrl-C).

Ctrl-C reaches every process of the terminal's process group, so the fork server (and through
it every worker) is started with SIGINT blocked: a Ctrl-C while it imports torch neither kills
it with a traceback nor leaves the parent waiting on a dead server; the parent alone decides
(it sends SIGTERM). The fork server is stopped when the parallel runs end, so no process
started here outlives `archlab run`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import forkserver, resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from archlab import errors
from archlab.data import load_dataset, prepare_tensors
from archlab.errors import ArchlabError, DiskFullError, is_disk_full
from archlab.plan import RunPlan, bind_data
from archlab.run.environment import environment
from archlab.run.execute import RunContext, execute_run, failure_reason, record_failure
from archlab.run.lock import disk_full_error
from archlab.spec import Study
from archlab.store import RunStatus, Store

__all__ = ["Feed", "Task", "record_unfinished", "run_parallel", "stop_forkserver"]

Report = Callable[[str, dict[str, Any]], None]

#: Longest error text sent over a pipe: keeps every message far below PIPE_BUF, so each one
#: is written atomically and the parent never waits on half a message.
_MAX_ERROR = 500


@dataclass(frozen=True)
class Task:
    """A run with its own study (a search trial's model) and per-epoch check (its pruner,
    picklable: a worker calls it in its own process)."""

    plan: RunPlan
    study: Study
    epoch_check: Callable[[RunPlan, dict[str, float]], bool] | None = None


class Feed(Protocol):
    """Runs decided while others run (a search asks its next trial when a slot frees)."""

    def next(self) -> Task | None:
        """The next run to start now, or None when there is none (yet)."""

    def ended(self, run_id: str, status: str) -> None:
        """A run started from this feed has ended with ``status``."""


def _worker(study_cfg: dict[str, Any], source: str, plan: RunPlan, directory: str,
            data_dir: str | None, threads: int, conn: Connection, device: str,
            epoch_check: Callable[[RunPlan, dict[str, float]], bool] | None = None,
            threads_from: str | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    parent = os.getppid()

    def stop_requested() -> bool:
        # Stop on the parent's SIGTERM, and if the parent died (SIGKILL, OOM): an orphan must
        # not keep writing a run that the next `archlab run` will resume.
        return stop["flag"] or os.getppid() != parent

    def send(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except OSError:  # the parent is gone (broken pipe): stop at the next batch
            stop["flag"] = True

    from archlab.spec import parse_study

    try:
        study = bind_data(parse_study(study_cfg, source), plan.config)
        raw = load_dataset(study.data.dataset, data_dir)
        planned = plan.config.dataset
        if planned is not None and raw.fingerprint != planned.fingerprint:
            raise ArchlabError(f"{raw.source}: the data changed while the study ran (its "
                               "fingerprint differs from the one its runs were planned on); "
                               "run the study again")
        data = prepare_tensors(raw, study.data, study.seed).to(device)
        ctx = RunContext(Path(directory), data, threads,
                         progress=lambda rid, ev: send(("event", rid, ev)),
                         stop_requested=stop_requested, device=device,
                         epoch_check=epoch_check, threads_from=threads_from)
        execute_run(study, plan, ctx)
    except Exception as exc:  # noqa: BLE001 - a worker must say why its run died
        if is_disk_full(exc):
            send(("fatal", DiskFullError.__name__, _one_line(exc)))
        elif isinstance(exc, ArchlabError):
            # The user's to fix (data, spec), not this run's fault: the parent stops the study
            # and says it once, instead of every worker recording a failed run.
            send(("fatal", exc.__class__.__name__, _one_line(exc)))
        else:
            send(("failed", failure_reason(exc)))
    finally:
        conn.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:_MAX_ERROR]


@dataclass
class _Worker:
    plan: RunPlan
    process: BaseProcess
    conn: Connection | None  # None once the worker's end is closed (EOF)
    outcome: tuple[Any, ...] | None = None  # its "failed" or "fatal" message, if any
    stopped: bool = False  # sent SIGTERM: a death before its run began is an interruption


def run_parallel(study: Study, todo: list[RunPlan], directory: Path, data_dir: Any, jobs: int,
                 threads: int, report: Report, stop_requested: Callable[[], bool],
                 statuses: dict[str, str], errors: dict[str, str], device: str,
                 feed: Feed | None = None, threads_from: str | None = None) -> None:
    """Run ``todo`` in up to ``jobs`` worker processes, filling ``statuses`` as runs end (and
    ``errors`` with why each failed one failed); then, given a ``feed``, the runs it gives
    whenever a worker is free, telling it how each ended, until it has none and all ended.

    Raises the first user error a worker met (data, full disk) after stopping the others;
    their runs are marked interrupted and resume on the next `archlab run`.
    """
    # Each run gets a fresh process (no memory carried between runs), forked from a server
    # that has imported torch and archlab once: a worker starts in milliseconds, not seconds.
    # The server runs no torch op before forking, so no thread pool is forked half-alive.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["archlab.run", "archlab.data"])
    # The resource tracker first: starting it unblocks SIGINT (bpo-33613's mask is undone
    # unconditionally), so it must not start inside the window below.
    resource_tracker.ensure_running()
    with _sigint_blocked():  # the server inherits the blocked mask, and its workers from it
        forkserver.ensure_running()
    cfg = study.to_config()
    pending: list[RunPlan | Task] = list(todo)
    workers: list[_Worker] = []
    fatal: ArchlabError | None = None
    terminated = False
    try:
        while pending or workers or feed is not None:
            stopping = fatal is not None or stop_requested()
            while feed is not None and not pending and len(workers) < jobs and not stopping \
                    and (fed := feed.next()) is not None:
                pending.append(fed)
            while pending and len(workers) < jobs and not stopping:
                item = pending.pop(0)
                task = item if isinstance(item, Task) else Task(item, study)
                workers.append(_start(ctx, cfg if task.study is study else task.study.to_config(),
                                      study.source, task.plan, directory, data_dir, threads,
                                      device, task.epoch_check, threads_from))
            if stopping:
                pending.clear()
                if not terminated:
                    for w in workers:
                        w.process.terminate()  # SIGTERM: the worker stops at its next batch
                        w.stopped = True
                    terminated = True
            if not workers:
                break
            waitables: list[Any] = [w.process.sentinel for w in workers]
            waitables += [w.conn for w in workers if w.conn is not None]
            ready = set(wait(waitables, timeout=0.5))
            for w in list(workers):
                if w.conn is not None and w.conn in ready:
                    _receive(w, report, drain=False)
                if w.process.sentinel in ready:
                    _receive(w, report, drain=True)  # it has exited: all it sent is there
                    w.process.join()
                    workers.remove(w)
                    status, why = _settle(w, directory, threads, device, report)
                    statuses[w.plan.run_id] = status
                    if status == RunStatus.FAILED.value:
                        errors[w.plan.run_id] = why
                    if w.outcome is not None and w.outcome[0] == "fatal" and fatal is None:
                        fatal = _rebuild(w.outcome[1], w.outcome[2], directory)
                    if feed is not None:
                        feed.ended(w.plan.run_id, status)
    finally:
        _kill(workers, directory)
        stop_forkserver()
    if fatal is not None:
        raise fatal


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back in this thread (processes started meanwhile inherit the blocked
    mask, across exec too); a Ctrl-C that arrives meanwhile is delivered on leaving."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_forkserver() -> None:
    """Stop multiprocessing's fork server now, if it runs. By itself it would exit only once
    every process holding its 'alive' pipe has exited, and only after its preload (seconds of
    importing torch) if it is still in it: seconds after `archlab run` itself."""
    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if server is None or pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # it holds nothing: the runs' state is in the store
    try:
        server._stop()  # closes its pipe, reaps it, forgets it (the next pool starts anew)
    except (AttributeError, OSError, ChildProcessError):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def _start(ctx: Any, cfg: dict[str, Any], source: str, plan: RunPlan, directory: Path,
           data_dir: Any, threads: int, device: str,
           epoch_check: Callable[[RunPlan, dict[str, float]], bool] | None = None,
           threads_from: str | None = None) -> _Worker:
    with Store(directory) as store:  # claimed now: a worker dying at birth is seen
        store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed, plan.config.to_json(),
                        environment(threads, device, threads_from=threads_from))
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(cfg, source, plan, str(directory),
                                             str(data_dir) if data_dir else None, threads,
                                             writer, device, epoch_check, threads_from),
                       daemon=True)
    proc.start()
    # The worker has its own copy now. Closing ours is what lets the reader see EOF when the
    # worker dies, however it dies.
    writer.close()
    return _Worker(plan, proc, reader)


def _receive(w: _Worker, report: Report, *, drain: bool) -> None:
    """Read what is waiting on the worker's pipe (everything, up to EOF, when ``drain``)."""
    while w.conn is not None and w.conn.poll(0):
        try:
            message = w.conn.recv()
        except Exception:  # noqa: BLE001 - EOF, or a message cut short by a kill: its end
            w.conn.close()
            w.conn = None
            return
        if message[0] == "event":
            report(message[1], message[2])
        else:
            w.outcome = message
        if not drain:
            return


def _settle(w: _Worker, directory: Path, threads: int, device: str,
            report: Report) -> tuple[str, str]:
    """Record how the worker's run ended, if the worker could not; return its status and
    the reason when it did not finish."""
    rid = w.plan.run_id
    if w.conn is not None:
        w.conn.close()
        w.conn = None
    if w.outcome is not None and w.outcome[0] == "fatal":
        reason = f"stopped: {w.outcome[2]}"
        record_unfinished(directory, w.plan, threads, device, reason, RunStatus.INTERRUPTED)
        report(rid, {"kind": "done", "status": "interrupted", "error": reason})
        return RunStatus.INTERRUPTED.value, reason
    try:
        with Store(directory) as store:
            status = store.status(rid)
    except ArchlabError:
        status = None
    if w.outcome is not None and w.outcome[0] == "failed":
        record_unfinished(directory, w.plan, threads, device, w.outcome[1], RunStatus.FAILED)
        report(rid, {"kind": "done", "status": "failed", "error": w.outcome[1]})
        return RunStatus.FAILED.value, w.outcome[1]
    if (status is None or status == RunStatus.RUNNING) and w.stopped:
        # SIGTERM reached it before its handler was installed: stopped, not broken.
        record_unfinished(directory, w.plan, threads, device, "interrupted by the user",
                RunStatus.INTERRUPTED)
        report(rid, {"kind": "done", "status": "interrupted"})
        return RunStatus.INTERRUPTED.value, "interrupted by the user"
    if status is None or status == RunStatus.RUNNING:  # it died without a word: OOM, segfault
        code = w.process.exitcode or 0
        reason = (f"worker died with signal {-code}" if code < 0
                  else f"worker exited with code {code} before its run ended")
        record_unfinished(directory, w.plan, threads, device, reason, RunStatus.FAILED)
        report(rid, {"kind": "done", "status": "failed", "error": reason})
        return RunStatus.FAILED.value, reason
    return RunStatus(status).value, ""


def record_unfinished(directory: Path, plan: RunPlan, threads: int, device: str, reason: str,
                      status: RunStatus) -> None:
    """Record why ``plan``'s run did not finish, where possible: when the disk is full even
    this may fail, and the run stays `running`, which the next `archlab run` retries too."""
    with contextlib.suppress(Exception):
        record_failure(directory, plan, reason, environment(threads, device), status=status)


def _kill(workers: list[_Worker], directory: Path) -> None:
    """Leave no worker behind: kill those still running (we are leaving early) and reap all."""
    for w in workers:
        if w.process.exitcode is None:
            w.process.kill()
    for w in workers:
        w.process.join()
        if w.conn is not None:
            w.conn.close()
    if workers:
        try:
            with Store(directory) as store:
                for w in workers:
                    store.fail_run(w.plan.run_id, "stopped before it finished",
                                   status=RunStatus.INTERRUPTED)
        except Exception:  # noqa: BLE001 - best effort: unfinished runs are retried anyway
            pass


def _rebuild(kind: str, message: str, directory: Path) -> ArchlabError:
    """The worker's user error, raised again in the parent (same class where archlab's)."""
    if kind == DiskFullError.__name__:
        return disk_full_error(directory, message)
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, ArchlabError):
        return cls(message)
    return ArchlabError(message)
