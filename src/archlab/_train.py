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

import numpy as np
import torch
import torch.nn.functional as F

from archlab._builder import BuiltModel
from archlab._spec import DataSpec, Normalize, TrainSpec, _Optimizer

EVAL_BATCH = 2000


@dataclass
class Tensors:
    """A dataset ready for training: float32 NCHW images, int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    validation_is_test: bool

    def to(self, device: torch.device | str) -> Tensors:
        """The same data on ``device`` (MNIST is ~200 MB as float32: it fits on any GPU)."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in self.__dict__.items()}
        return Tensors(**moved)


def _preprocess(x: np.ndarray, spec: DataSpec) -> torch.Tensor:
    if isinstance(spec.preprocessing, Normalize):
        # keras.utils.normalize(x, axis, order) on the raw (N, H, W) array, as notebook 004 did.
        # On uint8 it computes in float64 (np.linalg.norm's dtype); Keras then feeds float32.
        args = spec.preprocessing.normalize
        x64 = x.astype(np.float64)
        norm = np.atleast_1d(np.linalg.norm(x64, args.order, args.axis))
        norm[norm == 0] = 1
        xf = (x64 / np.expand_dims(norm, args.axis)).astype(np.float32)
    else:
        xf = x.astype(np.float32)
        xf /= 255.0
    return torch.from_numpy(np.ascontiguousarray(xf)).unsqueeze(1)  # (N, 1, H, W)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Indices (train, val): `fraction` of each class held out, chosen with `seed`."""
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val.append(idx[: int(round(fraction * len(idx)))])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def prepare_tensors(raw: Any, spec: DataSpec, split_seed: int) -> Tensors:
    """Preprocess a RawDataset and carve out the validation set the spec asks for."""
    x_train, x_test = _preprocess(raw.x_train, spec), _preprocess(raw.x_test, spec)
    y_train = torch.from_numpy(raw.y_train.astype(np.int64))
    y_test = torch.from_numpy(raw.y_test.astype(np.int64))
    if spec.validates_on_test:
        x_val, y_val = x_test, y_test
    else:
        fraction = spec.validation.split  # type: ignore[union-attr]
        tr, va = stratified_split(raw.y_train, fraction, split_seed)
        x_val, y_val = x_train[va], y_train[va]
        x_train, y_train = x_train[tr], y_train[tr]
    return Tensors(x_train, y_train, x_val, y_val, x_test, y_test, tuple(raw.class_names),
                   spec.validates_on_test)


Scheduler = torch.optim.lr_scheduler.LRScheduler


def _fused_supported() -> bool:
    # One fused kernel per step instead of a handful per parameter: the step costs less than
    # the forward pass of small models (torch >= 2.4 has fused SGD/Adam/Adagrad on CPU).
    try:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


_FUSED: dict[str, bool] = {"fused": True} if _fused_supported() else {}


def make_optimizer(spec: _Optimizer, params: Any) -> tuple[torch.optim.Optimizer,
                                                           Scheduler | None]:
    """The torch optimizer that does what the Keras one does (Keras 2 `decay` as a scheduler).

    Torch's update rules are Keras's (Adadelta, RMSprop and Adagrad with Keras 2's ε placement,
    Nadam with Keras 2's 0.96^(0.004·t) momentum schedule) but for two details, which step
    pre-hooks put right: Adam's ε, and SGD momentum when `decay` changes the learning rate.
    """
    o: Any = spec
    lr = o.learning_rate
    if o.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=o.momentum,
                                                     nesterov=o.nesterov, **_FUSED)
    elif o.name == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=(o.beta_1, o.beta_2), eps=o.epsilon,
                               amsgrad=o.amsgrad, **_FUSED)
        keras_eps = o.epsilon

        def adam_epsilon(optimizer: torch.optim.Optimizer, *_: Any) -> None:
            # Keras: w -= lr·√(1-β₂ᵗ)/(1-β₁ᵗ) · m/(√v + ε); torch divides by √v/√(1-β₂ᵗ) + ε.
            # They agree when torch's ε is ε/√(1-β₂ᵗ), t being this step's number.
            for group in optimizer.param_groups:
                t = 1
                for p in group["params"]:
                    if "step" in optimizer.state.get(p, {}):
                        t = int(optimizer.state[p]["step"]) + 1
                        break
                group["eps"] = keras_eps / math.sqrt(1.0 - group["betas"][1] ** t)

        opt.register_step_pre_hook(adam_epsilon)
    elif o.name == "adadelta":
        opt = torch.optim.Adadelta(params, lr=lr, rho=o.rho, eps=o.epsilon)
    elif o.name == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=lr, alpha=o.rho, eps=o.epsilon, momentum=o.momentum,
                                  centered=o.centered)
    elif o.name == "adagrad":
        opt = torch.optim.Adagrad(params, lr=lr, eps=o.epsilon, **_FUSED,
                                  initial_accumulator_value=o.initial_accumulator_value)
    elif o.name == "nadam":
        opt = torch.optim.NAdam(params, lr=lr, betas=(o.beta_1, o.beta_2), eps=o.epsilon)
    else:  # pragma: no cover - the spec's Literal names make this unreachable
        raise ValueError(o.name)
    sched = None
    if o.decay:
        decay = o.decay
        # Keras 2: the step after k steps uses lr / (1 + decay·k).
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 / (1.0 + decay * it))
        if getattr(o, "momentum", 0.0):

            def keras_velocity(optimizer: torch.optim.Optimizer, *_: Any) -> None:
                # Keras keeps v = momentum·v - lr_t·g (lr inside the velocity; SGD, RMSprop);
                # torch keeps b = momentum·b + g and steps by -lr_t·b. When lr changes, scaling b
                # by lr_old/lr_new keeps -lr·b equal to Keras's v, step for step.
                for group in optimizer.param_groups:
                    previous = group.get("keras_previous_lr")
                    if previous is not None and previous != group["lr"]:
                        for p in group["params"]:
                            buf = optimizer.state.get(p, {}).get("momentum_buffer")
                            if buf is not None:
                                buf.mul_(previous / group["lr"])
                    group["keras_previous_lr"] = group["lr"]

            opt.register_step_pre_hook(keras_velocity)
    return opt, sched


