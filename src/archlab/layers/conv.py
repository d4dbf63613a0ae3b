"""Convolution layers."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from archlab.fields import Pair, PosInt
from archlab.layers.base import (
    Pad,
    Shape,
    Weighted,
    register_layer,
    tf_padding,
    window_out,
)


@register_layer
class Conv2D(Weighted):
    type: Literal["Conv2D"] = "Conv2D"
    filters: PosInt
    kernel_size: Pair
    strides: Pair = (1, 1)
    padding: Literal["valid", "same"] = "valid"

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = window_out(shape, self.kernel_size, self.strides, self.padding,
                              "kernel_size", "Conv2D")
        return (h, w, self.filters)

    def build(self, shape: Shape) -> nn.Module:
        cin = shape[2]
        kh, kw = self.kernel_size
        pads = tf_padding(shape, self.kernel_size, self.strides) if self.padding == "same" \
            else (0, 0, 0, 0)
        pre: list[nn.Module] = []
        if pads[0] == pads[1] and pads[2] == pads[3]:
            padding: tuple[int, int] = (pads[2], pads[0])  # symmetric: let the conv pad (faster)
        else:
            pre.append(Pad(pads))
            padding = (0, 0)
        core = nn.Conv2d(cin, self.filters, self.kernel_size, self.strides, padding,
                         bias=self.use_bias)
        return self._finish(core, cin * kh * kw, self.filters * kh * kw, pre)

    def macs(self, shape: Shape) -> int:
        h, w, c = self.output_shape(shape)
        return h * w * c * self.kernel_size[0] * self.kernel_size[1] * shape[2]


@register_layer
class Convolution2D(Conv2D):
    """Keras's alias of Conv2D (the same layer)."""

    type: Literal["Convolution2D"] = "Convolution2D"  # type: ignore[assignment]
    alias: ClassVar[bool] = True
