"""Layers that merge branches: Concatenate (the inception-like model) and Keras's element-wise
merges (Add, Subtract, Multiply, Average, Maximum), written in the same branch syntax.

Each feeds its input to every branch (a list of layers; ``[]`` is the identity, so
``Add: {branches: [[], [...]]}`` is a residual block) and merges the branch outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from archlab.layers.base import (
    LayerSpec,
    Shape,
    ShapeProblem,
    register_layer,
)
from archlab.lazy import LazyModule, nn

if TYPE_CHECKING:
    from archlab.layers import LayerItem

__all__ = [
    "MERGE_LAYERS",
    "Add",
    "Average",
    "Concatenate",
    "Maximum",
    "Merge",
    "Multiply",
    "Subtract",
]


_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


class Merge(LayerSpec):
    """A layer whose ``branches`` the builder walks; it merges their output shapes."""

    branches: Annotated[list[list[LayerItem]], Field(min_length=2)]
    op: ClassVar[str] = "add"

    def output_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError("the builder walks branches itself")

    def merge_shape(self, outs: list[Shape]) -> Shape:
        """The merged output shape (element-wise merges: every branch's output shape)."""
        if len(set(outs)) != 1:
            raise ShapeProblem(
                "branches", "Expected branch outputs of the same shape, received "
                f"{', '.join(str(o) for o in outs)}")
        return outs[0]

    def build_merge(self, branches: list[nn.Module]) -> nn.Module:
        return _m.Branches(branches, self.op)


@register_layer
class Concatenate(Merge):
    """Feeds its input to every branch and concatenates the outputs on the channel axis."""

    type: Literal["Concatenate"] = "Concatenate"
    axis: Literal[-1] = -1
    op: ClassVar[str] = "concat"

    def merge_shape(self, outs: list[Shape]) -> Shape:
        if any(len(o) != 3 for o in outs) or len({o[:2] for o in outs}) != 1:
            raise ShapeProblem(
                "branches", "Expected branch outputs with the same height and width, "
                f"received {', '.join(str(o) for o in outs)}")
        return (*outs[0][:2], sum(o[2] for o in outs))


@register_layer
class Add(Merge):
    """Keras's Add: the element-wise sum of the branch outputs."""

    type: Literal["Add"] = "Add"
    op: ClassVar[str] = "add"


@register_layer
class Subtract(Merge):
    """Keras's Subtract: the first branch's output minus the second's (exactly two)."""

    type: Literal["Subtract"] = "Subtract"
    branches: Annotated[list[list[LayerItem]], Field(min_length=2, max_length=2)]
    op: ClassVar[str] = "subtract"


@register_layer
class Multiply(Merge):
    """Keras's Multiply: the element-wise product of the branch outputs."""

    type: Literal["Multiply"] = "Multiply"
    op: ClassVar[str] = "multiply"


@register_layer
class Average(Merge):
    """Keras's Average: the element-wise mean of the branch outputs."""

    type: Literal["Average"] = "Average"
    op: ClassVar[str] = "average"


@register_layer
class Maximum(Merge):
    """Keras's Maximum: the element-wise maximum of the branch outputs."""

    type: Literal["Maximum"] = "Maximum"
    op: ClassVar[str] = "maximum"


MERGE_LAYERS: tuple[type[Merge], ...] = (Concatenate, Add, Subtract, Multiply, Average, Maximum)
