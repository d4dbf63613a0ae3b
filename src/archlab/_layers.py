"""Keras-named layers: their spec (pydantic), shape inference and the torch modules they build.

Shapes are Keras shapes without the batch axis: ``(H, W, C)`` for images, ``(F,)`` for vectors.
Tensors inside the built torch module are NCHW; only ``Flatten`` cares (it flattens in Keras's
HWC order, so a Dense kernel after it lines up with Keras's weights one for one).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

import torch
import torch.nn.functional as F
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from torch import nn

Shape = tuple[int, ...]

# ---------------------------------------------------------------------------------------------
# Field types


def _pair(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list):
        return tuple(value)
    return value


PosInt = Annotated[int, Field(strict=True, gt=0)]
Pair = Annotated[tuple[PosInt, PosInt],
                 BeforeValidator(_pair, json_schema_input_type=Union[PosInt,  # noqa: UP007
                                                                     tuple[PosInt, PosInt]])]
NonNegFloat = Annotated[float, Field(strict=True, ge=0)]
Rate = Annotated[float, Field(strict=True, ge=0, lt=1)]

ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "linear": None,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,  # Keras's default is the exact (erf) form, as is torch's
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softmax": lambda: nn.Softmax(dim=1),
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "relu6": nn.ReLU6,
}
ActivationName = Literal[
    "linear", "relu", "elu", "selu", "gelu", "tanh", "sigmoid", "softmax", "swish", "silu",
    "softplus", "softsign", "relu6",
] | None

Initializer = Literal[
    "glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal",
    "lecun_uniform", "zeros", "ones", "random_normal", "random_uniform",
]


class Regularizer(BaseModel):
    """``{l2: 0.01}``: adds ``l2·Σw²`` (and ``l1·Σ|w|``) to the loss, as Keras does."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    l1: NonNegFloat = 0.0
    l2: NonNegFloat = 0.0

    def to_config(self) -> dict[str, float]:
        return {k: v for k, v in (("l1", self.l1), ("l2", self.l2)) if v}


# ---------------------------------------------------------------------------------------------
# Keras initializers (keras/src/initializers): *_normal are truncated at 2σ, so the stddev is
# divided by 0.8796..., the stddev of a unit normal truncated to [-2, 2].

_TRUNC = 0.87962566103423978


def init_tensor(t: torch.Tensor, name: str, fan_in: int, fan_out: int) -> None:
    """Fill ``t`` in place as Keras's initializer ``name`` would (fans as Keras computes them)."""
    with torch.no_grad():
        if name == "zeros":
            t.zero_()
        elif name == "ones":
            t.fill_(1.0)
        elif name == "random_normal":
            t.normal_(0.0, 0.05)
        elif name == "random_uniform":
            t.uniform_(-0.05, 0.05)
        else:
            family, dist = name.split("_")
            n = {"glorot": (fan_in + fan_out) / 2.0, "he": fan_in / 2.0, "lecun": fan_in}[family]
            if dist == "uniform":
                limit = math.sqrt(3.0 / n)
                t.uniform_(-limit, limit)
            else:
                std = math.sqrt(1.0 / n) / _TRUNC
                nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std)


# ---------------------------------------------------------------------------------------------
# Errors raised during shape inference; the builder adds file/model/layer context.


class ShapeProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow 'same': output ceil(size/s); the odd extra pixel goes bottom/right."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _valid_out(size: int, k: int, s: int) -> int:
    return (size - k) // s + 1


def _spatial(shape: Shape, layer: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeProblem(
            "input", f"Expected a 3-D (height, width, channels) input for {layer}, received a "
            f"flat one; {layer} cannot follow Flatten/Dense",
        )
    return shape  # type: ignore[return-value]


def _window_out(shape: Shape, k: Pair, s: Pair, padding: str, field: str, layer: str) -> Shape:
    h, w, c = _spatial(shape, layer)
    if padding == "same":
        return (_same_pads(h, k[0], s[0])[0], _same_pads(w, k[1], s[1])[0], c)
    if k[0] > h or k[1] > w:
        raise ShapeProblem(
            field, f"Expected a window no larger than the {h}x{w} input with padding 'valid', "
            f"received {k[0]}x{k[1]}",
        )
    return (_valid_out(h, k[0], s[0]), _valid_out(w, k[1], s[1]), c)


class _Pad(nn.Module):
    """Asymmetric TF-style padding (left, right, top, bottom) with a fill value."""

    def __init__(self, pads: tuple[int, int, int, int], value: float = 0.0) -> None:
        super().__init__()
        self.pads = pads
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, value=self.value)


