"""The packed model: n replicas of one built model, stacked, and which models can be packed
(:func:`pack_blocker`). See :mod:`archlab.packed`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from archlab.dense_plan import DensePlan
from archlab.engine import EVAL_BATCH
from archlab.layers import apply_max_norm
from archlab.layers._modules import dropout_multiplier
from archlab.model import BuiltModel
from archlab.spec import Study, TrainSpec

__all__ = ["PackedModel", "pack_blocker"]

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
    channels_last: bool  # the input's layout in a separate run: masks fill memory order


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
            if isinstance(m, nn.Dropout | nn.Dropout2d):  # archlab's Dropout subclasses it
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
        order, as a separate run draws them: archlab's Dropout by
        :func:`~archlab.layers._modules.dropout_multiplier` in the input's memory layout,
        SpatialDropout2D as ``F.dropout2d`` does (``bernoulli_(1-p)`` then ``/(1-p)``)."""
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
                if site.module.feature:
                    masks.append(noise.bernoulli_(1.0 - p, generator=g).div_(1.0 - p))
                else:
                    masks.append(dropout_multiplier(noise, p, g).contiguous())
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
    def evaluate(self, x: torch.Tensor, y: torch.Tensor,
                 pre: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> list[tuple[float, float]]:
        """:func:`archlab.train.evaluate` for every replica: (loss, accuracy) each (``pre``
        makes a chunk of images the model's input; None: ``x`` already is)."""
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
            xb = x[i:i + EVAL_BATCH]
            logits = run(self.params, self.buffers, pre(xb) if pre is not None else xb)
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
