"""Packed repeats: n seeds of one model trained as one vmapped model, each replica computing
what a separate :func:`archlab.train.fit` with its seed computes.

Each replica is built by :func:`archlab.model.build_model` with its own seed (the same initial
weights, exactly), then the replicas' parameters and buffers are stacked along a new first
dimension and one template module is called under :func:`torch.func.vmap`. Per replica, as in a
separate run:

- shuffling: its own ``torch.Generator(seed)`` permutation per epoch;
- dropout: its own generator, seeded as ``execute_run`` seeds the global one, drawing the same
  masks in the same forward order (``Dropout``, ``SpatialDropout2D``: bit-identical masks);
- the loss: cross-entropy plus its own L2/L1 regularization; the packed loss is the sum of the
  replicas' losses, so each replica's gradient is its own (replicas share no parameter);
- BatchNormalization: batch statistics and running statistics per replica (vmap updates each
  replica's slice of the stacked buffers);
- ``clipnorm``: the norm over the replica's own gradients; ``max_norm`` constraints per
  replica;
- the optimizer: one torch optimizer over the stacked parameters. Every optimizer archlab has
  (SGD, momentum, Nesterov, Adam, AMSGrad, Adadelta, RMSprop, Adagrad, Nadam) updates element
  by element, with a step count and learning rate that all replicas share (Keras 2 ``decay``
  included), so each replica's slice gets exactly its own update.

Arithmetic is batched (vmap's batched matmul and conv), so results agree with separate runs to
float rounding, not bit for bit. What cannot be packed (:func:`pack_blocker`): early stopping
(replicas would stop at different epochs), GaussianNoise (its noise stream cannot be split per
replica), activity regularizers (their penalty is kept on the layer), and any training option
this module does not know.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from archlab.data import Tensors
from archlab.layers import apply_max_norm
from archlab.model import BuiltModel
from archlab.optimizers import make_optimizer
from archlab.spec import Study, TrainSpec
from archlab.stacked import DensePlan
from archlab.store import RunStatus
from archlab.train import (
    EVAL_BATCH,
    BatchHook,
    EpochHook,
    Resume,
    TrainResult,
    TrainState,
    prefer_channels_last,
)

__all__ = ["PackedModel", "fit_packed", "pack_blocker"]

#: TrainSpec fields whose every value packing reproduces. Another field with a non-default value
#: (one added later: augmentation, a schedule) makes :func:`pack_blocker` say "separate runs".
_KNOWN_TRAIN_FIELDS = {"optimizer", "batch_size", "epochs", "loss", "repeats", "restore_best",
                       "early_stopping"}


def pack_blocker(study: Study, model: str) -> str | None:
    """Why ``model``'s repeats cannot be trained packed, or None when they can."""
    train = study.train_for(model)
    if train.early_stopping is not None:
        return "early stopping (replicas may stop at different epochs)"
    defaults = TrainSpec()
    for name in type(train).model_fields:
        if name not in _KNOWN_TRAIN_FIELDS and getattr(train, name) != getattr(defaults, name):
            return f"train.{name} (not reproduced per replica)"
    from archlab.model import build_model

    built = build_model(study, model, device="meta")
    if getattr(built, "activity", None):
        return "activity_regularizer (its penalty is kept on the layer, not per replica)"
    for m in built.module.modules():
        if type(m).__name__ == "_GaussianNoise":
            return "GaussianNoise (its noise stream is not split per replica)"
    return None


class _MaskedDropout(nn.Module):
    """Dropout / SpatialDropout2D whose mask is handed in (one per replica, drawn outside vmap
    from the replica's own generator exactly as torch's dropout draws it)."""

    def __init__(self, p: float, feature: bool) -> None:
        super().__init__()
        self.p = p
        self.feature = feature
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        assert self.mask is not None, "packed dropout called without its mask"
        return x * self.mask


@dataclass
class _DropoutSite:
    module: _MaskedDropout
    shape: tuple[int, ...]  # per sample (noise shape for SpatialDropout2D)
    channels_last: bool  # the input's layout in a separate run: bernoulli_ fills memory order


