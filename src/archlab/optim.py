"""The torch optimizer each Keras optimizer spec (:mod:`archlab.optimizers`) builds: Keras 2
rules for Adadelta's learning rate and `decay`, Keras's epsilon placement and momentum under a
changing rate, fused steps where torch has them; and one :class:`LearningRate` per run that
drives schedules, decay and ReduceLROnPlateau, whose state the checkpoint keeps."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from archlab.lazy import torch
from archlab.optimizers import LRSchedule, ReduceLROnPlateau

__all__ = ["DirectStep", "LearningRate", "make_optimizer"]


@functools.cache
def _fused_supported() -> bool:
    # One fused kernel per step instead of a handful per parameter: the step costs less than
    # the forward pass of small models (torch >= 2.4 has fused SGD/Adam/Adagrad on CPU).
    # Asked when the first optimizer is built, not on import: the trial construction imports
    # torch._dynamo (seconds), which a study that is only read or validated never needs.
    try:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def _fused() -> dict[str, bool]:
    return {"fused": True} if _fused_supported() else {}


class LearningRate:
    """The learning rate of every optimizer step, as Keras computes it: the constant or the
    schedule's value at the step count, Keras 2's ``decay`` (``lr / (1 + decay·k)`` after k
    steps), and ReduceLROnPlateau's reductions at epoch ends. Written into the optimizer's
    param groups after each step; its whole state is :meth:`state_dict` (JSON), so a resumed
    run continues with the same rates."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: Any,
                 plateau: ReduceLROnPlateau | None = None) -> None:
        self.optimizer = optimizer
        self.schedule: LRSchedule | None = spec.learning_rate if isinstance(
            spec.learning_rate, LRSchedule) else None
        self.decay: float = spec.decay
        self.plateau = plateau
        self.iterations = 0  # optimizer steps taken
        # The settable rate (Keras's optimizer.learning_rate); ReduceLROnPlateau lowers it.
        self.lr: float = 0.0 if self.schedule is not None else float(spec.learning_rate)
        self.best: float | None = None  # ReduceLROnPlateau's best, wait and cooldown counter
        self.wait = 0
        self.cooldown_counter = 0
        self._apply()

    @property
    def recorded(self) -> bool:
        """Whether the rate moves in ways the history should show (a schedule, a plateau)."""
        return self.schedule is not None or self.plateau is not None

    def current(self) -> float:
        """The rate of the next optimizer step."""
        k = self.iterations
        lr = self.schedule(k) if self.schedule is not None else self.lr
        # Keras 2's decay, in torch LambdaLR's arithmetic (base · factor): the same floats.
        return lr * (1.0 / (1.0 + self.decay * k)) if self.decay else lr

    def _apply(self) -> None:
        lr = self.current()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        """After each optimizer step."""
        self.iterations += 1
        self._apply()

    def epoch_end(self, logs: dict[str, float]) -> None:
        """Keras 3's ReduceLROnPlateau.on_epoch_end on this epoch's ``logs``."""
        p = self.plateau
        if p is None:
            return
        current = logs[p.monitor]
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        # Keras: an improvement beats the best by more than min_delta (best starts unset).
        if self.best is None or (current + p.min_delta < self.best if p.lower_is_better
                                 else current - p.min_delta > self.best):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= p.patience:
                # Keras's learning rate is a float32 variable: it reads, compares and stores
                # float32 values, so the rates and the min_lr test are those floats.
                old = float(np.float32(self.lr))
                if old > np.float32(p.min_lr):
                    self.lr = float(np.float32(max(old * p.factor, p.min_lr)))
                    self.cooldown_counter = p.cooldown
                    self.wait = 0
                    self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "lr": self.lr, "best": self.best,
                "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if sorted(state) != sorted(self.state_dict()):
            raise KeyError(f"learning-rate state with keys {sorted(state)}")
        self.iterations, self.lr, self.best = state["iterations"], state["lr"], state["best"]
        self.wait, self.cooldown_counter = state["wait"], state["cooldown_counter"]
        self._apply()


