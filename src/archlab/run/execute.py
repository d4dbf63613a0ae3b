"""One run: build, resume from its checkpoint if it can be trusted, train, record."""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archlab.analysis.predictions import compute_predictions, save_predictions
from archlab.data import Tensors
from archlab.errors import StoreError
from archlab.model import BuiltModel, build_model
from archlab.plan import RunPlan
from archlab.run.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from archlab.run.environment import environment
from archlab.spec import Study
from archlab.store import CHECKPOINT_FILE, PREDICTIONS_FILE, WEIGHTS_FILE, RunStatus, Store
from archlab.train import TrainResult, TrainState, fit, predict_proba

__all__ = [
    "Interrupted",
    "Pruned",
    "RunContext",
    "autocast",
    "execute_run",
    "failure_reason",
    "log",
    "peak_rss_bytes",
    "record_failure",
    "record_result",
]

log = logging.getLogger("archlab")


class Interrupted(Exception):
    """Raised inside a run when the user pressed Ctrl-C (the last epoch checkpoint is kept)."""


class Pruned(Exception):
    """Raised inside a run when its ``epoch_check`` says stop (the run is final: pruned)."""

    def __init__(self, epoch: int, train_seconds: float) -> None:
        super().__init__(f"pruned at epoch {epoch}")
        self.epoch, self.train_seconds = epoch, train_seconds