class PackedModel:
    """n replicas of one built model, stacked: ``params[name]`` is ``[n, *shape]``."""

    def __init__(self, builts: Sequence[BuiltModel]) -> None:
        first = builts[0].module
        self.builts = list(builts)
        self.n = len(builts)
        self.template = copy.deepcopy(first)
        self.sites = self._mask_dropout(first)
        # A stack of Dense layers runs as batched matmuls, anything else under vmap.
        self.plan = DensePlan.of(self.template, [s.module for s in self.sites])
        self.transposed = self.plan.transposed if self.plan is not None else frozenset()
        names = dict((id(p), k) for k, p in first.named_parameters())
        #: what the optimizer updates: ``[n, *shape]``, or ``[n, in, out]`` for transposed
        #: Dense kernels (``self.transposed``)
        self.leaves: dict[str, torch.Tensor] = {}
        for k, p in first.named_parameters():
            stacked = torch.stack([b.module.get_parameter(k).detach() for b in builts])
            self.leaves[k] = self.to_leaf(k, stacked).requires_grad_(p.requires_grad)
        with torch.no_grad():  # views in each replica's own layout, [n, *shape]
            self.params = {k: self.from_leaf(k, v) for k, v in self.leaves.items()}
        self.buffers = {k: torch.stack([b.module.get_buffer(k) for b in builts])
                        for k, _ in first.named_buffers()}
        self.regularized = [(names[id(p)], reg) for p, reg in builts[0].regularized]
        self.constrained = [(names[id(p)], tuple(d + 1 if d >= 0 else d for d in dims))
                            for p, dims in builts[0].constrained]
        self.template.to("meta")  # its values come from params/buffers, never its own

    def to_leaf(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        """``[n, *shape]`` in the replicas' layout -> the leaf's layout."""
        return stacked.transpose(1, 2).contiguous() if name in self.transposed else stacked

    def from_leaf(self, name: str, leaf: torch.Tensor) -> torch.Tensor:
        """A leaf-layout tensor ``[n, ...]`` -> a view in the replicas' layout."""
        return leaf.transpose(1, 2) if name in self.transposed else leaf

    def _mask_dropout(self, first: nn.Module) -> list[_DropoutSite]:
        """Swap the template's dropouts for masked ones; record each one's call order, input
        shape and layout from one forward pass of a separate-run module."""
        probe = copy.deepcopy(first)  # in the layout fit gave it: that decides the mask order
        seen: list[tuple[str, tuple[int, ...], bool]] = []
        names = {id(m): k for k, m in probe.named_modules()}
        hooks = []
        for m in probe.modules():
            if type(m) in (nn.Dropout, nn.Dropout2d):
                def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
                    x = args[0]
                    cl = x.dim() == 4 and not x.is_contiguous() and \
                        x.is_contiguous(memory_format=torch.channels_last)
                    seen.append((names[id(mod)], tuple(x.shape[1:]), cl))
                hooks.append(m.register_forward_pre_hook(hook))
        if not hooks:
            return []
        shape = getattr(self.builts[0], "input_shape", None)
        h, w, c = shape  # type: ignore[misc]
        probe.eval()  # shapes only: no randomness drawn
        with torch.no_grad():
            probe(torch.zeros(2, c, h, w))
        for hk in hooks:
            hk.remove()
        sites = []
        for name, per_sample, cl in seen:
            old = self.template.get_submodule(name)
            feature = isinstance(old, nn.Dropout2d)
            new = _MaskedDropout(float(old.p), feature)  # type: ignore[arg-type]
            parent, _, leaf = name.rpartition(".")
            setattr(self.template.get_submodule(parent) if parent else self.template, leaf, new)
            noise = (per_sample[0], 1, 1) if feature else per_sample
            sites.append(_DropoutSite(new, noise, cl and not feature))
        return sites

    def draw_masks(self, batch: int, gens: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """Each site's masks ``[n, batch, ...]``, replica i's drawn from ``gens[i]`` in forward
        order, as ``F.dropout`` draws them (``empty_like(x).bernoulli_(1-p)`` then ``/(1-p)``)."""
        if not self.sites:
            return []
        per_replica: list[list[torch.Tensor]] = []
        for g in gens:
            masks = []
            for site in self.sites:
                p = site.module.p
                if not 0.0 < p < 1.0:  # F.dropout: the identity, or zeros for a rate of 1
                    masks.append(torch.zeros(()) if p >= 1.0 else torch.ones(()))
                    continue
                fmt = torch.channels_last if site.channels_last else torch.contiguous_format
                noise = torch.empty((batch, *site.shape), memory_format=fmt)
                masks.append(noise.bernoulli_(1.0 - p, generator=g).div_(1.0 - p).contiguous())
            per_replica.append(masks)
        return [torch.stack([r[k] for r in per_replica]) for k in range(len(self.sites))]

    def _reg(self, params: dict[str, torch.Tensor]) -> torch.Tensor | None:
        terms = []
        for name, reg in self.regularized:
            p = params[name]
            if reg.l2:
                terms.append(reg.l2 * p.square().sum())
            if reg.l1:
                terms.append(reg.l1 * p.abs().sum())
        return torch.stack(terms).sum() if terms else None

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
             masks: list[torch.Tensor], x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for site, mask in zip(self.sites, masks, strict=True):
            site.module.mask = mask
        try:
            logits = functional_call(self.template, (params, buffers), (x,))
        finally:
            for site in self.sites:
                site.module.mask = None
        loss = F.cross_entropy(logits, y)
        reg = self._reg(params)
        if reg is not None:
            loss = loss + reg
        return loss, logits

    def _reg_stacked(self) -> torch.Tensor | None:
        """:meth:`_reg` of every replica at once: ``[n]``."""
        terms = []
        for name, reg in self.regularized:
            p = self.leaves[name].flatten(1)
            if reg.l2:
                terms.append(reg.l2 * p.square().sum(1))
            if reg.l1:
                terms.append(reg.l1 * p.abs().sum(1))
        return torch.stack(terms).sum(0) if terms else None

    def train_step_forward(self, x: torch.Tensor, y: torch.Tensor,
                           masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-replica losses ``[n]`` and logits ``[n, b, classes]``; x ``[n, b, ...]``."""
        if self.plan is not None:
            logits = self.plan.forward(self.leaves, x, masks, shared=False)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            loss = loss.view(y.shape).mean(1)
            reg = self._reg_stacked()
            return (loss + reg if reg is not None else loss), logits
        self.template.train()
        return vmap(self._one, in_dims=(0, 0, 0, 0, 0), randomness="error")(
            self.params, self.buffers, masks, x, y)

    def train_step(self, x: torch.Tensor, y: torch.Tensor,
                   masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`train_step_forward` and its backward pass: every trainable leaf's ``.grad``
        holds its gradient (a stack of Dense layers without autograd, where it can)."""
        if self.plan is not None and self.plan.fused:  # sets every .grad: nothing to zero
            return self.plan.train_step(self.leaves, x, y, masks, self.regularized)
        for leaf in self.leaves.values():
            leaf.grad = None
        losses, logits = self.train_step_forward(x, y, masks)
        losses.sum().backward()  # replicas share no parameter: each gets its own gradient
        return losses.detach(), logits.detach()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[float, float]]:
        """:func:`archlab.train.evaluate` for every replica: (loss, accuracy) each."""
        self.template.eval()

        def logits_of(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                      xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (xb,))

        def planned(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    xb: torch.Tensor) -> torch.Tensor:
            assert self.plan is not None
            return self.plan.forward(self.leaves, xb, None, shared=True)

        run = planned if self.plan is not None else vmap(logits_of, in_dims=(0, 0, None))
        loss_sum = torch.zeros(self.n, dtype=torch.float64, device=x.device)
        correct = torch.zeros(self.n, dtype=torch.int64, device=x.device)
        for i in range(0, len(x), EVAL_BATCH):
            logits = run(self.params, self.buffers, x[i:i + EVAL_BATCH])
            yb = y[i:i + EVAL_BATCH]
            ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(self.n), reduction="none")
            loss_sum += ce.view(self.n, -1).double().sum(1)
            correct += (logits.argmax(2) == yb).sum(1)
        out = []
        for r in range(self.n):
            reg = self._reg({k: v[r] for k, v in self.params.items()})
            loss = loss_sum[r].item() / len(x) + (reg.item() if reg is not None else 0.0)
            out.append((loss, correct[r].item() / len(x)))
        return out

    @torch.no_grad()
    def clip_grad_norm(self, max_norm: float) -> None:
        """``clip_grad_norm_`` per replica: each replica's norm over its own gradients."""
        grads = [p.grad for p in self.leaves.values() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads], 1)
        total = torch.linalg.vector_norm(norms, 2, dim=1)
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))

    @torch.no_grad()
    def apply_constraints(self) -> None:
        for name, dims in self.constrained:
            apply_max_norm(self.params[name], dims)

    @torch.no_grad()
    def materialize(self, r: int) -> BuiltModel:
        """Replica ``r``'s own built model, holding its current weights and buffers."""
        built = self.builts[r]
        for k, v in self.params.items():
            built.module.get_parameter(k).copy_(v[r])
        for k, v in self.buffers.items():
            built.module.get_buffer(k).copy_(v[r])
        return built

    @torch.no_grad()
    def load_replica(self, r: int, state: dict[str, torch.Tensor]) -> None:
        """Put a state_dict (replica r's best weights) back into the stack."""
        for k, v in self.params.items():
            v[r].copy_(state[k])
        for k, v in self.buffers.items():
            v[r].copy_(state[k])


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
    try:
        prefer_channels_last(built.module, built.input_shape,  # type: ignore[call-arg]
                             train.batch_size)
    except TypeError:  # the older signature: (module)
        prefer_channels_last(built.module)


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
    x, y, size, bs = data.x_train, data.y_train, len(data.x_train), train.batch_size
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
            xb = x.index_select(0, flat).view(*idx.shape, *x.shape[1:])
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
        vals = pack.evaluate(data.x_val, data.y_val)
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
        for r, (loss, acc) in enumerate(pack.evaluate(xs, ys)):
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
