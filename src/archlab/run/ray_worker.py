"""The worker side of ``--executor ray``: one run as a Ray streaming-generator task.

It trains with :func:`~archlab.run.execute.execute_run` into a scratch study directory on its
worker (seeded with the checkpoint the driver sent) and yields what the driver writes into the
real store; the message protocol is described in :mod:`archlab.run.ray_executor`.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archlab.data import Tensors
from archlab.errors import ArchlabError, DiskFullError, is_disk_full
from archlab.plan import RunPlan, bind_data
from archlab.store import CHECKPOINT_FILE, PREDICTIONS_FILE, WEIGHTS_FILE, RunStatus, Store

__all__ = ["BATCH_EVENT_SECONDS", "one_line", "train_task"]

#: Batch progress is sent at most this often per run (each message is a Ray object).
BATCH_EVENT_SECONDS = 0.5

def train_task(cfg: dict[str, Any], source: str, plan: RunPlan, data: Tensors,
                checkpoint: bytes | None, threads: int,
                device: str) -> Iterator[tuple[Any, ...]]:
    """One run on a Ray worker (a streaming generator; see the module docstring)."""
    from archlab.run.environment import environment
    from archlab.run.execute import RunContext, execute_run, failure_reason
    from archlab.spec import parse_study

    scratch = Path(tempfile.mkdtemp(prefix="archlab-ray-"))
    messages: queue.Queue[tuple[Any, ...]] = queue.Queue()
    stop = threading.Event()
    last_batch = [0.0]

    def progress(run_id: str, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "batch":
            now = time.monotonic()
            if now - last_batch[0] < BATCH_EVENT_SECONDS and event["done"] != event["total"]:
                return
            last_batch[0] = now
        if kind == "epoch":
            # Saved and recorded just before this event, by this thread: these bytes are the
            # epoch's checkpoint.
            path = scratch / "runs" / run_id / CHECKPOINT_FILE
            row = {k: v for k, v in event.items() if k not in ("kind", "epochs")}
            messages.put(("epoch", row, path.read_bytes(), event))
        elif kind != "done":  # the driver says "done" once the real store has the run
            messages.put(("event", event))

    def work() -> None:
        try:
            study = bind_data(parse_study(cfg, source), plan.config)
            if checkpoint is not None:
                with Store(scratch) as store:
                    store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed,
                                    plan.config.to_json(), environment(threads, device))
                    store.import_file(plan.run_id, CHECKPOINT_FILE, checkpoint)
            ctx = RunContext(scratch, data.to(device), threads, progress, stop.is_set, device,
                             threads_from="given")
            status = execute_run(study, plan, ctx)
            messages.put(_final(scratch, plan.run_id, status))
        except Exception as exc:  # noqa: BLE001 - the driver must hear why the run died
            if is_disk_full(exc):
                messages.put(("fatal", DiskFullError.__name__, one_line(exc)))
            elif isinstance(exc, ArchlabError):
                messages.put(("fatal", exc.__class__.__name__, one_line(exc)))
            else:
                messages.put(("failed", failure_reason(exc)))

    thread = threading.Thread(target=work, name=f"archlab-run-{plan.run_id}", daemon=True)
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
        yield ("started", {**environment(threads, device), "ray_node": node})
        thread.start()
        while True:
            message = messages.get()
            yield message
            if message[0] in ("finished", "failed", "fatal", "interrupted"):
                break
    finally:
        # Cancelled (the driver's Ctrl-C) or done: the run stops at its next batch, and the
        # scratch directory goes; the checkpoints that matter are the driver's.
        stop.set()
        if thread.is_alive():
            thread.join()
        shutil.rmtree(scratch, ignore_errors=True)


def _final(scratch: Path, run_id: str, status: RunStatus) -> tuple[Any, ...]:
    """The scratch store's final row of the run, as :meth:`Store.finish_run` arguments, and
    its kept files' bytes (checked against the scratch store's checksums)."""
    if status is RunStatus.INTERRUPTED:
        return ("interrupted",)
    with Store(scratch) as store:
        (record,) = store.runs(run_ids=[run_id])
        history = store.history(run_id)
        files = {}
        for name in (WEIGHTS_FILE, PREDICTIONS_FILE):
            if (store.run_dir(run_id) / name).exists():
                files[name] = store.read_verified(run_id, name)
    final = {
        "status": record.status.value, "metrics": dict(record.metrics),
        "counts": {"total_params": record.total_params,
                   "trainable_params": record.trainable_params,
                   "non_trainable_params": record.non_trainable_params,
                   "macs_per_sample": record.macs_per_sample},
        "best_epoch": record.best_epoch, "diverged_epoch": record.diverged_epoch,
        "train_seconds": record.train_seconds, "wall_seconds": record.wall_seconds,
        "samples_per_second": record.samples_per_second, "history": history,
        "peak_rss_bytes": record.peak_rss_bytes}
    return ("finished", final, files, record.environment)  # the driver adds ray_node


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]