@dataclass
class RunContext:
    """What a run needs besides its plan: where to write, the data, how to report progress.

    ``progress`` gets events ``{"kind": ...}``: ``batch``, ``epoch``, ``resumed``, ``warning``
    (with ``message``: e.g. a checkpoint discarded) and ``done``."""

    directory: Path
    data: Tensors
    threads: int
    progress: Callable[[str, dict[str, Any]], None] = lambda run_id, event: None
    stop_requested: Callable[[], bool] = lambda: False
    device: str = "cpu"
    #: After each recorded epoch: called with the plan and the epoch's history row; True
    #: stops the run there as ``pruned`` (a search trial's pruner). Also asked again for the
    #: epoch a run resumes at, which a killed process may have recorded without asking.
    epoch_check: Callable[[RunPlan, dict[str, float]], bool] | None = None
    #: where ``threads`` came from ("given", "default"), recorded in the run's environment
    threads_from: str | None = None


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` for ``precision`` "bf16" (matmuls and convs in bfloat16,
    losses and reductions in float32, weights and optimizer state in float32); else nothing.

    It wraps a whole ``fit``, so its cache of bf16 weight copies is off: that cache lives
    until the context exits, and would keep serving the first step's weights to every later
    step (the model would never change)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (a lifetime peak, never reset)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def failure_reason(exc: BaseException) -> str:
    """How a failed run's cause is recorded: ``Class: message``, one line, at most 500 chars."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}"[-500:]


def record_failure(directory: Path, plan: RunPlan, reason: str, environment: dict[str, Any],
                   *, status: RunStatus = RunStatus.FAILED,
                   peak_rss_bytes: int | None = None) -> None:
    """Mark ``plan``'s run failed (or interrupted) with ``reason``, inserting it first if it
    never started. A finished run is never overwritten."""
    with Store(directory) as store:
        if store.status(plan.run_id) is None:
            store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed,
                            plan.config.to_json(), environment)
        store.fail_run(plan.run_id, reason, status=status, peak_rss_bytes=peak_rss_bytes)


def execute_run(study: Study, plan: RunPlan, ctx: RunContext) -> RunStatus:
    """Train one run to completion (resuming from its checkpoint if any); return its status."""
    t_wall = time.perf_counter()
    torch.set_num_threads(ctx.threads)
    precision = plan.config.precision
    with Store(ctx.directory) as store:
        run_dir = store.run_dir(plan.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = run_dir / CHECKPOINT_FILE

        def record_environment(threads_from: str | None) -> None:
            store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed,
                            plan.config.to_json(),
                            environment(torch.get_num_threads(), ctx.device,
                                        precision=precision, threads_from=threads_from))

        record_environment(ctx.threads_from)
        train = study.train_for(plan.model)
        store.set_meta(data_sizes={"train": len(ctx.data.x_train), "val": len(ctx.data.x_val),
                                   "test": len(ctx.data.x_test),
                                   "classes": len(ctx.data.class_names)})

        def fresh_model() -> BuiltModel:
            # Initialized on the CPU (same initial weights whatever the device), then moved.
            built = build_model(study, plan.model, seed=plan.seed)
            built.module.to(ctx.device)
            torch.manual_seed(plan.seed)  # dropout stream (seeds CUDA's generators too)
            return built

        def discard_checkpoint(why: str) -> None:
            # Restarting costs time; trusting a bad file costs wrong numbers, or a run that
            # fails on every rerun. Say so, on the console and on the run.
            message = f"checkpoint discarded, restarting from epoch 0: {why}"
            log.warning("%s: %s", plan.run_id, message)
            ckpt.unlink(missing_ok=True)
            store.forget_file(plan.run_id, CHECKPOINT_FILE)
            store.truncate_epochs(plan.run_id, 0)
            store.add_warning(plan.run_id, message)
            ctx.progress(plan.run_id, {"kind": "warning", "message": message})

        def resume_from(data: bytes) -> Callable[..., TrainState]:
            def resume(opt: torch.optim.Optimizer, sched: Any,
                       gen: torch.Generator) -> TrainState:
                state = load_checkpoint(data, built.module, opt, sched, gen)
                if torch.get_num_threads() != ctx.threads:  # the checkpoint's count wins
                    record_environment("checkpoint")
                store.truncate_epochs(plan.run_id, state.epoch)
                ctx.progress(plan.run_id, {"kind": "resumed", "epoch": state.epoch})
                if ctx.epoch_check is not None and state.history \
                        and ctx.epoch_check(plan, state.history[-1]):
                    raise Pruned(state.epoch, state.train_seconds)
                return state
            return resume

        def on_epoch_end(st: TrainState, opt: Any, sched: Any, gen: torch.Generator) -> None:
            save_checkpoint(ckpt, st, built.module, opt, sched, gen)
            store.record_epoch(plan.run_id, st.history[-1], files=[CHECKPOINT_FILE])
            ctx.progress(plan.run_id, {"kind": "epoch", "epoch": st.epoch,
                                       "epochs": train.epochs, **st.history[-1]})
            if ctx.epoch_check is not None and ctx.epoch_check(plan, st.history[-1]):
                raise Pruned(st.epoch, st.train_seconds)

        def on_batches(done: int, total: int) -> None:
            if ctx.stop_requested():
                raise Interrupted
            ctx.progress(plan.run_id, {"kind": "batch", "done": done, "total": total})

        def run(resume: Callable[..., TrainState] | None) -> TrainResult:
            with autocast(ctx.device, precision):
                return fit(built, ctx.data, train, plan.seed, resume=resume,
                           on_epoch_end=on_epoch_end, on_batches=on_batches)

        built = fresh_model()
        resume = None
        if ckpt.exists():
            try:  # the bytes checked are the bytes loaded
                resume = resume_from(store.read_verified(plan.run_id, CHECKPOINT_FILE))
            except StoreError as exc:
                discard_checkpoint(str(exc))
        try:
            try:
                result = run(resume)
            except CheckpointError as exc:
                # Raised before the first batch; the model, optimizer and RNGs it may have
                # half-restored are all rebuilt, exactly as a run that never had a checkpoint.
                discard_checkpoint(f"{ckpt}: {exc}")
                if torch.get_num_threads() != ctx.threads:  # a half-restored thread count
                    torch.set_num_threads(ctx.threads)
                    record_environment(ctx.threads_from)
                built = fresh_model()
                result = run(None)
        except Pruned as pruned:
            store.prune_run(plan.run_id, epoch=pruned.epoch, counts={
                "total_params": built.total_params, "trainable_params": built.trainable_params,
                "non_trainable_params": built.non_trainable_params,
                "macs_per_sample": built.macs_per_sample}, train_seconds=pruned.train_seconds,
                wall_seconds=time.perf_counter() - t_wall, peak_rss_bytes=peak_rss_bytes())
            ckpt.unlink(missing_ok=True)
            ctx.progress(plan.run_id, {"kind": "done", "status": RunStatus.PRUNED.value})
            return RunStatus.PRUNED
        except Interrupted:
            store.fail_run(plan.run_id, "interrupted by the user", status=RunStatus.INTERRUPTED,
                           peak_rss_bytes=peak_rss_bytes())
            return RunStatus.INTERRUPTED
        return record_result(store, plan, ctx, built, result, started=t_wall)


def record_result(store: Store, plan: RunPlan, ctx: RunContext, built: BuiltModel,
                  result: TrainResult, *, started: float, share: int = 1) -> RunStatus:
    """Write a trained run's weights and predictions and finish it in the store (its wall time
    from ``started``, divided by ``share`` runs trained together); drop its checkpoint."""
    run_dir = store.run_dir(plan.run_id)
    files = []
    if result.status is RunStatus.FINISHED:
        save_weights(built.module, run_dir / WEIGHTS_FILE,
                     {"model": plan.model, "run_id": plan.run_id,
                      # the input contract a predict or an export needs (standardize's stats)
                      "preprocess": json.dumps(ctx.data.pre.to_json())})
        # The report's confusion matrix and mistakes: computed here, once, while the model
        # and the data are in memory, so the report never loads either.
        proba = result.test_proba  # the final evaluation's, where it computed them
        if proba is None:
            with autocast(ctx.device, plan.config.precision):
                proba = predict_proba(built, ctx.data.x_test, ctx.data.pre)
        proba = proba.float()
        save_predictions(compute_predictions(proba, ctx.data.x_test.permute(0, 3, 1, 2),
                                             ctx.data.y_test, ctx.data.class_names),
                         run_dir / PREDICTIONS_FILE)
        files = [WEIGHTS_FILE, PREDICTIONS_FILE]
    counts = {"total_params": built.total_params, "trainable_params": built.trainable_params,
              "non_trainable_params": built.non_trainable_params,
              "macs_per_sample": built.macs_per_sample}
    # One transaction: the run is final and its files' checksums recorded (the checkpoint's
    # dropped), or neither; the checkpoint file goes only after that.
    store.finish_run(plan.run_id, status=result.status, metrics=result.final, counts=counts,
                     best_epoch=result.best_epoch, diverged_epoch=result.diverged_epoch,
                     train_seconds=result.train_seconds,
                     wall_seconds=(time.perf_counter() - started) / share,
                     samples_per_second=result.samples_per_second, history=result.history,
                     peak_rss_bytes=peak_rss_bytes(), files=files)
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    ctx.progress(plan.run_id, {"kind": "done", "status": result.status.value, **result.final})
    return result.status
