"""The torch modules that archlab's Keras layers build (their ``forward`` runs every batch).

They live apart from the layer specs (layers/*.py) so that reading a study imports no torch:
a spec's ``build`` reaches these through ``archlab.lazy``. Class names are part of the
contract: the packed trainer recognises ``_Block`` and ``_GaussianNoise`` by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from archlab.layers.base import Shape, tf_padding

if TYPE_CHECKING:
    from archlab.layers.base import Regularizer

__all__ = ["ActivityRegularization", "Branches", "Dropout", "Pad", "dropout_multiplier"]


class Pad(nn.Module):
    """Asymmetric TF-style padding (left, right, top, bottom) with a fill value."""

    def __init__(self, pads: tuple[int, int, int, int], value: float = 0.0) -> None:
        super().__init__()
        self.pads = pads
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, value=self.value)


class ActivityRegularization(nn.Module):
    """Keras's ``activity_regularizer`` on a layer's output (after its activation): keeps the
    last forward pass's penalty per sample, ``l1·Σ|y| + l2·Σy²`` over the sample's values.
    Keras 3 adds the batch's sum divided by the batch size to the loss
    (:meth:`archlab.model.BuiltModel.activity_loss`). Holds no weights."""

    def __init__(self, reg: Regularizer) -> None:
        super().__init__()
        self.l1, self.l2 = reg.l1, reg.l2
        #: set on an output layer whose softmax the builder folded into the loss: the penalty
        #: is on the probabilities, as in Keras
        self.softmax = False
        self.per_sample: torch.Tensor | None = None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # an export: the penalty is no part of the model's output
            return y
        flat = (F.softmax(y, dim=1) if self.softmax else y).flatten(1)
        penalty = torch.zeros(len(flat), dtype=flat.dtype, device=flat.device)
        if self.l1:
            penalty = penalty + self.l1 * flat.abs().sum(1)
        if self.l2:
            penalty = penalty + self.l2 * flat.square().sum(1)
        self.per_sample = penalty
        return y

    def __getstate__(self) -> dict[str, Any]:
        # A copy (deepcopy, pickle) starts without the last pass's penalty: it is part of that
        # pass's autograd graph, which torch refuses to copy.
        return {**super().__getstate__(), "per_sample": None}


class _Block(nn.Module):
    """A weighted layer: optional TF-style padding, the conv/linear ``core``, activation (and
    its activity regularization)."""

    def __init__(self, pre: list[nn.Module], core: nn.Module, act: nn.Module | None,
                 activity: Regularizer | None = None) -> None:
        super().__init__()
        self.pre = nn.Sequential(*pre) if pre else None
        self.core = core
        self.act = act
        self.activity = ActivityRegularization(activity) if activity is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        x = self.core(x)
        x = self.act(x) if self.act is not None else x
        return self.activity(x) if self.activity is not None else x


def dropout_multiplier(x: torch.Tensor, rate: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """What Dropout multiplies ``x`` by: ``1 / (1 - rate)`` where an element is kept, 0 where
    it is dropped, float, shaped and laid out like ``x`` (a channels-last ``x`` gets a
    channels-last multiplier; any other layout a contiguous one).

    Drawn from 64-bit words of the generator (the global one by default, as ``F.dropout``
    draws): each word gives two 32-bit values, and an element is dropped when its value is
    among the lowest ``round(rate · 2^32)``, so the drop probability is ``rate`` to within
    2^-33. The k-th value goes to the k-th element in memory order. This is about four times
    cheaper than ``bernoulli_`` (one generator call per element; measured in
    docs/performance.md) and draws a different stream from the same seed: store format 4
    (docs/reproduction.md)."""
    n = x.numel()
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=x.device)
    words.random_(-(2 ** 63), None, generator=generator)  # every bit random (random_() is 63)
    threshold = round(rate * 2 ** 32) - 2 ** 31  # drop the values below it
    keep = torch.ge(words.view(torch.int32)[:n], threshold)
    mask = keep.to(x.dtype).mul_(1.0 / (1.0 - rate))
    cl = x.dim() == 4 and not x.is_contiguous() \
        and x.is_contiguous(memory_format=torch.channels_last)
    if cl:  # memory order NHWC: the same elements get the same values as x's own order
        n_, c, h, w = x.shape
        return mask.view(n_, h, w, c).permute(0, 3, 1, 2)
    return mask.view(x.shape)


class Dropout(nn.Dropout):
    """Keras's Dropout: in training, each element zeroed with probability ``p`` and the rest
    scaled by ``1 / (1 - p)``, with the multiplier of :func:`dropout_multiplier`; the
    identity in evaluation. The backward pass multiplies by the same multiplier."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        return x * dropout_multiplier(x, self.p)


