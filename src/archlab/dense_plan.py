"""Conv-free models over n stacked replicas as batched matrix products: the step of a pack of
MLP repeats (:mod:`archlab.packed`) and, with n = 1, of a single MLP run (:mod:`archlab.train`).

For a model that is a plain stack of Dense layers (with Flatten, activations and Dropout
between them), :class:`DensePlan` runs the n replicas of a pack with one ``baddbmm`` per Dense
layer, instead of ``vmap(functional_call)``. The step then costs about what one replica's step
costs in Python and dispatch, which is what a small MLP's step is made of: measured for the
32-32 MLP at batch 64 on one thread, 5 replicas took 5.1 ms a step under vmap against 1.1 ms
for one separate run (a hand-timed loop of bare steps; the study-level figures are in
docs/packing.md, from ``benchmarks/repeats.py``).

Dense kernels are held as ``[n, in, out]`` (Keras's own kernel layout): ``baddbmm`` with a
contiguous right-hand operand runs about twice as fast on the CPU as with torch's
``[out, in]`` transposed. :class:`archlab.packed.PackedModel` keeps that layout private: what
it hands out per replica (weights, optimizer state) is in torch's layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from archlab.layers._modules import Dropout, dropout_multiplier

__all__ = ["DensePlan", "SingleDensePlan"]


@dataclass(frozen=True)
class _Dense:
    weight: str  # the parameter's name in the model: held as [n, in, out]
    bias: str | None
    act: nn.Module | None


@dataclass(frozen=True)
class _Mask:
    site: int  # index of the dropout site: its mask is handed in


@dataclass(frozen=True)
class _PerSample:
    module: nn.Module  # holds no parameters or buffers: runs on the n·b samples at once


def _stateless(m: nn.Module) -> bool:
    """No parameters, no buffers, no randomness: the same function for every replica."""
    random = type(m).__name__ in ("_GaussianNoise", "Dropout", "Dropout2d", "AlphaDropout")
    return not random and next(m.parameters(), None) is None and next(m.buffers(), None) is None


class DensePlan:
    """The forward pass of a :class:`~torch.nn.Sequential` of Dense blocks and stateless
    layers, over n replicas at once. Build with :meth:`of`; None when the model has any other
    layer (it then runs under vmap)."""

    def __init__(self, steps: Sequence[_Dense | _Mask | _PerSample]) -> None:
        self.steps = list(steps)
        #: parameters held transposed, as ``[n, in, out]``
        self.transposed = frozenset(s.weight for s in self.steps if isinstance(s, _Dense))
        self.fused = self._fusable()

    @classmethod
    def of(cls, template: nn.Module, masked: Sequence[nn.Module]) -> DensePlan | None:
        """The plan for ``template`` (whose dropouts are the ``masked`` modules, in forward
        order), or None when it is not a stack this class can run."""
        if not isinstance(template, nn.Sequential):
            return None
        sites = {id(m): i for i, m in enumerate(masked)}
        steps: list[_Dense | _Mask | _PerSample] = []
        for name, child in template.named_children():
            if id(child) in sites:
                steps.append(_Mask(sites[id(child)]))
            elif type(child).__name__ == "_Block":
                core, act = child.core, child.act
                if (child.pre is not None or child.activity is not None
                        or type(core) is not nn.Linear
                        or (act is not None and not _stateless(act))):
                    return None
                bias = f"{name}.core.bias" if core.bias is not None else None
                steps.append(_Dense(f"{name}.core.weight", bias, act))
            elif _stateless(child):
                steps.append(_PerSample(child))
            else:
                return None
        if not any(isinstance(s, _Dense) for s in steps):
            return None
        return cls(steps)

    def forward(self, leaves: Mapping[str, torch.Tensor], x: torch.Tensor,
                masks: Sequence[torch.Tensor] | None, *, shared: bool,
                tape: list[tuple[Any, ...]] | None = None) -> torch.Tensor:
        """Logits ``[n, b, classes]``. ``x`` is ``[n, b, ...]``, each replica its own batch,
        or with ``shared`` ``[b, ...]``, one batch for all (evaluation). ``masks`` are the
        dropout sites' ``[n, b, ...]`` masks (training), or None (evaluation: dropout is the
        identity). ``tape`` collects what :meth:`train_step`'s backward pass reads."""
        for step in self.steps:
            if isinstance(step, _Dense):
                w, inp = leaves[step.weight], x
                if shared:  # [b, in] @ [n, in, out]: the product broadcasts over replicas
                    x = torch.matmul(x, w)
                    if step.bias is not None:
                        x = x + leaves[step.bias].unsqueeze(1)
                    shared = False
                elif step.bias is not None:
                    x = torch.baddbmm(leaves[step.bias].unsqueeze(1), x, w)
                else:
                    x = torch.bmm(x, w)
                if step.act is not None:  # on [n·b, out]: a softmax's dim 1 is the features
                    x = step.act(x.flatten(0, 1)).view(x.shape)
                if tape is not None:
                    tape.append((step, inp, x))
            elif isinstance(step, _Mask):
                if masks is not None:
                    m = masks[step.site]  # [n] for a rate of 0 or 1: one factor per replica
                    m = m.view(-1, *([1] * (x.dim() - 1))) if m.dim() == 1 else m
                    x = x * m
                    if tape is not None:
                        tape.append((step, m))
            elif shared:
                x = step.module(x)
            else:
                x = step.module(x.flatten(0, 1)).unflatten(0, tuple(x.shape[:2]))
        return x  # `of` admits only plans with a Dense layer: x is [n, b, classes] here

    def _fusable(self) -> bool:
        """Whether :meth:`train_step` can run without autograd (:attr:`fused`): every layer
        after the first Dense is a Dense with a linear, relu, tanh or sigmoid activation, or a
        Dropout."""
        dense = False
        for step in self.steps:
            if isinstance(step, _Dense):
                dense = True
                if step.act is not None and type(step.act) not in _DERIVATIVES:
                    return False
            elif isinstance(step, _PerSample) and dense:
                return False
        return True

    @torch.no_grad()
    def train_step(self, leaves: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                   masks: Sequence[torch.Tensor],
                   regularized: Sequence[tuple[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step's forward and backward pass over n replicas (requires
        :attr:`fused`): each trainable leaf's ``.grad`` is set; returns the per-replica losses
        ``[n]`` (mean cross-entropy plus the replica's L2/L1 penalties) and the logits.

        The backward pass is written out (softmax cross-entropy, then per Dense layer the
        activation's derivative, ``inp^T @ g`` for the kernel, ``g @ W^T`` for the input)
        rather than taken by autograd: for a small MLP the autograd graph's bookkeeping costs
        more than its matrix products (tested against autograd in tests/test_packed.py).
        """
        tape: list[tuple[Any, ...]] = []
        logits = self.forward(leaves, x, masks, shared=False, tape=tape)
        n, b = y.shape
        # Over the class axis as dim 1 of a [n, classes, b] view: the CPU kernel for a short
        # last axis is several times slower (78 vs 17 us for 5 x 64 x 10).
        logp = torch.log_softmax(logits.transpose(1, 2), dim=1).transpose(1, 2)
        losses = -logp.gather(2, y.unsqueeze(2)).squeeze(2).mean(1)
        g = logp.exp_()  # d(mean CE)/d logits = (softmax - onehot) / b
        g.scatter_add_(2, y.unsqueeze(2), torch.full((n, b, 1), -1.0, dtype=g.dtype,
                                                     device=g.device)).div_(b)
        grads: dict[str, torch.Tensor] = {}
        first = next(i for i, e in enumerate(tape) if isinstance(e[0], _Dense))
        for i in range(len(tape) - 1, first - 1, -1):
            entry = tape[i]
            if isinstance(entry[0], _Mask):
                g = g * entry[1]
                continue
            step, inp, out = entry
            if type(step.act) is nn.ReLU:  # autograd's own kernel: no bool mask made
                g = torch.ops.aten.threshold_backward(g, out, 0.0)
            elif step.act is not None:
                g = g * _DERIVATIVES[type(step.act)](out)
            w = leaves[step.weight]
            grads[step.weight] = torch.bmm(inp.transpose(1, 2), g)  # [n, in, out]: the leaf's
            if step.bias is not None:
                grads[step.bias] = g.sum(1)
            if i > first:
                g = torch.bmm(g, w.transpose(1, 2))
        for name, reg in regularized:  # Keras adds l2·Σw² (+ l1·Σ|w|) per replica
            p = leaves[name]
            flat = p.flatten(1)
            if reg.l2:
                losses = losses + reg.l2 * flat.square().sum(1)
                grads[name] = grads[name] + (2.0 * reg.l2) * p
            if reg.l1:
                losses = losses + reg.l1 * flat.abs().sum(1)
                grads[name] = grads[name] + reg.l1 * p.sign()
        for name, grad in grads.items():
            if leaves[name].requires_grad:
                leaves[name].grad = grad
        return losses, logits


#: Each supported activation's derivative, from its output.
_DERIVATIVES: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda out: (out > 0).to(out.dtype),  # train_step uses threshold_backward
    nn.Tanh: lambda out: 1.0 - out.square(),
    nn.Sigmoid: lambda out: out * (1.0 - out),
}


class SingleDensePlan:
    """The dense plan for one run (n = 1): a training step of a stack of Dense layers whose
    forward and backward pass are written out, for :func:`archlab.train.fit`.

    It calls the very kernels autograd calls for ``module(x)``, the cross-entropy and its
    ``backward()`` (``addmm`` with the kernel transposed, ``log_softmax`` and ``nll_loss``
    and their backward functions, ``threshold_backward`` for ReLU, ``g.t() @ x`` for a kernel's
    gradient, ``g @ W`` for the layer below, ``g.sum(0)`` for a bias, Dropout's multiplier),
    on the same tensors in the same layouts, so each parameter's ``.grad`` is bit for bit what
    autograd gives (tested against it in tests/test_train.py), with none of autograd's graph
    and no ``nn.Module`` calls per layer. A kernel with an L2 *or* an L1 penalty gets the
    penalty's gradient added as autograd adds it (one sum of two terms: the order does not
    matter); a weight with both, an activity regularizer or any layer :class:`DensePlan`
    does not fuse leaves the run to autograd (:meth:`of` returns None)."""

    def __init__(self, module: nn.Module, plan: DensePlan, dropouts: Sequence[nn.Module],
                 regularized: Sequence[tuple[nn.Parameter, Any]]) -> None:
        self.plan = plan
        self.dropouts = list(dropouts)
        self.first = next(i for i, s in enumerate(plan.steps) if isinstance(s, _Dense))
        self.params = {k: module.get_parameter(k) for s in plan.steps
                       if isinstance(s, _Dense) for k in (s.weight, s.bias) if k is not None}
        self.regularized = list(regularized)
        self.one: torch.Tensor | None = None  # d loss / d loss, on the data's device

    @classmethod
    def of(cls, built: Any) -> SingleDensePlan | None:
        """The plan for ``built`` (a :class:`~archlab.model.BuiltModel`), or None when its
        step must go through autograd."""
        module = built.module
        if built.activity or any(reg.l1 and reg.l2 for _, reg in built.regularized):
            return None
        if any(not p.requires_grad for p in module.parameters()):
            return None
        dropouts = [m for m in module.modules() if type(m) is Dropout]  # archlab's
        if any(isinstance(m, nn.Dropout | nn.Dropout2d | nn.AlphaDropout)
               and type(m) is not Dropout for m in module.modules()):
            return None  # another draw than dropout_multiplier's
        plan = DensePlan.of(module, dropouts)
        if plan is None or not plan.fused:
            return None
        return cls(module, plan, dropouts, built.regularized)

    @torch.no_grad()
    def train_step(self, x: torch.Tensor, y: torch.Tensor,
                   reg: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward pass of one batch: every parameter's ``.grad`` is set; returns
        the loss (cross-entropy, plus ``reg``, the regularization loss, when given) and the
        logits, as ``fit``'s autograd step computes them."""
        aten = torch.ops.aten
        params = self.params
        tape: list[tuple[Any, ...]] = []
        h = x
        for i, step in enumerate(self.plan.steps):
            if isinstance(step, _Dense):
                w = params[step.weight]
                inp = h
                h = torch.addmm(params[step.bias], h, w.t()) if step.bias is not None \
                    else torch.mm(h, w.t())
                act = type(step.act)
                if act is nn.ReLU:  # what nn.ReLU, nn.Tanh and nn.Sigmoid call
                    h = torch.relu(h)
                elif act is nn.Tanh:
                    h = torch.tanh(h)
                elif act is nn.Sigmoid:
                    h = torch.sigmoid(h)
                tape.append((step, inp, h))
            elif isinstance(step, _Mask):
                p = self.dropouts[step.site].p
                if not self.dropouts[step.site].training or p == 0.0:
                    continue
                m = dropout_multiplier(h, p) if p < 1.0 else torch.zeros((), dtype=h.dtype)
                h = h * m
                if i > self.first:
                    tape.append((step, m))
            else:
                h = step.module(h)
        logits = h
        logp = torch.log_softmax(logits, 1)
        loss, total = aten.nll_loss_forward(logp, y, None, 1, -100)
        if self.one is None or self.one.device != logp.device:
            self.one = torch.ones((), dtype=logp.dtype, device=logp.device)
        g = aten.nll_loss_backward(self.one, logp, y, None, 1, -100, total)
        g = aten._log_softmax_backward_data(g, logp, 1, logp.dtype)
        for j in range(len(tape) - 1, -1, -1):
            entry = tape[j]
            if isinstance(entry[0], _Mask):
                g = g * entry[1]
                continue
            step, inp, out = entry
            act = type(step.act)
            if act is nn.ReLU:
                g = aten.threshold_backward(g, out, 0)
            elif act is nn.Tanh:
                g = aten.tanh_backward(g, out)
            elif act is nn.Sigmoid:
                g = aten.sigmoid_backward(g, out)
            w = params[step.weight]
            w.grad = g.t().mm(inp)
            if step.bias is not None:
                params[step.bias].grad = g.sum(0)
            if j > 0:
                g = g.mm(w)
        for p, r in self.regularized:  # l2·Σw² or l1·Σ|w|: autograd's d/dw, added to .grad
            term = (2.0 * p) * r.l2 if r.l2 else p.sgn() * r.l1
            p.grad = p.grad + term
        if reg is not None:
            loss = loss + reg
        return loss, logits
