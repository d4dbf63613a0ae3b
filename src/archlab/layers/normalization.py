"""BatchNormalization (Keras's momentum convention and parameter counts) and
LayerNormalization."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from archlab.fields import PosFloat, Rate
from archlab.layers.base import (
    LayerSpec,
    Shape,
    register_layer,
)


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




class _LayerNorm(nn.Module):
    """Normalizes each sample over the channel axis (Keras's last axis; dim 1 in NCHW)."""

    def __init__(self, channels: int, epsilon: float, center: bool, scale: bool) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.gamma = nn.Parameter(torch.ones(channels)) if scale else None
        self.beta = nn.Parameter(torch.zeros(channels)) if center else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).square().mean(dim=1, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.epsilon)
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.gamma is not None:
            out = out * self.gamma.view(view)
        if self.beta is not None:
            out = out + self.beta.view(view)
        return out


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
        return _LayerNorm(shape[-1], self.epsilon, self.center, self.scale)
