"""Keras optimizers as a study names them: their spec (Keras names, arguments and defaults),
Keras's learning-rate schedules (CosineDecay, ExponentialDecay) and its ReduceLROnPlateau
callback. The torch optimizer each spec builds, and the :class:`~archlab.optim.LearningRate`
that drives schedules, decay and plateaus, are in :mod:`archlab.optim`."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from archlab.fields import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, Strict

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "CosineDecay",
    "ExponentialDecay",
    "LRSchedule",
    "LearningRateValue",
    "Nadam",
    "Optimizer",
    "OptimizerName",
    "RMSprop",
    "ReduceLROnPlateau",
    "Schedule",
]

# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: keras.optimizers.schedules, evaluated at the optimizer's step count
# (the first step uses step 0), as Keras 3's optimizers call them.


class LRSchedule(Strict):
    """The base of Keras's learning-rate schedules: a rate for each optimizer step."""

    type: str

    def to_config(self) -> dict[str, Any]:
        """The YAML form ``{CosineDecay: {args}}`` (Keras's defaults left out)."""
        return {self.type: self.model_dump(mode="json", exclude_defaults=True,
                                           exclude={"type"})}

    def __call__(self, step: int) -> float:
        raise NotImplementedError


class CosineDecay(LRSchedule):
    """keras.optimizers.schedules.CosineDecay: an optional linear warmup from
    ``initial_learning_rate`` to ``warmup_target`` over ``warmup_steps``, then a cosine from
    there down to ``alpha`` times it over ``decay_steps``; constant afterwards."""

    type: Literal["CosineDecay"] = "CosineDecay"
    initial_learning_rate: PosFloat
    decay_steps: PosInt
    alpha: Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)] = 0.0
    warmup_target: PosFloat | None = None
    warmup_steps: NonNegInt = 0

    def _decay(self, step: float, start: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: int) -> float:
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return delta * (step / self.warmup_steps) + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)


class ExponentialDecay(LRSchedule):
    """keras.optimizers.schedules.ExponentialDecay:
    ``initial_learning_rate · decay_rate ^ (step / decay_steps)`` (the exponent floored with
    ``staircase``)."""

    type: Literal["ExponentialDecay"] = "ExponentialDecay"
    initial_learning_rate: PosFloat
    decay_steps: PosInt
    decay_rate: PosFloat
    staircase: bool = False

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p


SCHEDULES: dict[str, type[LRSchedule]] = {c.model_fields["type"].default: c
                                         for c in (CosineDecay, ExponentialDecay)}


def _schedule_item(value: Any) -> Any:
    """``{CosineDecay: {args}}``, as the schedule's class and arguments are written in Keras."""
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        if name not in SCHEDULES:
            raise PydanticCustomError(
                "union_form", "Expected {form}",
                {"form": f"a number or a schedule ({' or '.join(SCHEDULES)})"})
        if not isinstance(args, dict):
            raise PydanticCustomError(
                "union_form", "Expected {form}",
                {"form": f"a mapping of arguments for {name}, such as "
                         f"{{{name}: {{initial_learning_rate: 0.01, decay_steps: 1000}}}}"})
        return {"type": name, **args}
    return value


Schedule = Annotated[
    Annotated[Union[CosineDecay, ExponentialDecay], Field(discriminator="type")],  # noqa: UP007
    BeforeValidator(_schedule_item, json_schema_input_type=Annotated[
        dict[Literal["CosineDecay", "ExponentialDecay"], dict[str, Any]],
        Field(min_length=1, max_length=1)]),
]
#: An optimizer's ``learning_rate``: a number, or a schedule stepped per optimizer step.
LearningRateValue = Annotated[
    Union[Annotated[PosFloat, Tag("number")], Annotated[Schedule, Tag("schedule")]],  # noqa: UP007
    Discriminator(lambda v: "schedule" if isinstance(v, dict | LRSchedule) else "number"),
]


