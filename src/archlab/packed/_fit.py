"""The packed trainer: :func:`fit_packed` trains n replicas as one :class:`PackedModel`,
each computing what a separate :func:`archlab.train.fit` with its seed computes."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from archlab.data import Tensors
from archlab.layout import prefer_channels_last
from archlab.model import BuiltModel
from archlab.optim import make_optimizer
from archlab.packed._model import PackedModel
from archlab.spec import TrainSpec
from archlab.store import RunStatus
from archlab.train import (
    BatchHook,
    EpochHook,
    Resume,
    TrainResult,
    TrainState,
)

__all__ = ["fit_packed"]


class _ReplicaOptimizer:
    """Replica r's view of the packed optimizer: ``state_dict()`` is what the replica's own
    optimizer in a separate run would return (what :func:`save_checkpoint` stores)."""

    def __init__(self, opt: torch.optim.Optimizer, pack: PackedModel, names: list[str],
                 r: int) -> None:
        self.opt, self.pack, self.names, self.r = opt, pack, names, r

    def state_dict(self) -> dict[str, Any]:
        sd = self.opt.state_dict()
        shapes = {i: tuple(self.pack.leaves[k].shape) for i, k in enumerate(self.names)}
        state = {}
        for pid, per_param in sd["state"].items():
            name = self.names[pid]
            state[pid] = {k: (self.pack.from_leaf(name, v)[self.r].contiguous()
                              if isinstance(v, torch.Tensor) and tuple(v.shape) == shapes[pid]
                              else v)
                          for k, v in per_param.items()}
        return {"state": state, "param_groups": sd["param_groups"]}


def _stack_optimizer_state(opt: torch.optim.Optimizer, pack: PackedModel, names: list[str],
                           replicas: list[torch.optim.Optimizer]) -> None:
    """Load the replicas' own (resumed) optimizer states into the packed optimizer."""
    sds = [o.state_dict() for o in replicas]
    state: dict[int, dict[str, Any]] = {}
    for pid in sds[0]["state"]:
        state[pid] = {}
        for k, v in sds[0]["state"][pid].items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                stacked = torch.stack([sd["state"][pid][k] for sd in sds])
                state[pid][k] = pack.to_leaf(names[pid], stacked)
            else:
                state[pid][k] = v
    opt.load_state_dict({"state": state, "param_groups": sds[0]["param_groups"]})


def _layout_as_fit(built: BuiltModel, train: TrainSpec) -> None:
    """Give the replica's module the memory layout fit would give it (a checkpoint records
    it; dropout masks are drawn in its memory order)."""
    prefer_channels_last(built.module, built.input_shape, train.batch_size)