class _ReLU(nn.Module):
    """Keras's ReLU: ``x`` above ``threshold`` (else 0), clipped to ``max_value``, minus
    ``negative_slope·max(threshold - x, 0)``."""

    def __init__(self, max_value: float | None, negative_slope: float, threshold: float) -> None:
        super().__init__()
        self.max_value = max_value
        self.negative_slope = negative_slope
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.where(x > self.threshold, x, torch.zeros_like(x))
        if self.max_value is not None:
            out = torch.clamp(out, 0.0, self.max_value)
        if self.negative_slope:
            out = out - self.negative_slope * torch.relu(self.threshold - x)
        return out


class _PReLU(nn.Module):
    """``max(x, 0) - alpha·max(-x, 0)`` with ``alpha`` in Keras's layout (H, W, C) or (F,)."""

    def __init__(self, param_shape: Shape) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(param_shape))  # Keras: alpha_initializer zeros

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.permute(2, 0, 1) if self.alpha.dim() == 3 else self.alpha
        return torch.relu(x) - alpha * torch.relu(-x)


class _KerasFlatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # NCHW -> NHWC so the flat order is Keras's
            x = x.permute(0, 2, 3, 1)
        return x.flatten(1)


class _Separable(nn.Module):
    def __init__(self, depthwise: nn.Conv2d, pointwise: nn.Conv2d) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


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


class _LayerNorm(nn.Module):
    """Normalizes each sample over the channel axis (Keras's last axis; dim 1 in NCHW)."""

    def __init__(self, channels: int, epsilon: float, center: bool, scale: bool) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.gamma = nn.Parameter(torch.ones(channels)) if scale else None
        self.beta = nn.Parameter(torch.zeros(channels)) if center else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).square().mean(dim=1, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.epsilon)
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.gamma is not None:
            out = out * self.gamma.view(view)
        if self.beta is not None:
            out = out + self.beta.view(view)
        return out


class _TFAvgPool(nn.Module):
    """'same' average pooling that, like TF, divides by the count of real (unpadded) cells."""

    def __init__(self, shape: Shape, k: tuple[int, int], s: tuple[int, int]) -> None:
        super().__init__()
        self.pads = tf_padding(shape, k, s)
        # Window sums (divisor 1) over exact integer counts: one rounding, as in TF.
        self.pool = nn.AvgPool2d(k, s, divisor_override=1)
        ones = torch.ones(1, 1, shape[0], shape[1])
        self.register_buffer("count", self.pool(F.pad(ones, self.pads)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.pad(x, self.pads)) / self.count


class _GlobalPool(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.op == "avg" else x.amax(dim=(2, 3))


class _GaussianNoise(nn.Module):
    def __init__(self, stddev: float) -> None:
        super().__init__()
        self.stddev = stddev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.stddev:
            return x + torch.randn_like(x) * self.stddev
        return x


class _KerasReshape(nn.Module):
    """Reshape as Keras does on (H, W, C): through NHWC, back to NCHW for a 3-D target."""

    def __init__(self, target: Shape) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        x = x.reshape(x.shape[0], *self.target)
        return x.permute(0, 3, 1, 2) if len(self.target) == 3 else x


class _Crop(nn.Module):
    def __init__(self, top: int, bottom: int, left: int, right: int) -> None:
        super().__init__()
        self.box = (top, bottom, left, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.box
        return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]
