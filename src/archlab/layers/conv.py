"""Conv2D (with dilation_rate and groups) and the convolution helpers that
DepthwiseConv2D and SeparableConv2D (layers/depthwise.py) share."""

from __future__ import annotations

from typing import ClassVar, Literal

from archlab.fields import Pair, PosInt
from archlab.layers.base import (
    Shape,
    ShapeProblem,
    Weighted,
    register_layer,
    tf_padding,
    window_out,
)
from archlab.lazy import LazyModule, nn

__all__ = ["Conv2D", "Convolution2D", "conv_module", "conv_window"]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


def _effective(kernel: Pair, dilation: Pair) -> tuple[int, int]:
    """The window a dilated kernel covers: (k - 1)·d + 1."""
    return ((kernel[0] - 1) * dilation[0] + 1, (kernel[1] - 1) * dilation[1] + 1)


def conv_window(layer: str, shape: Shape, kernel: Pair, strides: Pair, padding: str,
            dilation: Pair) -> Shape:
    if dilation != (1, 1) and strides != (1, 1):
        raise ShapeProblem("dilation_rate", f"Expected strides 1 with dilation_rate {dilation} "
                           f"(Keras supports one of them above 1), received strides {strides}")
    return window_out(shape, _effective(kernel, dilation), strides, padding, "kernel_size",
                      layer)


def conv_module(shape: Shape, cout: int, kernel: Pair, strides: Pair, padding: str, dilation: Pair,
          groups: int, bias: bool) -> tuple[list[nn.Module], nn.Conv2d]:
    """TF-style padding (asymmetric 'same' as its own module) and the torch convolution."""
    pads = tf_padding(shape, _effective(kernel, dilation), strides) if padding == "same" \
        else (0, 0, 0, 0)
    pre: list[nn.Module] = []
    if pads[0] == pads[1] and pads[2] == pads[3]:
        torch_pad: tuple[int, int] = (pads[2], pads[0])  # symmetric: let the conv pad (faster)
    else:
        pre.append(_m.Pad(pads))
        torch_pad = (0, 0)
    core = nn.Conv2d(shape[2], cout, kernel, strides, torch_pad, dilation, groups, bias=bias)
    return pre, core


@register_layer
class Conv2D(Weighted):
    type: Literal["Conv2D"] = "Conv2D"
    filters: PosInt
    kernel_size: Pair
    strides: Pair = (1, 1)
    padding: Literal["valid", "same"] = "valid"
    dilation_rate: Pair = (1, 1)
    groups: PosInt = 1

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = conv_window(self.type, shape, self.kernel_size, self.strides, self.padding,
                          self.dilation_rate)
        if self.filters % self.groups or c % self.groups:
            raise ShapeProblem("groups", f"Expected groups dividing both the {c} input channels "
                               f"and the {self.filters} filters, received {self.groups}")
        return (h, w, self.filters)

    def build(self, shape: Shape) -> nn.Module:
        kh, kw = self.kernel_size
        pre, core = conv_module(shape, self.filters, self.kernel_size, self.strides, self.padding,
                          self.dilation_rate, self.groups, self.use_bias)
        # Keras's kernel is (kh, kw, cin/groups, filters): its fans come from that shape.
        return self._finish(core, shape[2] // self.groups * kh * kw, self.filters * kh * kw, pre)

    def macs(self, shape: Shape) -> int:
        h, w, c = self.output_shape(shape)
        return h * w * c * self.kernel_size[0] * self.kernel_size[1] * shape[2] // self.groups


@register_layer
class Convolution2D(Conv2D):
    """Keras's alias of Conv2D (the same layer)."""

    type: Literal["Convolution2D"] = "Convolution2D"  # type: ignore[assignment]
    alias: ClassVar[bool] = True
