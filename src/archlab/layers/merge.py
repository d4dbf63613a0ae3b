"""Layers that merge branches: Concatenate (the inception-like model) and Keras's element-wise
merges (Add, Subtract, Multiply, Average, Maximum), written in the same branch syntax.

Each feeds its input to every branch (a list of layers; ``[]`` is the identity, so
``Add: {branches: [[], [...]]}`` is a residual block) and merges the branch outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from archlab.layers.base import (
    LayerSpec,
    Shape,
    ShapeProblem,
    register_layer,
)

if TYPE_CHECKING:
    from archlab.layers import LayerItem


def _merge(op: str, xs: list[torch.Tensor]) -> torch.Tensor:
    if op == "concat":
        return torch.cat(xs, dim=1)  # dim 1 = channels (NCHW)
    if op == "subtract":
        return xs[0] - xs[1]
    out = xs[0]
    for x in xs[1:]:
        if op in ("add", "average"):
            out = out + x
        elif op == "multiply":
            out = out * x
        else:  # maximum
            out = torch.maximum(out, x)
    return out / len(xs) if op == "average" else out


class Branches(nn.Module):
    """Feeds its input to every branch and merges the outputs (``op``: concat, add, ...)."""

    def __init__(self, branches: list[nn.Module], op: str = "concat") -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _merge(self.op, [b(x) for b in self.branches])


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
        return Branches(branches, self.op)


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
