"""Parallel runs (--jobs N): one process per run, forked from a preloaded fork server."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archlab.data import load_dataset, prepare_tensors
from archlab.errors import ArchlabError
from archlab.run.config import RunPlan
from archlab.run.environment import environment
from archlab.run.execute import RunContext, execute_run
from archlab.spec import Study
from archlab.store import Store


def _worker(study_cfg: dict[str, Any], source: str, plan: RunPlan, directory: str,
            data_dir: str | None, threads: int, queue: Any, device: str = "cpu") -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    parent = os.getppid()

    def stop_requested() -> bool:
        # Stop on the parent's SIGTERM, and if the parent died (SIGKILL, OOM): an orphan must
        # not keep writing a run that the next `archlab run` will resume.
        return stop["flag"] or os.getppid() != parent

    from archlab.spec import parse_study

    study = parse_study(study_cfg, source)
    try:
        raw = load_dataset(study.data.dataset, data_dir)
        data = prepare_tensors(raw, study.data, study.seed).to(device)
        ctx = RunContext(Path(directory), data, threads,
                         progress=lambda rid, ev: queue.put((rid, ev)),
                         stop_requested=stop_requested, device=device)
        execute_run(study, plan, ctx)
    except BaseException as exc:  # noqa: BLE001 - a worker must record why it died
        msg = str(exc) if isinstance(exc, ArchlabError) else traceback.format_exc(limit=3)
        with Store(directory) as store:
            store.fail_run(plan.run_id, f"{exc.__class__.__name__}: {msg.strip()[-500:]}")
        queue.put((plan.run_id, {"kind": "done", "status": "failed"}))




def run_parallel(study: Study, todo: list[RunPlan], directory: Path, data_dir: Any, jobs: int,
                  threads: int, report: Callable[[str, dict[str, Any]], None],
                 stop_requested: Callable[[], bool], statuses: dict[str, str],
                 device: str) -> None:
    # Each run gets a fresh process (no memory carried between runs), forked from a server
    # that has imported torch and archlab once: a worker starts in milliseconds, not seconds.
    # The server runs no torch op before forking, so no thread pool is forked half-alive.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["archlab.run", "archlab.data"])
    queue = ctx.Queue()
    pending = list(todo)
    running: dict[str, tuple[Any, RunPlan]] = {}
    cfg = study.to_config()
    signalled = False
    while pending or running:
        while pending and len(running) < jobs and not stop_requested():
            plan = pending.pop(0)
            with Store(directory) as store:  # claimed now: a worker dying at birth is seen
                store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed,
                                plan.config.to_json(), environment(threads, device))
            proc = ctx.Process(target=_worker, args=(cfg, study.source, plan, str(directory),
                                                     str(data_dir) if data_dir else None,
                                                     threads, queue, device), daemon=True)
            proc.start()
            running[plan.run_id] = (proc, plan)
        if stop_requested():
            pending.clear()
            if not signalled:
                for proc, _ in running.values():
                    proc.terminate()  # SIGTERM: the worker stops at its next batch
                signalled = True
        try:
            while True:
                rid, event = queue.get(timeout=0.2)
                report(rid, event)
        except Exception:  # queue.Empty
            pass
        for rid, (proc, _plan) in list(running.items()):
            if proc.exitcode is None:
                continue
            proc.join()
            del running[rid]
            with Store(directory) as store:
                status = store.status(rid) or "failed"
                if status == "running":  # the process died without a word: OOM, segfault
                    reason = (f"worker died with signal {-proc.exitcode}" if proc.exitcode < 0
                              else f"worker exited with code {proc.exitcode}")
                    store.fail_run(rid, reason)
                    status = "failed"
                    report(rid, {"kind": "done", "status": "failed", "error": reason})
            statuses[rid] = status


