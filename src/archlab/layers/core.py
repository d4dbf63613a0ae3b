"""Core layers: Dense, Dropout, Flatten, Activation."""

from __future__ import annotations

import math
from typing import Literal

from archlab.fields import PosInt, Rate
from archlab.layers.base import (
    ActivationName,
    LayerSpec,
    Shape,
    ShapeProblem,
    Weighted,
    activation_module,
    register_layer,
)
from archlab.lazy import LazyModule, nn

__all__ = ["Activation", "Dense", "Dropout", "Flatten"]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


@register_layer
class Dense(Weighted):
    type: Literal["Dense"] = "Dense"
    units: PosInt

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise ShapeProblem("input", "Expected a flat input for Dense, received a "
                                        f"{len(shape)}-D one; add Flatten (or a global "
                                        "pooling) before it")
        return (self.units,)

    def build(self, shape: Shape) -> nn.Module:
        core = nn.Linear(shape[0], self.units, bias=self.use_bias)
        return self._finish(core, shape[0], self.units, [])

    def macs(self, shape: Shape) -> int:
        return shape[0] * self.units


@register_layer
class Dropout(LayerSpec):
    type: Literal["Dropout"] = "Dropout"
    rate: Rate

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return _m.Dropout(self.rate)  # cheaper masks than nn.Dropout's bernoulli_


@register_layer
class Flatten(LayerSpec):
    type: Literal["Flatten"] = "Flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def build(self, shape: Shape) -> nn.Module:
        return _m._KerasFlatten() if len(shape) == 3 else nn.Identity()


@register_layer
class Activation(LayerSpec):
    type: Literal["Activation"] = "Activation"
    activation: ActivationName

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return activation_module(self.activation) or nn.Identity()


