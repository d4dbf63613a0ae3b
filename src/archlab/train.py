"""The trainer: in-memory tensors, shuffled mini-batches, Keras's loss and metrics.

Deliberately short. Speed comes from what it does *not* do: no DataLoader (the data is already
a tensor), no per-batch ``.item()`` (metrics accumulate on the tensor side and are read once an
epoch), evaluation in large no-grad batches.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from archlab.augment import Augmenter
from archlab.data import Tensors
from archlab.data.tensors import Preprocess
from archlab.engine import (
    eval_batch_for,
    keep_freed_memory,
    release_freed_memory,
    relu_after_pool,
    single_dense_plan,
)
from archlab.layout import prefer_channels_last
from archlab.model import BuiltModel
from archlab.optim import DirectStep, make_optimizer
from archlab.spec import TrainSpec
from archlab.store import RunStatus

__all__ = [
    "BatchHook",
    "CheckpointError",
    "EpochHook",
    "Resume",
    "TrainResult",
    "TrainState",
    "evaluate",
    "fit",
    "predict_proba",
]


def _model_input(pre: Preprocess | None) -> Callable[[torch.Tensor], torch.Tensor]:
    return pre if pre is not None else (lambda x: x)


def evaluate(built: BuiltModel, x: torch.Tensor, y: torch.Tensor,
             pre: Preprocess | None = None, *,
             proba: list[torch.Tensor] | None = None) -> tuple[float, float]:
    """Keras's ``model.evaluate``: mean cross-entropy (+ regularization losses) and accuracy.

    ``x`` holds images (N, H, W, C) that ``pre`` (the dataset's :class:`Preprocess`) makes the
    model's input a chunk at a time; without it, ``x`` is already the model's input.
    Activity regularization counts as Keras's evaluation counts it: each batch's penalty over
    its size, averaged over batches weighted by their sizes, is the mean penalty per sample.
    ``proba``, when given, receives the class probabilities, as :func:`predict_proba` computes
    them (the same chunks), in one tensor. Runs under ``torch.inference_mode``."""
    parts: list[torch.Tensor] | None = [] if proba is not None else None
    release_freed_memory()  # what training steps freed: not kept through the evaluation
    with torch.inference_mode():
        result = _evaluate(built, x, y, pre, parts)
    release_freed_memory()
    if proba is not None and parts is not None:
        proba.append(torch.cat(parts))  # outside inference mode: an ordinary tensor
    return result


def _evaluate(built: BuiltModel, x: torch.Tensor, y: torch.Tensor, pre: Preprocess | None,
              parts: list[torch.Tensor] | None) -> tuple[float, float]:
    pre = _model_input(pre)
    module = built.module
    was_training = module.training
    module.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    chunk = eval_batch_for(built)
    for i in range(0, len(x), chunk):
        logits = module(pre(x[i:i + chunk]))
        yb = y[i:i + chunk]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        for m in built.activity:
            loss_sum += m.per_sample.sum().double()  # type: ignore[union-attr]
        correct += (logits.argmax(1) == yb).sum()
        if parts is not None:
            parts.append(F.softmax(logits, dim=1))
    module.train(was_training)
    reg = built.regularization_loss()
    loss = loss_sum.item() / len(x) + (reg.item() if reg is not None else 0.0)
    return loss, correct.item() / len(x)


@torch.no_grad()
def predict_proba(built: BuiltModel, x: torch.Tensor,
                  pre: Preprocess | None = None) -> torch.Tensor:
    """Class probabilities of images ``x`` (N, H, W, C), made model input by ``pre`` (without
    it, ``x`` is already the model's input)."""
    pre = _model_input(pre)
    built.module.eval()
    chunk = eval_batch_for(built)
    return torch.cat([F.softmax(built.module(pre(x[i:i + chunk])), dim=1)
                      for i in range(0, len(x), chunk)])


@dataclass
class TrainState:
    """Everything needed to resume a run at an epoch boundary, bit for bit."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    #: the augmentation generators' states (:meth:`archlab.augment.Augmenter.get_state`)
    augment_rng: torch.Tensor | None = None


class CheckpointError(Exception):
    """A checkpoint that cannot be used for this run (the message says why, in one line)."""


@dataclass
class TrainResult:
    status: RunStatus  # FINISHED or DIVERGED
    history: list[dict[str, float]]
    final: dict[str, float]
    diverged_epoch: int | None
    best_epoch: int
    train_seconds: float
    samples_per_second: float
    #: the final model's class probabilities on the test set, where the final evaluation
    #: computed them (what :func:`predict_proba` returns for it; None otherwise)
    test_proba: torch.Tensor | None = None


#: Called at each epoch end with what a checkpoint needs (state, optimizer, scheduler, generator).
EpochHook = Callable[[TrainState, torch.optim.Optimizer, Any, torch.Generator], None]
#: Called every 20 batches with (done, total); may raise to stop training.
BatchHook = Callable[[int, int], None]
#: Restores a checkpoint into the fresh optimizer, scheduler and generator (and the model);
#: returns the state to continue from. See :func:`archlab.run.checkpoint.load_checkpoint`.
Resume = Callable[[torch.optim.Optimizer, Any, torch.Generator], TrainState]


def fit(
    built: BuiltModel,
    data: Tensors,
    train: TrainSpec,
    seed: int,
    *,
    resume: Resume | None = None,
    on_epoch_end: EpochHook | None = None,
    on_batches: BatchHook | None = None,
) -> TrainResult:
    """Train ``built`` on ``data``; return history and final metrics.

    ``resume`` continues from a checkpoint written by ``on_epoch_end`` (which gets the
    optimizer, scheduler and shuffling generator to save); it runs before the first batch, so
    whatever it raises leaves nothing trained. ``on_batches`` may raise to stop.
    """
    keep_freed_memory()
    # The layout is chosen for the module as built (the probe's cache is keyed by it).
    prefer_channels_last(built.module, built.input_shape, train.batch_size)
    with relu_after_pool(built.module):
        return _fit(built, data, train, seed, resume, on_epoch_end, on_batches)


def _fit(built: BuiltModel, data: Tensors, train: TrainSpec, seed: int, resume: Resume | None,
         on_epoch_end: EpochHook | None, on_batches: BatchHook | None) -> TrainResult:
    module = built.module
    opt, sched = make_optimizer(train.optimizer, [p for p in module.parameters()
                                                  if p.requires_grad],
                                plateau=train.reduce_lr_on_plateau)
    gen = torch.Generator().manual_seed(seed)  # shuffling has its own stream: resumable
    # Augmentation draws from generators of its own: adding it shifts no other stream.
    augment = Augmenter(train.augmentation, seed) if train.augmentation else None
    state = resume(opt, sched, gen) if resume is not None else TrainState()
    if augment is not None and state.epoch > 0:
        if state.augment_rng is None:
            raise CheckpointError("it holds no augmentation state")
        augment.set_state(state.augment_rng)
    x, y, n, bs, pre = data.x_train, data.y_train, len(data.x_train), train.batch_size, data.pre
    n_batches = math.ceil(n / bs)
    diverged_epoch = None
    es = train.early_stopping
    # An MLP's step written out (same kernels, bit for bit autograd's gradients) and the
    # optimizer's fused kernel called without its wrapper: a small MLP's step is overhead.
    dense = single_dense_plan(built)
    step = DirectStep(opt)  # after resume: it keeps the optimizer's state tensors
    regularized, activity = bool(built.regularized), bool(built.activity)
    last_proba: list[torch.Tensor] = []
    proba: list[torch.Tensor] = []
    same_test = data.x_test is data.x_val and data.y_test is data.y_val  # validation: test
    while state.epoch < train.epochs:
        t0 = time.perf_counter()
        module.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        # Shuffle with a CPU generator whatever the device: the order is then the same on
        # every device, and resumable from its saved state.
        perm = torch.randperm(n, generator=gen).to(x.device)
        for b in range(n_batches):
            idx = perm[b * bs:(b + 1) * bs]
            # index_select, not x[idx]: the same rows, gathered 3-6x faster on the CPU; the
            # batch is made float (and NCHW) only now, on the training device
            xb, yb = pre(x.index_select(0, idx)), y.index_select(0, idx)
            if augment is not None:  # training batches only, as Keras's preprocessing layers
                xb = augment(xb)
            if dense is not None:  # sets every parameter's .grad
                with torch.no_grad():
                    reg = built.regularization_loss() if regularized else None
                loss, logits = dense.train_step(xb, yb, reg)
            else:
                logits = module(xb)
                loss = F.cross_entropy(logits, yb)
                if regularized:  # Keras adds regularization losses to the training loss
                    loss = loss + built.regularization_loss()  # type: ignore[operator]
                if activity:  # and the activity penalties of this forward pass
                    loss = loss + built.activity_loss()  # type: ignore[operator]
                opt.zero_grad(set_to_none=True)
                loss.backward()
            if train.optimizer.clipnorm:
                torch.nn.utils.clip_grad_norm_(module.parameters(), train.optimizer.clipnorm)
            step()
            if built.constrained:
                built.apply_constraints()  # Keras applies weight constraints after each step
            if sched is not None:
                sched.step()
            # Accumulate on the tensor side: no host sync inside the epoch.
            loss_sum.add_(loss.detach(), alpha=len(idx))
            correct.add_((logits.detach().argmax(1) == yb).sum())
            if on_batches is not None and (b % 20 == 19 or b == n_batches - 1):
                on_batches(b + 1, n_batches)
        train_loss = loss_sum.item() / n
        state.train_seconds += time.perf_counter() - t0
        state.epoch += 1
        if not math.isfinite(train_loss):
            diverged_epoch = state.epoch
            state.history.append({"epoch": state.epoch, "loss": train_loss,
                                  "accuracy": correct.item() / n, "val_loss": math.nan,
                                  "val_accuracy": math.nan,
                                  "seconds": time.perf_counter() - t0})
            break
        # The last epoch's probabilities on a validation set that is the test set are the
        # predictions a finished run stores: kept, not computed again.
        last_proba.clear()
        keep = last_proba if same_test and state.epoch == train.epochs else None
        val_loss, val_acc = evaluate(built, data.x_val, data.y_val, pre, proba=keep)
        logs = {"epoch": state.epoch, "loss": train_loss, "accuracy": correct.item() / n,
                "val_loss": val_loss, "val_accuracy": val_acc}
        if sched is not None and sched.recorded:
            logs["lr"] = sched.current()  # as Keras logs it: before this epoch's plateau check
            sched.epoch_end(logs)
        state.history.append({**logs, "seconds": time.perf_counter() - t0})
        stop_early = False
        monitored = val_loss if (es is None or es.monitor == "val_loss") else -val_acc
        delta = es.min_delta if es is not None else 0.0
        if monitored < state.best_val_loss - delta:
            state.best_val_loss, state.best_epoch, state.wait = monitored, state.epoch, 0
            if train.restore_best:
                state.best_weights = copy.deepcopy(module.state_dict())
        else:
            state.wait += 1
            stop_early = es is not None and state.wait >= es.patience
        if augment is not None:
            state.augment_rng = augment.get_state()
        if on_epoch_end is not None:
            on_epoch_end(state, opt, sched, gen)
        if stop_early:
            break
    if diverged_epoch is not None:
        return TrainResult(RunStatus.DIVERGED, state.history, {}, diverged_epoch, state.best_epoch,
                           state.train_seconds, 0.0)
    restored = train.restore_best and state.best_weights is not None
    if restored:
        module.load_state_dict(state.best_weights)  # type: ignore[arg-type]
    last = state.history[-1] if state.history else {}
    val: tuple[float, float] | None = None
    if "val_loss" in last and (not restored or state.best_epoch == state.epoch):
        # The last epoch's validation was of these very weights (same chunks, same sums):
        # the final evaluation would repeat it number for number.
        val = last["val_loss"], last["val_accuracy"]
        if same_test and last_proba:
            proba = last_proba
    final: dict[str, float] = {}
    final["train_loss"], final["train_accuracy"] = evaluate(built, data.x_train, data.y_train,
                                                            pre)
    if val is None:
        val = evaluate(built, data.x_val, data.y_val, pre, proba=proba if same_test else None)
    final["val_loss"], final["val_accuracy"] = val
    final["test_loss"], final["test_accuracy"] = val if same_test else evaluate(
        built, data.x_test, data.y_test, pre, proba=proba)
    seen = n * len(state.history)
    sps = seen / state.train_seconds if state.train_seconds > 0 else 0.0
    return TrainResult(RunStatus.FINISHED, state.history, final, None, state.best_epoch,
                       state.train_seconds, sps, proba[0] if proba else None)
