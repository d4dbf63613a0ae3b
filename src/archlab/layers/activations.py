"""Keras's activation layers: ReLU (with its max_value, negative_slope and threshold),
LeakyReLU, PReLU (a learned slope per value, as Keras holds it), ELU and Softmax."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from archlab.fields import MAX_SIZE, NonNegFloat
from archlab.layers.base import (
    LayerSpec,
    Shape,
    ShapeProblem,
    register_layer,
)
from archlab.lazy import LazyModule, nn

__all__ = ["ELU", "LeakyReLU", "PReLU", "ReLU", "Softmax"]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


@register_layer
class ReLU(LayerSpec):
    type: Literal["ReLU"] = "ReLU"
    max_value: NonNegFloat | None = None
    negative_slope: NonNegFloat = 0.0
    threshold: NonNegFloat = 0.0

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        if self.max_value is None and not self.negative_slope and not self.threshold:
            return nn.ReLU()
        return _m._ReLU(self.max_value, self.negative_slope, self.threshold)


@register_layer
class LeakyReLU(LayerSpec):
    type: Literal["LeakyReLU"] = "LeakyReLU"
    negative_slope: NonNegFloat = 0.3  # Keras 3's default (torch's is 0.01)

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)


@register_layer
class PReLU(LayerSpec):
    """A learned negative slope per input value (Keras: alpha's shape is the input's without
    the batch axis); ``shared_axes`` (1-based Keras axes, e.g. [1, 2] = height and width)
    share one slope along those axes."""

    type: Literal["PReLU"] = "PReLU"
    shared_axes: list[Annotated[int, Field(strict=True, ge=1, le=MAX_SIZE)]] | None = None

    def param_shape(self, shape: Shape) -> Shape:
        dims = list(shape)
        for axis in self.shared_axes or []:
            if axis > len(dims):
                raise ShapeProblem("shared_axes", f"Expected axes between 1 and {len(dims)} "
                                   f"for a {len(dims)}-D input, received {axis}")
            dims[axis - 1] = 1
        return tuple(dims)

    def output_shape(self, shape: Shape) -> Shape:
        self.param_shape(shape)
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return _m._PReLU(self.param_shape(shape))


@register_layer
class ELU(LayerSpec):
    type: Literal["ELU"] = "ELU"
    alpha: NonNegFloat = 1.0

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return nn.ELU(self.alpha)


@register_layer
class Softmax(LayerSpec):
    """Softmax over the last Keras axis (channels of an image: dim 1 inside torch's NCHW)."""

    type: Literal["Softmax"] = "Softmax"
    axis: Literal[-1] = -1

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return nn.Softmax(dim=1)