def fit_packed(
    builts: Sequence[BuiltModel],
    data: Tensors,
    train: TrainSpec,
    seeds: Sequence[int],
    *,
    resumes: Sequence[Resume | None] | None = None,
    on_epoch_end: Sequence[EpochHook | None] | None = None,
    on_batches: BatchHook | None = None,
) -> list[TrainResult]:
    """Train ``builts[i]`` with ``seeds[i]`` for every i, as one packed model; return each
    replica's result, as :func:`archlab.train.fit` would for it.

    ``resumes[i]`` and ``on_epoch_end[i]`` are replica i's ``fit`` hooks: the optimizer,
    scheduler and generator they get are replica i's own (views of the packed ones), so the
    checkpoints they write are a separate run's. Every resumed replica must be at the same
    epoch (ValueError otherwise). After return each ``builts[i].module`` holds replica i's
    final weights (the best epoch's where ``restore_best``).
    """
    n = len(builts)
    if n != len(seeds) or n < 1:
        raise ValueError("one seed per replica")
    # Seeds and resumes first: each replica's own optimizer, scheduler and generators, exactly
    # as fit makes them, restored from its checkpoint where it has one.
    gens, drop_gens, states, replica_opts = [], [], [], []
    for r, built in enumerate(builts):
        _layout_as_fit(built, train)
        opt_r, sched_r = make_optimizer(train.optimizer, [p for p in built.module.parameters()
                                                          if p.requires_grad])
        gen = torch.Generator().manual_seed(seeds[r])
        resume = resumes[r] if resumes is not None else None
        if resume is not None:
            state = resume(opt_r, sched_r, gen)
            drop = torch.Generator()
            drop.set_state(torch.get_rng_state())  # the checkpoint's dropout stream
        else:
            state = TrainState()
            drop = torch.Generator().manual_seed(seeds[r])
        gens.append(gen)
        drop_gens.append(drop)
        states.append(state)
        replica_opts.append((opt_r, sched_r))
    if len({s.epoch for s in states}) != 1:
        raise ValueError("packed replicas must resume from the same epoch")
    pack = PackedModel(builts)
    names = [k for k, p in pack.leaves.items() if p.requires_grad]
    opt, sched = make_optimizer(train.optimizer, [pack.leaves[k] for k in names])
    if states[0].epoch > 0:
        _stack_optimizer_state(opt, pack, names, [o for o, _ in replica_opts])
        if sched is not None and replica_opts[0][1] is not None:
            sched.load_state_dict(replica_opts[0][1].state_dict())
    views = [_ReplicaOptimizer(opt, pack, names, r) for r in range(n)]
    x, y, size, bs, pre = data.x_train, data.y_train, len(data.x_train), train.batch_size, data.pre
    n_batches = math.ceil(size / bs)
    diverged: list[int | None] = [None] * n
    done = [False] * n
    epoch = states[0].epoch
    while epoch < train.epochs and not all(done):
        t0 = time.perf_counter()
        loss_sum = torch.zeros(n, dtype=torch.float64, device=x.device)
        correct = torch.zeros(n, dtype=torch.int64, device=x.device)
        perms = torch.stack([torch.randperm(size, generator=g) for g in gens]).to(x.device)
        for b in range(n_batches):
            idx = perms[:, b * bs:(b + 1) * bs]
            flat = idx.flatten()  # index_select: a third of advanced indexing's time here
            xb = pre(x.index_select(0, flat))  # float NCHW, made on the training device
            xb = xb.reshape(*idx.shape, *xb.shape[1:])
            yb = y.index_select(0, flat).view(idx.shape)
            masks = [m.to(x.device) for m in pack.draw_masks(idx.shape[1], drop_gens)]
            losses, logits = pack.train_step(xb, yb, masks)  # sets each leaf's .grad
            if train.optimizer.clipnorm:
                pack.clip_grad_norm(train.optimizer.clipnorm)
            opt.step()
            pack.apply_constraints()
            if sched is not None:
                sched.step()
            loss_sum.add_(losses.double(), alpha=idx.shape[1])
            correct.add_((logits.argmax(2) == yb).sum(1))
            if on_batches is not None and (b % 20 == 19 or b == n_batches - 1):
                on_batches(b + 1, n_batches)
        train_losses = (loss_sum / size).tolist()
        accs = (correct.double() / size).tolist()
        epoch += 1
        live = [r for r in range(n) if not done[r]]
        vals = pack.evaluate(data.x_val, data.y_val, pre)
        seconds = (time.perf_counter() - t0) / len(live)  # the pack's time, shared out
        for r in live:
            st = states[r]
            st.train_seconds += seconds
            st.epoch = epoch
            if not math.isfinite(train_losses[r]):
                diverged[r] = epoch
                done[r] = True
                st.history.append({"epoch": epoch, "loss": train_losses[r],
                                   "accuracy": accs[r], "val_loss": math.nan,
                                   "val_accuracy": math.nan, "seconds": seconds})
                continue
            val_loss, val_acc = vals[r]
            row = {"epoch": epoch, "loss": train_losses[r], "accuracy": accs[r],
                   "val_loss": val_loss, "val_accuracy": val_acc}
            if getattr(sched, "recorded", False):  # a learning-rate schedule: logged as fit does
                row["lr"] = sched.current()  # type: ignore[union-attr]
            st.history.append({**row, "seconds": seconds})
            if val_loss < st.best_val_loss:  # no early stopping here: monitor is val_loss
                st.best_val_loss, st.best_epoch, st.wait = val_loss, epoch, 0
                if train.restore_best:
                    st.best_weights = copy.deepcopy(pack.materialize(r).module.state_dict())
            else:
                st.wait += 1
            hook = on_epoch_end[r] if on_epoch_end is not None else None
            if hook is not None:
                pack.materialize(r)
                torch.set_rng_state(drop_gens[r].get_state())  # saved as the dropout stream
                hook(st, views[r], sched, gens[r])  # type: ignore[arg-type]
    results: list[TrainResult] = []
    for r in range(n):
        st = states[r]
        if train.restore_best and st.best_weights is not None and diverged[r] is None:
            pack.load_replica(r, st.best_weights)
    finals: list[dict[str, float]] = [{} for _ in range(n)]
    for split, xs, ys in (("train", data.x_train, data.y_train),
                          ("val", data.x_val, data.y_val),
                          ("test", data.x_test, data.y_test)):
        for r, (loss, acc) in enumerate(pack.evaluate(xs, ys, pre)):
            finals[r][f"{split}_loss"], finals[r][f"{split}_accuracy"] = loss, acc
    for r in range(n):
        st = states[r]
        pack.materialize(r)
        builts[r].module.train()
        if diverged[r] is not None:
            results.append(TrainResult(RunStatus.DIVERGED, st.history, {}, diverged[r],
                                       st.best_epoch, st.train_seconds, 0.0))
            continue
        seen = size * len(st.history)
        sps = seen / st.train_seconds if st.train_seconds > 0 else 0.0
        results.append(TrainResult(RunStatus.FINISHED, st.history, finals[r], None,
                                   st.best_epoch, st.train_seconds, sps))
    return results