class DirectStep:
    """``opt.step()`` for a fused SGD or Adam over one parameter group, with the wrapper's
    Python left out: the step pre-hooks (Adam's ε, the Keras velocity), then the very fused
    kernel call ``step`` makes, with the same arguments, so the update is bit for bit the
    same. For a small MLP the wrapper (profiling scope, grouping tensors by device and dtype,
    state look-ups per parameter) costs about three times the kernel (39 against 11 us a step
    for the 32-32 MLP on one thread).

    The first call, any call where a parameter has no gradient, and any optimizer with other
    hooks go through ``opt.step()`` itself (which creates the state the kernel updates in
    place: checkpoints read it as usual). Build it after a resume has loaded the optimizer's
    state (``load_state_dict`` replaces the state tensors)."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt
        self.params: list[Any] = []
        self.state: list[list[Any]] = []
        group = opt.param_groups[0] if len(opt.param_groups) == 1 else {}
        self.kind = None
        if group.get("fused") and not group.get("maximize") and not group.get("differentiable"):
            if type(opt) is torch.optim.SGD:
                self.kind = "sgd"
            elif type(opt) is torch.optim.Adam and not group.get("decoupled_weight_decay"):
                self.kind = "adam"

    def _ready(self) -> bool:
        """Collect the state tensors once ``opt.step()`` has made them."""
        opt = self.opt
        from torch.optim import optimizer as _optim

        if (_optim._global_optimizer_pre_hooks or _optim._global_optimizer_post_hooks
                or opt._optimizer_step_post_hooks):
            return False
        group = opt.param_groups[0]
        params = list(group["params"])
        states = [opt.state.get(p, {}) for p in params]
        if self.kind == "sgd":
            if group["momentum"] and not all("momentum_buffer" in st for st in states):
                return False
            self.state = [[st["momentum_buffer"] for st in states]] if group["momentum"] \
                else [[]]
        else:
            keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
            if not all(all(k in st for k in keys) and "step" in st for st in states):
                return False
            self.state = [[st[k] for st in states] for k in keys]
            if not group["amsgrad"]:
                self.state.append([])
            self.state.append([st["step"] for st in states])
        self.params = params
        return True

    def __call__(self) -> None:
        opt = self.opt
        if self.kind is None or not self.params:
            opt.step()
            if self.kind is not None and not self._ready():
                self.kind = None
            return
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            opt.step()
            return
        for hook in opt._optimizer_step_pre_hooks.values():
            hook(opt, (), {})
        group = opt.param_groups[0]
        with torch.no_grad():
            if self.kind == "sgd":
                torch._fused_sgd_(self.params, grads, self.state[0],
                                  weight_decay=group["weight_decay"],
                                  momentum=group["momentum"], lr=group["lr"],
                                  dampening=group["dampening"], nesterov=group["nesterov"],
                                  maximize=False, is_first_step=False, grad_scale=None,
                                  found_inf=None)
            else:
                exp_avgs, exp_avg_sqs, max_sqs, steps = self.state
                beta1, beta2 = group["betas"]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(self.params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps,
                                   amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1,
                                   beta2=beta2, weight_decay=group["weight_decay"],
                                   eps=group["eps"], maximize=False, grad_scale=None,
                                   found_inf=None)


def make_optimizer(spec: Any, params: Any, plateau: ReduceLROnPlateau | None = None) -> tuple[
        torch.optim.Optimizer, LearningRate | None]:
    """The torch optimizer that does what the Keras one does, and the :class:`LearningRate`
    that steps its rate (None when the rate is constant: no schedule, decay or plateau).

    Torch's update rules are Keras's (Adadelta, RMSprop and Adagrad with Keras 2's ε placement,
    Nadam with Keras 2's 0.96^(0.004·t) momentum schedule) but for two details, which step
    pre-hooks put right: Adam's ε, and SGD momentum when the learning rate changes.
    """
    o: Any = spec
    lr = o.learning_rate(0) if isinstance(o.learning_rate, LRSchedule) else o.learning_rate
    if o.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=o.momentum,
                                                     nesterov=o.nesterov, **_fused())
    elif o.name == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=(o.beta_1, o.beta_2), eps=o.epsilon,
                               amsgrad=o.amsgrad, **_fused())
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
        opt = torch.optim.Adagrad(params, lr=lr, eps=o.epsilon, **_fused(),
                                  initial_accumulator_value=o.initial_accumulator_value)
    elif o.name == "nadam":
        opt = torch.optim.NAdam(params, lr=lr, betas=(o.beta_1, o.beta_2), eps=o.epsilon)
    else:  # pragma: no cover - the spec's Literal names make this unreachable
        raise ValueError(o.name)
    sched = None
    if o.decay or plateau is not None or isinstance(o.learning_rate, LRSchedule):
        sched = LearningRate(opt, o, plateau)
        if getattr(o, "momentum", 0.0):

            def keras_velocity(optimizer: torch.optim.Optimizer, *_: Any) -> None:
                # Keras keeps v = momentum·v - lr_t·g (lr inside the velocity; SGD, RMSprop);
                # torch keeps b = momentum·b + g and steps by -lr_t·b. When lr changes, scaling b
                # by lr_old/lr_new keeps -lr·b equal to Keras's v, step for step.
                # A rate of exactly 0 (CosineDecay's end with alpha 0) cannot be matched: torch
                # then stands still where Keras's velocity coasts on. The buffer keeps its
                # scale for the next non-zero rate.
                for group in optimizer.param_groups:
                    if group["lr"] == 0.0:
                        continue
                    previous = group.get("keras_previous_lr")
                    if previous is not None and previous != group["lr"]:
                        for p in group["params"]:
                            buf = optimizer.state.get(p, {}).get("momentum_buffer")
                            if buf is not None:
                                buf.mul_(previous / group["lr"])
                    group["keras_previous_lr"] = group["lr"]

            opt.register_step_pre_hook(keras_velocity)
    return opt, sched
