"""BatchNormalization (Keras's momentum convention and parameter counts) and
LayerNormalization."""

from __future__ import annotations

from typing import Literal

from archlab.fields import PosFloat, Rate
from archlab.layers.base import (
    LayerSpec,
    Shape,
    register_layer,
)
from archlab.lazy import LazyModule, nn

__all__ = ["BatchNormalization", "LayerNormalization"]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


@register_layer
class BatchNormalization(LayerSpec):
    type: Literal["BatchNormalization"] = "BatchNormalization"
    axis: Literal[-1] = -1
    momentum: Rate = 0.99
    epsilon: PosFloat = 1e-3
    center: bool = True
    scale: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        # Keras: moving = momentum·moving + (1-momentum)·batch; torch's momentum is the other side.
        bn = cls(shape[-1], eps=self.epsilon, momentum=1.0 - self.momentum,
                 affine=self.center or self.scale)
        # Keras has no gamma without `scale` and no beta without `center` (not even frozen ones:
        # they would count as params); torch's batch_norm takes weight/bias None as 1/0.
        if bn.affine and not self.scale:
            bn.register_parameter("weight", None)
        if bn.affine and not self.center:
            bn.register_parameter("bias", None)
        return bn


@register_layer
class LayerNormalization(LayerSpec):
    """Keras's LayerNormalization over the last axis: channels of an image, features of a
    vector; ``gamma`` and ``beta`` have one value per channel."""

    type: Literal["LayerNormalization"] = "LayerNormalization"
    axis: Literal[-1] = -1
    epsilon: PosFloat = 1e-3
    center: bool = True
    scale: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return _m._LayerNorm(shape[-1], self.epsilon, self.center, self.scale)
