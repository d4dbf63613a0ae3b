"""DepthwiseConv2D and SeparableConv2D, with Keras's kernel layouts, fans and parameter
counts."""

from __future__ import annotations

from typing import Literal

from archlab.fields import Pair, PosInt
from archlab.layers.base import (
    ActivationName,
    Initializer,
    LayerSpec,
    Regularizer,
    Shape,
    activation_module,
    init_tensor,
    register_layer,
    spatial,
)
from archlab.layers.conv import conv_module, conv_window
from archlab.lazy import LazyModule, nn

__all__ = ["DepthwiseConv2D", "SeparableConv2D"]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


class _Depthwise(LayerSpec):
    """What DepthwiseConv2D and SeparableConv2D share: a per-channel spatial convolution."""

    kernel_size: Pair
    strides: Pair = (1, 1)
    padding: Literal["valid", "same"] = "valid"
    depth_multiplier: PosInt = 1
    dilation_rate: Pair = (1, 1)
    activation: ActivationName = None
    use_bias: bool = True
    depthwise_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    depthwise_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None
    activity_regularizer: Regularizer | None = None

    def _window(self, shape: Shape) -> Shape:
        spatial(shape, self.type)
        return conv_window(self.type, shape, self.kernel_size, self.strides, self.padding,
                       self.dilation_rate)

    def _depthwise(self, shape: Shape, bias: bool) -> tuple[list[nn.Module], nn.Conv2d]:
        cin = shape[2]
        kh, kw = self.kernel_size
        pre, core = conv_module(shape, cin * self.depth_multiplier, self.kernel_size, self.strides,
                          self.padding, self.dilation_rate, cin, bias)
        # Keras's depthwise kernel is (kh, kw, cin, depth_multiplier); output channel
        # c·depth_multiplier + m is torch's group c, member m: the same order.
        init_tensor(core.weight, self.depthwise_initializer, cin * kh * kw,
                    self.depth_multiplier * kh * kw)
        return pre, core

    def _bias(self, conv: nn.Conv2d) -> None:
        if conv.bias is not None:
            units = conv.bias.shape[0]
            init_tensor(conv.bias, self.bias_initializer, units, units)


@register_layer
class DepthwiseConv2D(_Depthwise):
    type: Literal["DepthwiseConv2D"] = "DepthwiseConv2D"

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = self._window(shape)
        return (h, w, c * self.depth_multiplier)

    def build(self, shape: Shape) -> nn.Module:
        pre, core = self._depthwise(shape, self.use_bias)
        self._bias(core)
        return _m._Block(pre, core, activation_module(self.activation), self.activity_regularizer)

    def macs(self, shape: Shape) -> int:
        h, w, c = self.output_shape(shape)
        return h * w * c * self.kernel_size[0] * self.kernel_size[1]

    def regularized(self, module: nn.Module) -> list[tuple[nn.Parameter, Regularizer]]:
        core = module.core  # type: ignore[union-attr]  # a _Block
        out = []
        if self.depthwise_regularizer is not None:
            out.append((core.weight, self.depthwise_regularizer))
        if self.bias_regularizer is not None and core.bias is not None:
            out.append((core.bias, self.bias_regularizer))
        return out


@register_layer
class SeparableConv2D(_Depthwise):
    """A depthwise convolution, then a 1x1 convolution to ``filters`` (with the bias)."""

    type: Literal["SeparableConv2D"] = "SeparableConv2D"
    filters: PosInt
    pointwise_initializer: Initializer = "glorot_uniform"
    pointwise_regularizer: Regularizer | None = None

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = self._window(shape)
        return (h, w, self.filters)

    def build(self, shape: Shape) -> nn.Module:
        pre, depthwise = self._depthwise(shape, False)
        mid = shape[2] * self.depth_multiplier
        pointwise = nn.Conv2d(mid, self.filters, 1, bias=self.use_bias)
        init_tensor(pointwise.weight, self.pointwise_initializer, mid, self.filters)
        self._bias(pointwise)
        return _m._Block(pre, _m._Separable(depthwise, pointwise),
                         activation_module(self.activation), self.activity_regularizer)

    def macs(self, shape: Shape) -> int:
        h, w, _ = self.output_shape(shape)
        mid = shape[2] * self.depth_multiplier
        return h * w * mid * (self.kernel_size[0] * self.kernel_size[1] + self.filters)

    def regularized(self, module: nn.Module) -> list[tuple[nn.Parameter, Regularizer]]:
        core = module.core  # type: ignore[union-attr]  # a _Block around _Separable
        out = []
        if self.depthwise_regularizer is not None:
            out.append((core.depthwise.weight, self.depthwise_regularizer))
        if self.pointwise_regularizer is not None:
            out.append((core.pointwise.weight, self.pointwise_regularizer))
        if self.bias_regularizer is not None and core.pointwise.bias is not None:
            out.append((core.pointwise.bias, self.bias_regularizer))
        return out