def prefer_channels_last(module: torch.nn.Module) -> None:
    """oneDNN's convolutions run ~1.3x faster on CPU with NHWC ("channels last") weights;
    torch then picks that layout for the activations too. Values are unchanged."""
    if any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
        module.to(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(built: BuiltModel, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Keras's ``model.evaluate``: mean cross-entropy (+ regularization losses) and accuracy."""
    module = built.module
    was_training = module.training
    module.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(x), EVAL_BATCH):
        logits = module(x[i:i + EVAL_BATCH])
        yb = y[i:i + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    module.train(was_training)
    reg = built.regularization_loss()
    loss = loss_sum.item() / len(x) + (reg.item() if reg is not None else 0.0)
    return loss, correct.item() / len(x)


@torch.no_grad()
def predict_proba(built: BuiltModel, x: torch.Tensor) -> torch.Tensor:
    built.module.eval()
    return torch.cat([F.softmax(built.module(x[i:i + EVAL_BATCH]), dim=1)
                      for i in range(0, len(x), EVAL_BATCH)])


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


@dataclass
class TrainResult:
    status: str  # "finished" | "diverged"
    history: list[dict[str, float]]
    final: dict[str, float]
    diverged_epoch: int | None
    best_epoch: int
    train_seconds: float
    samples_per_second: float


EpochHook = Callable[[TrainState, torch.optim.Optimizer, Any, torch.Generator], None]
BatchHook = Callable[[int, int], None]


def fit(
    built: BuiltModel,
    data: Tensors,
    train: TrainSpec,
    seed: int,
    *,
    state: TrainState | None = None,
    restore: Callable[[torch.optim.Optimizer, Any, torch.Generator], None] | None = None,
    on_epoch_end: EpochHook | None = None,
    on_batches: BatchHook | None = None,
) -> TrainResult:
    """Train ``built`` on ``data``; return history and final metrics.

    ``state``/``restore`` resume from a checkpoint written by ``on_epoch_end`` (which gets the
    optimizer, scheduler and shuffling generator to save). ``on_batches`` may raise to stop.
    """
    module = built.module
    prefer_channels_last(module)
    opt, sched = make_optimizer(train.optimizer, [p for p in module.parameters()
                                                  if p.requires_grad])
    gen = torch.Generator().manual_seed(seed)  # shuffling has its own stream: resumable
    state = state or TrainState()
    if restore is not None:
        restore(opt, sched, gen)
    x, y, n, bs = data.x_train, data.y_train, len(data.x_train), train.batch_size
    n_batches = math.ceil(n / bs)
    diverged_epoch = None
    es = train.early_stopping
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
            xb, yb = x[idx], y[idx]
            logits = module(xb)
            loss = F.cross_entropy(logits, yb)
            reg = built.regularization_loss()
            if reg is not None:  # Keras adds regularization losses to the training loss
                loss = loss + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train.optimizer.clipnorm:
                torch.nn.utils.clip_grad_norm_(module.parameters(), train.optimizer.clipnorm)
            opt.step()
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
        val_loss, val_acc = evaluate(built, data.x_val, data.y_val)
        state.history.append({"epoch": state.epoch, "loss": train_loss,
                              "accuracy": correct.item() / n, "val_loss": val_loss,
                              "val_accuracy": val_acc, "seconds": time.perf_counter() - t0})
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
        if on_epoch_end is not None:
            on_epoch_end(state, opt, sched, gen)
        if stop_early:
            break
    if diverged_epoch is not None:
        return TrainResult("diverged", state.history, {}, diverged_epoch, state.best_epoch,
                           state.train_seconds, 0.0)
    if train.restore_best and state.best_weights is not None:
        module.load_state_dict(state.best_weights)
    final: dict[str, float] = {}
    for split, xs, ys in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
                          ("test", data.x_test, data.y_test)):
        final[f"{split}_loss"], final[f"{split}_accuracy"] = evaluate(built, xs, ys)
    seen = n * len(state.history)
    sps = seen / state.train_seconds if state.train_seconds > 0 else 0.0
    return TrainResult("finished", state.history, final, None, state.best_epoch,
                       state.train_seconds, sps)
