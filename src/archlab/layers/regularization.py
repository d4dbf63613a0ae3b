"""Keras's regularization layers that act only in training: SpatialDropout2D (whole channels)
and GaussianNoise (additive, zero-mean)."""

from __future__ import annotations

from typing import Literal

from archlab.fields import NonNegFloat, Rate
from archlab.layers.base import (
    LayerSpec,
    Shape,
    register_layer,
    spatial,
)
from archlab.lazy import LazyModule, nn

__all__ = ["GaussianNoise", "SpatialDropout2D"]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


@register_layer
class SpatialDropout2D(LayerSpec):
    """Drops whole channels (feature maps), scaling the rest by 1/(1-rate), in training."""

    type: Literal["SpatialDropout2D"] = "SpatialDropout2D"
    rate: Rate

    def output_shape(self, shape: Shape) -> Shape:
        spatial(shape, self.type)
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return nn.Dropout2d(self.rate)


@register_layer
class GaussianNoise(LayerSpec):
    """Adds N(0, stddev²) noise in training; the identity at inference."""

    type: Literal["GaussianNoise"] = "GaussianNoise"
    stddev: NonNegFloat

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return _m._GaussianNoise(self.stddev)
