"""Keras optimizers: their spec (Keras names, arguments and defaults) and the torch optimizer
each one builds (Keras 2 rules for Adadelta's learning rate and `decay`)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import torch
from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from archlab.fields import Fraction, NonNegFloat, PosFloat, Rate, Strict


class _Optimizer(Strict):
    name: str
    decay: NonNegFloat = 0.0  # Keras 2: lr_t = lr / (1 + decay * iterations)
    clipnorm: PosFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _lr_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            if "learning_rate" in data:
                # spec/messages.py words every error; this one carries no data of its own.
                raise PydanticCustomError("lr_twice", "'lr' and 'learning_rate' both given")
            data["learning_rate"] = data.pop("lr")
        return data

    def to_config(self) -> dict[str, Any]:
        return self.model_dump(exclude_defaults=True) | {"name": self.name}

    @property
    def state_slots(self) -> int:
        """Tensors the torch optimizer keeps per parameter tensor, each the parameter's size
        (Adam's two moments, SGD's momentum buffer, ...): the memory estimate counts them."""
        return 0


class SGD(_Optimizer):
    name: Literal["sgd"] = "sgd"
    learning_rate: PosFloat = 0.01
    momentum: Rate = 0.0
    nesterov: bool = False

    @property
    def state_slots(self) -> int:
        return 1 if self.momentum else 0  # torch keeps no momentum buffer at momentum 0


class Adam(_Optimizer):
    name: Literal["adam"] = "adam"
    learning_rate: PosFloat = 0.001
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.999
    epsilon: PosFloat = 1e-7
    amsgrad: bool = False

    @property
    def state_slots(self) -> int:
        return 3 if self.amsgrad else 2  # m, v (and max v)


class Adadelta(_Optimizer):
    name: Literal["adadelta"] = "adadelta"
    learning_rate: PosFloat = 1.0  # Keras 2's default, which every seed notebook ran with
    rho: Fraction = 0.95
    epsilon: PosFloat = 1e-7

    @property
    def state_slots(self) -> int:
        return 2  # accumulated squared gradients and squared updates


class RMSprop(_Optimizer):
    name: Literal["rmsprop"] = "rmsprop"
    learning_rate: PosFloat = 0.001
    rho: Fraction = 0.9
    momentum: Rate = 0.0
    epsilon: PosFloat = 1e-7
    centered: bool = False

    @property
    def state_slots(self) -> int:
        return 1 + int(self.centered) + int(self.momentum > 0)  # square avg (+ grad avg, buf)


class Adagrad(_Optimizer):
    name: Literal["adagrad"] = "adagrad"
    learning_rate: PosFloat = 0.01
    initial_accumulator_value: NonNegFloat = 0.1
    epsilon: PosFloat = 1e-7

    @property
    def state_slots(self) -> int:
        return 1  # the accumulator


class Nadam(_Optimizer):
    name: Literal["nadam"] = "nadam"
    learning_rate: PosFloat = 0.001
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.999
    epsilon: PosFloat = 1e-7

    @property
    def state_slots(self) -> int:
        return 2  # m, v


#: Every optimizer spec by its Keras name (lower case).
OPTIMIZERS: dict[str, type[_Optimizer]] = {
    c.model_fields["name"].default: c for c in (SGD, Adam, Adadelta, RMSprop, Adagrad, Nadam)}


def _optimizer_item(value: Any) -> Any:
    """Accept `sgd`, `SGD`, `{name: SGD, lr: 0.1}`, as Keras's `compile(optimizer=...)` does."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        name = value["name"].lower()
        if name not in OPTIMIZERS:
            # The name only: spec/messages.py adds the "did you mean" or the list.
            raise PydanticCustomError("unknown_optimizer", "Unknown optimizer '{name}'",
                                      {"name": value["name"]})
        value = {**value, "name": name}
    return value


OptimizerName = Literal["sgd", "adam", "adadelta", "rmsprop", "adagrad", "nadam", "SGD", "Adam",
                        "Adadelta", "RMSprop", "Adagrad", "Nadam"]
Optimizer = Annotated[
    Annotated[Union[SGD, Adam, Adadelta, RMSprop, Adagrad, Nadam],  # noqa: UP007
              Field(discriminator="name")],
    BeforeValidator(_optimizer_item,
                    json_schema_input_type=Union[OptimizerName, dict[str, Any]]),  # noqa: UP007
]


# ---------------------------------------------------------------------------------------------
# The torch optimizer each spec builds

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


def make_optimizer(spec: Any, params: Any) -> tuple[torch.optim.Optimizer,
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
