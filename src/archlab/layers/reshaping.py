"""Keras's reshaping layers: Reshape (in Keras's HWC order), ZeroPadding2D, Cropping2D and
UpSampling2D (nearest)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field

from archlab.fields import MAX_SIZE, NonNegInt, Pair
from archlab.layers.base import (
    LayerSpec,
    Shape,
    ShapeProblem,
    register_layer,
    spatial,
)
from archlab.lazy import LazyModule, nn

__all__ = [
    "Cropping2D",
    "Reshape",
    "Sides",
    "SidesArg",
    "TargetDim",
    "UpSampling2D",
    "ZeroPadding2D",
]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


# ---------------------------------------------------------------------------------------------
# Reshape


TargetDim = Annotated[int, Field(strict=True, ge=-1, le=MAX_SIZE)]


@register_layer
class Reshape(LayerSpec):
    """``target_shape``: (F,) or (H, W, C), in Keras's order; one dimension may be -1."""

    type: Literal["Reshape"] = "Reshape"
    target_shape: Annotated[list[TargetDim], Field(min_length=1, max_length=3)]

    def output_shape(self, shape: Shape) -> Shape:
        target = list(self.target_shape)
        if len(target) == 2 or 0 in target or target.count(-1) > 1:
            raise ShapeProblem("target_shape", "Expected [features] or [height, width, "
                               "channels] of positive sizes (at most one -1), received "
                               f"{target}")
        size = math.prod(shape)
        known = math.prod(d for d in target if d != -1)
        if -1 in target and size % known == 0:
            target[target.index(-1)] = size // known
        if math.prod(target) != size:
            raise ShapeProblem("target_shape", f"Expected a shape of {size} values (as the "
                               f"input), received {self.target_shape}")
        return tuple(target)

    def build(self, shape: Shape) -> nn.Module:
        return _m._KerasReshape(self.output_shape(shape))


# ---------------------------------------------------------------------------------------------
# ZeroPadding2D and Cropping2D: an int, [rows, cols] or [[top, bottom], [left, right]]

Sides = tuple[tuple[NonNegInt, NonNegInt], tuple[NonNegInt, NonNegInt]]


def _sides(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return ((value, value), (value, value))
    if isinstance(value, list | tuple) and len(value) == 2 \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return ((value[0], value[0]), (value[1], value[1]))
    return value


SidesArg = Annotated[Sides, BeforeValidator(
    _sides, json_schema_input_type=Union[NonNegInt, tuple[NonNegInt, NonNegInt],  # noqa: UP007
                                         Sides])]


@register_layer
class ZeroPadding2D(LayerSpec):
    type: Literal["ZeroPadding2D"] = "ZeroPadding2D"
    padding: SidesArg = ((1, 1), (1, 1))

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = spatial(shape, self.type)
        (top, bottom), (left, right) = self.padding
        return (h + top + bottom, w + left + right, c)

    def build(self, shape: Shape) -> nn.Module:
        (top, bottom), (left, right) = self.padding
        return _m.Pad((left, right, top, bottom))


@register_layer
class Cropping2D(LayerSpec):
    type: Literal["Cropping2D"] = "Cropping2D"
    cropping: SidesArg = ((0, 0), (0, 0))

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = spatial(shape, self.type)
        (top, bottom), (left, right) = self.cropping
        if top + bottom >= h or left + right >= w:
            raise ShapeProblem("cropping", f"Expected to crop less than the {h}x{w} input, "
                               f"received {top}+{bottom} rows and {left}+{right} columns")
        return (h - top - bottom, w - left - right, c)

    def build(self, shape: Shape) -> nn.Module:
        (top, bottom), (left, right) = self.cropping
        return _m._Crop(top, bottom, left, right)


# ---------------------------------------------------------------------------------------------
# UpSampling2D


@register_layer
class UpSampling2D(LayerSpec):
    type: Literal["UpSampling2D"] = "UpSampling2D"
    size: Pair = (2, 2)
    interpolation: Literal["nearest"] = "nearest"

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = spatial(shape, self.type)
        return (h * self.size[0], w * self.size[1], c)

    def build(self, shape: Shape) -> nn.Module:
        return nn.Upsample(scale_factor=(float(self.size[0]), float(self.size[1])),
                           mode="nearest")
