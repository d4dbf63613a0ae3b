"""One run: build, resume from its checkpoint if any, train, record."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archlab.analysis.predictions import (
    PREDICTIONS_FILE,
    compute_predictions,
    save_predictions,
)
from archlab.data import Tensors
from archlab.model import build_model
from archlab.run.checkpoint import load_checkpoint, save_checkpoint, save_weights
from archlab.run.config import RunPlan
from archlab.run.environment import environment
from archlab.spec import Study
from archlab.store import Store
from archlab.train import TrainState, fit, predict_proba


class Interrupted(Exception):
    """Raised inside a run when the user pressed Ctrl-C (the last epoch checkpoint is kept)."""


@dataclass
class RunContext:
    """What a run needs besides its plan: where to write, the data, how to report progress."""

    directory: Path
    data: Tensors
    threads: int
    progress: Callable[[str, dict[str, Any]], None] = lambda run_id, event: None
    stop_requested: Callable[[], bool] = lambda: False
    device: str = "cpu"


def execute_run(study: Study, plan: RunPlan, ctx: RunContext) -> str:
    """Train one run to completion (resuming from its checkpoint if any); return its status."""
    t_wall = time.perf_counter()
    run_dir = ctx.directory / "runs" / plan.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.safetensors"
    torch.set_num_threads(ctx.threads)
    with Store(ctx.directory) as store:
        store.start_run(plan.run_id, plan.model, plan.repeat, plan.seed, plan.config.to_json(),
                        environment(ctx.threads, ctx.device))
        train = study.train_for(plan.model)
        store.set_meta(data_sizes={"train": len(ctx.data.x_train), "val": len(ctx.data.x_val),
                                   "test": len(ctx.data.x_test),
                                   "classes": len(ctx.data.class_names)})
        # Initialized on the CPU (same initial weights whatever the device), then moved.
        built = build_model(study, plan.model, seed=plan.seed)
        built.module.to(ctx.device)
        torch.manual_seed(plan.seed)  # dropout stream (seeds CUDA's generators too)
        state, restore = None, None
        if ckpt.exists():
            state, restore = load_checkpoint(ckpt, built)
            store.truncate_epochs(plan.run_id, state.epoch)
            ctx.progress(plan.run_id, {"kind": "resumed", "epoch": state.epoch})

        def on_epoch_end(st: TrainState, opt: Any, sched: Any, gen: torch.Generator) -> None:
            save_checkpoint(ckpt, built, st, opt, sched, gen)
            store.record_epoch(plan.run_id, st.history[-1])
            ctx.progress(plan.run_id, {"kind": "epoch", "epoch": st.epoch,
                                       "epochs": train.epochs, **st.history[-1]})

        def on_batches(done: int, total: int) -> None:
            if ctx.stop_requested():
                raise Interrupted
            ctx.progress(plan.run_id, {"kind": "batch", "done": done, "total": total})

        try:
            result = fit(built, ctx.data, train, plan.seed, state=state, restore=restore,
                         on_epoch_end=on_epoch_end, on_batches=on_batches)
        except Interrupted:
            store.fail_run(plan.run_id, "interrupted by the user", status="interrupted")
            return "interrupted"
        if result.status == "finished":
            save_weights(built.module, run_dir / "weights.safetensors",
                         {"model": plan.model, "run_id": plan.run_id})
            # The report's confusion matrix and mistakes: computed here, once, while the model
            # and the data are in memory, so the report never loads either.
            proba = predict_proba(built, ctx.data.x_test)
            save_predictions(compute_predictions(proba, ctx.data.x_test, ctx.data.y_test,
                                                 ctx.data.class_names),
                             run_dir / PREDICTIONS_FILE)
        counts = {"total_params": built.total_params, "trainable_params": built.trainable_params,
                  "non_trainable_params": built.non_trainable_params,
                  "macs_per_sample": built.macs_per_sample}
        store.finish_run(plan.run_id, status=result.status, metrics=result.final, counts=counts,
                         best_epoch=result.best_epoch, diverged_epoch=result.diverged_epoch,
                         train_seconds=result.train_seconds,
                         wall_seconds=time.perf_counter() - t_wall,
                         samples_per_second=result.samples_per_second, history=result.history)
        ckpt.unlink(missing_ok=True)
        ctx.progress(plan.run_id, {"kind": "done", "status": result.status, **result.final})
        return result.status


