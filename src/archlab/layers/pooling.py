"""Pooling layers: max, average (TF's exact 'same' counts) and global."""

from __future__ import annotations

from typing import ClassVar, Literal

from archlab.fields import Pair
from archlab.layers.base import (
    LayerSpec,
    Shape,
    register_layer,
    spatial,
    tf_padding,
    window_out,
)
from archlab.lazy import LazyModule, nn

__all__ = [
    "AveragePooling2D",
    "AvgPool2D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling2D",
    "MaxPool2D",
    "MaxPooling2D",
]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


class _Pool2D(LayerSpec):
    pool_size: Pair = (2, 2)
    strides: Pair | None = None
    padding: Literal["valid", "same"] = "valid"

    @property
    def _strides(self) -> tuple[int, int]:
        return self.strides or self.pool_size  # Keras: strides default to pool_size

    def output_shape(self, shape: Shape) -> Shape:
        return window_out(shape, self.pool_size, self._strides, self.padding, "pool_size",
                           self.type)


@register_layer
class MaxPooling2D(_Pool2D):
    type: Literal["MaxPooling2D"] = "MaxPooling2D"

    def build(self, shape: Shape) -> nn.Module:
        pool = nn.MaxPool2d(self.pool_size, self._strides)
        if self.padding == "valid":
            return pool
        pads = tf_padding(shape, self.pool_size, self._strides)
        if not any(pads):
            return pool
        # TF pads max-pooling with -inf: padded cells never win.
        return nn.Sequential(_m.Pad(pads, float("-inf")), pool)


@register_layer
class AveragePooling2D(_Pool2D):
    type: Literal["AveragePooling2D"] = "AveragePooling2D"

    def build(self, shape: Shape) -> nn.Module:
        if self.padding == "same" and any(tf_padding(shape, self.pool_size, self._strides)):
            return _m._TFAvgPool(shape, self.pool_size, self._strides)
        return nn.AvgPool2d(self.pool_size, self._strides)


@register_layer
class GlobalAveragePooling2D(LayerSpec):
    type: Literal["GlobalAveragePooling2D"] = "GlobalAveragePooling2D"

    def output_shape(self, shape: Shape) -> Shape:
        return (spatial(shape, self.type)[2],)

    def build(self, shape: Shape) -> nn.Module:
        return _m._GlobalPool("avg")


@register_layer
class GlobalMaxPooling2D(GlobalAveragePooling2D):
    type: Literal["GlobalMaxPooling2D"] = "GlobalMaxPooling2D"  # type: ignore[assignment]

    def build(self, shape: Shape) -> nn.Module:
        return _m._GlobalPool("max")


# Keras's aliases: the same layers under their short names.


@register_layer
class MaxPool2D(MaxPooling2D):
    type: Literal["MaxPool2D"] = "MaxPool2D"  # type: ignore[assignment]
    alias: ClassVar[bool] = True


@register_layer
class AvgPool2D(AveragePooling2D):
    type: Literal["AvgPool2D"] = "AvgPool2D"  # type: ignore[assignment]
    alias: ClassVar[bool] = True


@register_layer
class GlobalAvgPool2D(GlobalAveragePooling2D):
    type: Literal["GlobalAvgPool2D"] = "GlobalAvgPool2D"  # type: ignore[assignment]
    alias: ClassVar[bool] = True


@register_layer
class GlobalMaxPool2D(GlobalMaxPooling2D):
    type: Literal["GlobalMaxPool2D"] = "GlobalMaxPool2D"  # type: ignore[assignment]
    alias: ClassVar[bool] = True