def _tf_padding(shape: Shape, k: Pair, s: Pair) -> tuple[int, int, int, int]:
    h, w, _ = shape
    _, top, bottom = _same_pads(h, k[0], s[0])
    _, left, right = _same_pads(w, k[1], s[1])
    return (left, right, top, bottom)


# ---------------------------------------------------------------------------------------------
# Layers


class LayerSpec(BaseModel):
    """Base of every layer: Keras arguments as fields; serializes to ``{Type: {args}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str

    def to_config(self) -> str | dict[str, Any]:
        """The YAML form: the bare name, or ``{Type: {args that differ from Keras's defaults}}``."""
        args: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name == "type" or (value == field.default and name not in self.model_fields_set):
                continue
            if isinstance(value, Regularizer):
                value = value.to_config()
            elif name == "branches":
                value = [[layer.to_config() for layer in branch] for branch in value]
            elif isinstance(value, tuple):
                value = list(value)
            args[name] = value
        return {self.type: args} if args else self.type

    def output_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError

    def build(self, shape: Shape) -> nn.Module:
        """Return a torch module mapping a batch of ``shape`` to ``output_shape(shape)``."""
        return nn.Identity()

    def macs(self, shape: Shape) -> int:
        """Multiply-accumulates per sample (weights layers only; the rest are negligible)."""
        return 0

    def regularized(self, module: nn.Module) -> list[tuple[nn.Parameter, Regularizer]]:
        return []


def _activation_module(name: str | None) -> nn.Module | None:
    factory = ACTIVATIONS[name or "linear"]
    return factory() if factory else None


class _Block(nn.Module):
    """A weighted layer: optional TF-style padding, the conv/linear ``core``, activation."""

    def __init__(self, pre: list[nn.Module], core: nn.Module, act: nn.Module | None) -> None:
        super().__init__()
        self.pre = nn.Sequential(*pre) if pre else None
        self.core = core
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        x = self.core(x)
        return self.act(x) if self.act is not None else x


class _Weighted(LayerSpec):
    activation: ActivationName = None
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None

    def _finish(self, core: nn.Module, fan_in: int, fan_out: int,
                pre: list[nn.Module]) -> nn.Module:
        init_tensor(core.weight, self.kernel_initializer, fan_in, fan_out)
        if core.bias is not None:
            # Keras computes a bias's fans from its own 1-D shape: fan_in = fan_out = units.
            units = core.bias.shape[0]
            init_tensor(core.bias, self.bias_initializer, units, units)
        return _Block(pre, core, _activation_module(self.activation))

    def regularized(self, module: nn.Module) -> list[tuple[nn.Parameter, Regularizer]]:
        core = module.core  # type: ignore[union-attr]  # a _Block
        out = []
        if self.kernel_regularizer is not None:
            out.append((core.weight, self.kernel_regularizer))
        if self.bias_regularizer is not None and core.bias is not None:
            out.append((core.bias, self.bias_regularizer))
        return out


class Conv2D(_Weighted):
    type: Literal["Conv2D"] = "Conv2D"
    filters: PosInt
    kernel_size: Pair
    strides: Pair = (1, 1)
    padding: Literal["valid", "same"] = "valid"

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = _window_out(shape, self.kernel_size, self.strides, self.padding,
                              "kernel_size", "Conv2D")
        return (h, w, self.filters)

    def build(self, shape: Shape) -> nn.Module:
        cin = shape[2]
        kh, kw = self.kernel_size
        pads = _tf_padding(shape, self.kernel_size, self.strides) if self.padding == "same" \
            else (0, 0, 0, 0)
        pre: list[nn.Module] = []
        if pads[0] == pads[1] and pads[2] == pads[3]:
            padding: tuple[int, int] = (pads[2], pads[0])  # symmetric: let the conv pad (faster)
        else:
            pre.append(_Pad(pads))
            padding = (0, 0)
        core = nn.Conv2d(cin, self.filters, self.kernel_size, self.strides, padding,
                         bias=self.use_bias)
        return self._finish(core, cin * kh * kw, self.filters * kh * kw, pre)

    def macs(self, shape: Shape) -> int:
        h, w, c = self.output_shape(shape)
        return h * w * c * self.kernel_size[0] * self.kernel_size[1] * shape[2]


class Dense(_Weighted):
    type: Literal["Dense"] = "Dense"
    units: PosInt

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise ShapeProblem("input", "Expected a flat input for Dense, received a "
                                        f"{len(shape)}-D one; add Flatten (or a global "
                                        "pooling) before it")
        return (self.units,)

    def build(self, shape: Shape) -> nn.Module:
        core = nn.Linear(shape[0], self.units, bias=self.use_bias)
        return self._finish(core, shape[0], self.units, [])

    def macs(self, shape: Shape) -> int:
        return shape[0] * self.units


class _Pool2D(LayerSpec):
    pool_size: Pair = (2, 2)
    strides: Pair | None = None
    padding: Literal["valid", "same"] = "valid"

    @property
    def _strides(self) -> tuple[int, int]:
        return self.strides or self.pool_size  # Keras: strides default to pool_size

    def output_shape(self, shape: Shape) -> Shape:
        return _window_out(shape, self.pool_size, self._strides, self.padding, "pool_size",
                           self.type)


class MaxPooling2D(_Pool2D):
    type: Literal["MaxPooling2D"] = "MaxPooling2D"

    def build(self, shape: Shape) -> nn.Module:
        pool = nn.MaxPool2d(self.pool_size, self._strides)
        if self.padding == "valid":
            return pool
        pads = _tf_padding(shape, self.pool_size, self._strides)
        if not any(pads):
            return pool
        # TF pads max-pooling with -inf: padded cells never win.
        return nn.Sequential(_Pad(pads, float("-inf")), pool)


class _TFAvgPool(nn.Module):
    """'same' average pooling that, like TF, divides by the count of real (unpadded) cells."""

    def __init__(self, shape: Shape, k: tuple[int, int], s: tuple[int, int]) -> None:
        super().__init__()
        self.pads = _tf_padding(shape, k, s)
        # Window sums (divisor 1) over exact integer counts: one rounding, as in TF.
        self.pool = nn.AvgPool2d(k, s, divisor_override=1)
        ones = torch.ones(1, 1, shape[0], shape[1])
        self.register_buffer("count", self.pool(F.pad(ones, self.pads)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.pad(x, self.pads)) / self.count


class AveragePooling2D(_Pool2D):
    type: Literal["AveragePooling2D"] = "AveragePooling2D"

    def build(self, shape: Shape) -> nn.Module:
        if self.padding == "same" and any(_tf_padding(shape, self.pool_size, self._strides)):
            return _TFAvgPool(shape, self.pool_size, self._strides)
        return nn.AvgPool2d(self.pool_size, self._strides)


class _GlobalPool(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.op == "avg" else x.amax(dim=(2, 3))


class GlobalAveragePooling2D(LayerSpec):
    type: Literal["GlobalAveragePooling2D"] = "GlobalAveragePooling2D"

    def output_shape(self, shape: Shape) -> Shape:
        return (_spatial(shape, self.type)[2],)

    def build(self, shape: Shape) -> nn.Module:
        return _GlobalPool("avg")


class GlobalMaxPooling2D(GlobalAveragePooling2D):
    type: Literal["GlobalMaxPooling2D"] = "GlobalMaxPooling2D"  # type: ignore[assignment]

    def build(self, shape: Shape) -> nn.Module:
        return _GlobalPool("max")


class BatchNormalization(LayerSpec):
    type: Literal["BatchNormalization"] = "BatchNormalization"
    axis: Literal[-1] = -1
    momentum: Rate = 0.99
    epsilon: Annotated[float, Field(strict=True, gt=0)] = 1e-3
    center: bool = True
    scale: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        # Keras: moving = momentum·moving + (1-momentum)·batch; torch's momentum is the other side.
        bn = cls(shape[-1], eps=self.epsilon, momentum=1.0 - self.momentum,
                 affine=self.center or self.scale)
        # Keras has no gamma without `scale` and no beta without `center` (not even frozen ones:
        # they would count as params); torch's batch_norm takes weight/bias None as 1/0.
        if bn.affine and not self.scale:
            bn.register_parameter("weight", None)
        if bn.affine and not self.center:
            bn.register_parameter("bias", None)
        return bn


class Dropout(LayerSpec):
    type: Literal["Dropout"] = "Dropout"
    rate: Rate

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return nn.Dropout(self.rate)


class _KerasFlatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # NCHW -> NHWC so the flat order is Keras's
            x = x.permute(0, 2, 3, 1)
        return x.flatten(1)


class Flatten(LayerSpec):
    type: Literal["Flatten"] = "Flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def build(self, shape: Shape) -> nn.Module:
        return _KerasFlatten() if len(shape) == 3 else nn.Identity()


class Activation(LayerSpec):
    type: Literal["Activation"] = "Activation"
    activation: ActivationName

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def build(self, shape: Shape) -> nn.Module:
        return _activation_module(self.activation) or nn.Identity()


class _Branches(nn.Module):
    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)  # dim 1 = channels (NCHW)


class Concatenate(LayerSpec):
    """Feeds its input to every branch and concatenates the outputs on the channel axis."""

    type: Literal["Concatenate"] = "Concatenate"
    axis: Literal[-1] = -1
    branches: Annotated[list[list[LayerItem]], Field(min_length=2)]

    def output_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError("the builder walks branches itself")


Layer = Annotated[
    Union[  # noqa: UP007  (pydantic needs the Union to build a discriminated union)
        Conv2D, Dense, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
        GlobalMaxPooling2D, BatchNormalization, Dropout, Flatten, Activation, Concatenate,
    ],
    Field(discriminator="type"),
]

LAYER_TYPES: dict[str, type[LayerSpec]] = {  # same names as LayerName
    cls.model_fields["type"].default: cls
    for cls in (Conv2D, Dense, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
                GlobalMaxPooling2D, BatchNormalization, Dropout, Flatten, Activation,
                Concatenate)
}


def layer_item(value: Any) -> Any:
    """Turn the YAML form (``Flatten`` or ``{Conv2D: {...}}``) into ``{type: ..., **args}``."""
    if isinstance(value, LayerSpec):
        return value
    if isinstance(value, str):
        name, args = value, {}
    elif isinstance(value, dict) and "type" in value:
        return value
    elif isinstance(value, dict) and len(value) == 1:
        name, args = next(iter(value.items()))
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise PydanticCustomError(
                "layer_args", "Expected a mapping of arguments for {name}, received {args}",
                {"name": name, "args": repr(args)},
            )
    else:
        keys = list(value) if isinstance(value, dict) else value
        raise PydanticCustomError(
            "layer_item", "Expected one layer per list item, like `- Conv2D: {{filters: 32}}`, "
            "received {keys}", {"keys": repr(keys)},
        )
    if name not in LAYER_TYPES:
        close = difflib.get_close_matches(str(name), LAYER_TYPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PydanticCustomError(
            "unknown_layer", "Unknown layer '{name}'{hint}; expected one of {known}",
            {"name": name, "hint": hint, "known": ", ".join(LAYER_TYPES)},
        )
    return {"type": name, **args}


LayerName = Literal[
    "Conv2D", "Dense", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "GlobalMaxPooling2D", "BatchNormalization", "Dropout", "Flatten", "Activation", "Concatenate",
]
# The JSON Schema shows what users write: `Flatten` or `{Conv2D: {...}}`.
LayerItem = Annotated[Layer, BeforeValidator(
    layer_item, json_schema_input_type=Union[  # noqa: UP007
        LayerName, Annotated[dict[LayerName, Union[dict[str, Any], None]],  # noqa: UP007
                             Field(min_length=1, max_length=1)]])]
LayerList = list[LayerItem]
Concatenate.model_rebuild()