class ReduceLROnPlateau(Strict):
    """keras.callbacks.ReduceLROnPlateau, evaluated at each epoch end (Keras 3's semantics)."""

    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = "val_loss"
    factor: Fraction = 0.1  # Keras refuses factor >= 1
    patience: NonNegInt = 10
    min_delta: NonNegFloat = 1e-4
    cooldown: NonNegInt = 0
    min_lr: NonNegFloat = 0.0
    mode: Literal["auto", "min", "max"] = "auto"

    @property
    def lower_is_better(self) -> bool:
        """Keras's ``auto``: a loss is minimized, an accuracy maximized."""
        return self.mode == "min" or (self.mode == "auto" and self.monitor.endswith("loss"))


class _Optimizer(Strict):
    name: str
    decay: NonNegFloat = 0.0  # Keras 2: lr_t = lr / (1 + decay * iterations)
    clipnorm: PosFloat | None = None
    learning_rate: Any

    @model_validator(mode="after")
    def _schedule_without_decay(self) -> _Optimizer:
        if isinstance(self.learning_rate, LRSchedule) and self.decay:
            # Keras 3 has no `decay`; a Keras 2 optimizer would divide the schedule's value by
            # (1 + decay·step) too. Refused rather than guessed: the schedule says it all.
            raise PydanticCustomError("expected_received", "Expected {expected}, received "
                                      "{received}", {
                                          "expected": "decay 0 with a learning_rate schedule "
                                                      f"(put the decay in the "
                                                      f"{self.learning_rate.type})",
                                          "received": f"decay {self.decay}"})
        return self

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
        out = self.model_dump(exclude_defaults=True) | {"name": self.name}
        if isinstance(self.learning_rate, LRSchedule):
            out["learning_rate"] = self.learning_rate.to_config()
        return out

    @property
    def state_slots(self) -> int:
        """Tensors the torch optimizer keeps per parameter tensor, each the parameter's size
        (Adam's two moments, SGD's momentum buffer, ...): the memory estimate counts them."""
        return 0


class SGD(_Optimizer):
    name: Literal["sgd"] = "sgd"
    learning_rate: LearningRateValue = 0.01
    momentum: Rate = 0.0
    nesterov: bool = False

    @property
    def state_slots(self) -> int:
        return 1 if self.momentum else 0  # torch keeps no momentum buffer at momentum 0


class Adam(_Optimizer):
    name: Literal["adam"] = "adam"
    learning_rate: LearningRateValue = 0.001
    beta_1: Fraction = 0.9
    beta_2: Fraction = 0.999
    epsilon: PosFloat = 1e-7
    amsgrad: bool = False

    @property
    def state_slots(self) -> int:
        return 3 if self.amsgrad else 2  # m, v (and max v)


class Adadelta(_Optimizer):
    name: Literal["adadelta"] = "adadelta"
    learning_rate: LearningRateValue = 1.0  # Keras 2's default, which every seed notebook ran with
    rho: Fraction = 0.95
    epsilon: PosFloat = 1e-7

    @property
    def state_slots(self) -> int:
        return 2  # accumulated squared gradients and squared updates


class RMSprop(_Optimizer):
    name: Literal["rmsprop"] = "rmsprop"
    learning_rate: LearningRateValue = 0.001
    rho: Fraction = 0.9
    momentum: Rate = 0.0
    epsilon: PosFloat = 1e-7
    centered: bool = False

    @property
    def state_slots(self) -> int:
        return 1 + int(self.centered) + int(self.momentum > 0)  # square avg (+ grad avg, buf)


class Adagrad(_Optimizer):
    name: Literal["adagrad"] = "adagrad"
    learning_rate: LearningRateValue = 0.01
    initial_accumulator_value: NonNegFloat = 0.1
    epsilon: PosFloat = 1e-7

    @property
    def state_slots(self) -> int:
        return 1  # the accumulator


class Nadam(_Optimizer):
    name: Literal["nadam"] = "nadam"
    learning_rate: LearningRateValue = 0.001
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
