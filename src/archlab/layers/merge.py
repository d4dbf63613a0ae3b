"""Branches merged by Concatenate (the inception-like model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from archlab.layers.base import (
    LayerSpec,
    Shape,
    register_layer,
)

if TYPE_CHECKING:
    from archlab.layers import LayerItem


class Branches(nn.Module):
    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)  # dim 1 = channels (NCHW)


@register_layer
class Concatenate(LayerSpec):
    """Feeds its input to every branch and concatenates the outputs on the channel axis."""

    type: Literal["Concatenate"] = "Concatenate"
    axis: Literal[-1] = -1
    branches: Annotated[list[list[LayerItem]], Field(min_length=2)]

    def output_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError("the builder walks branches itself")


