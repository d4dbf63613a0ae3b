"""The base of every Keras layer spec, and the registry that the spec's layer union is built from.

Shapes are Keras shapes without the batch axis: ``(H, W, C)`` for images, ``(F,)`` for vectors.
Tensors inside the built torch module are NCHW; only ``Flatten`` cares (it flattens in Keras's
HWC order, so a Dense kernel after it lines up with Keras's weights one for one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

from archlab.fields import NonNegFloat, Pair
from archlab.lazy import LazyModule, nn, torch

__all__ = [
    "ACTIVATIONS",
    "LAYER_TYPES",
    "MAX_NORM_VALUE",
    "ActivationName",
    "Initializer",
    "LayerSpec",
    "Regularizer",
    "Shape",
    "ShapeProblem",
    "Weighted",
    "activation_module",
    "apply_max_norm",
    "init_tensor",
    "keras_layer_name",
    "layer_names",
    "register_layer",
    "same_pads",
    "spatial",
    "tf_padding",
    "window_out",
]

_m = LazyModule("archlab.layers._modules")  # the torch modules, imported on first use


Shape = tuple[int, ...]

#: Each activation's torch module factory (torch is imported when one is first built).
ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "linear": None,
    "relu": lambda: nn.ReLU(),
    "elu": lambda: nn.ELU(),
    "selu": lambda: nn.SELU(),
    "gelu": lambda: nn.GELU(),  # Keras's default is the exact (erf) form, as is torch's
    "tanh": lambda: nn.Tanh(),
    "sigmoid": lambda: nn.Sigmoid(),
    "softmax": lambda: nn.Softmax(dim=1),
    "swish": lambda: nn.SiLU(),
    "silu": lambda: nn.SiLU(),
    "softplus": lambda: nn.Softplus(),
    "softsign": lambda: nn.Softsign(),
    "relu6": lambda: nn.ReLU6(),
}
# The accepted names are the registry's keys: one list for the schema, the builder and the docs.
ActivationName = Literal[tuple(ACTIVATIONS)] | None  # type: ignore[valid-type]

Initializer = Literal[
    "glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal",
    "lecun_uniform", "zeros", "ones", "random_normal", "random_uniform",
]


class Regularizer(BaseModel):
    """``{l2: 0.01}``: adds ``l2·Σw²`` (and ``l1·Σ|w|``) to the loss, as Keras does."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    l1: NonNegFloat = 0.0
    l2: NonNegFloat = 0.0

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """Keras's string identifiers: ``l2`` is ``{l2: 0.01}``, ``l1`` is ``{l1: 0.01}``."""
        if isinstance(value, str) and value.lower() in ("l1", "l2"):
            return {value.lower(): 0.01}
        return value

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


def same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow 'same': output ceil(size/s); the odd extra pixel goes bottom/right."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _valid_out(size: int, k: int, s: int) -> int:
    return (size - k) // s + 1


def spatial(shape: Shape, layer: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeProblem(
            "input", f"Expected a 3-D (height, width, channels) input for {layer}, received a "
            f"flat one; {layer} cannot follow Flatten/Dense",
        )
    return shape  # type: ignore[return-value]


def window_out(shape: Shape, k: Pair, s: Pair, padding: str, field: str, layer: str) -> Shape:
    h, w, c = spatial(shape, layer)
    if padding == "same":
        return (same_pads(h, k[0], s[0])[0], same_pads(w, k[1], s[1])[0], c)
    if k[0] > h or k[1] > w:
        raise ShapeProblem(
            field, f"Expected a window no larger than the {h}x{w} input with padding 'valid', "
            f"received {k[0]}x{k[1]}",
        )
    return (_valid_out(h, k[0], s[0]), _valid_out(w, k[1], s[1]), c)


def tf_padding(shape: Shape, k: Pair, s: Pair) -> tuple[int, int, int, int]:
    h, w, _ = shape
    _, top, bottom = same_pads(h, k[0], s[0])
    _, left, right = same_pads(w, k[1], s[1])
    return (left, right, top, bottom)


# ---------------------------------------------------------------------------------------------
# Layers


class LayerSpec(BaseModel):
    """Base of every layer: Keras arguments as fields; serializes to ``{Type: {args}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    #: A Keras alias (MaxPool2D of MaxPooling2D): accepted, not listed among the layers.
    alias: ClassVar[bool] = False

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
            elif isinstance(value, tuple):  # pairs, and pairs of pairs (YAML has no tuples)
                value = [list(v) if isinstance(v, tuple) else v for v in value]
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

    def constrained(self, module: nn.Module) -> list[tuple[nn.Parameter, tuple[int, ...]]]:
        """Weights under Keras's ``max_norm`` constraint, each with the torch dims its norm
        is taken over (applied after every optimizer step: :func:`apply_max_norm`)."""
        return []


#: Keras's ``max_norm`` string: MaxNorm(max_value=2, axis=0); ε is Keras's backend epsilon.
MAX_NORM_VALUE = 2.0
_KERAS_EPSILON = 1e-7


def apply_max_norm(p: torch.Tensor, dims: tuple[int, ...],
                   max_value: float = MAX_NORM_VALUE) -> None:
    """Rescale ``p`` in place as Keras's MaxNorm does: ``w · clip(‖w‖, 0, max) / (ε + ‖w‖)``."""
    with torch.no_grad():
        norms = p.square().sum(dim=dims, keepdim=True).sqrt()
        p.mul_(norms.clamp(0.0, max_value) / (_KERAS_EPSILON + norms))


def activation_module(name: str | None) -> nn.Module | None:
    factory = ACTIVATIONS[name or "linear"]
    return factory() if factory else None


class Weighted(LayerSpec):
    activation: ActivationName = None
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None
    activity_regularizer: Regularizer | None = None
    kernel_constraint: Literal["max_norm"] | None = None

    def _finish(self, core: nn.Module, fan_in: int, fan_out: int,
                pre: list[nn.Module]) -> nn.Module:
        init_tensor(core.weight, self.kernel_initializer, fan_in, fan_out)
        if core.bias is not None:
            # Keras computes a bias's fans from its own 1-D shape: fan_in = fan_out = units.
            units = core.bias.shape[0]
            init_tensor(core.bias, self.bias_initializer, units, units)
        return _m._Block(pre, core, activation_module(self.activation), self.activity_regularizer)

    def regularized(self, module: nn.Module) -> list[tuple[nn.Parameter, Regularizer]]:
        core = module.core  # type: ignore[union-attr]  # a _Block
        out = []
        if self.kernel_regularizer is not None:
            out.append((core.weight, self.kernel_regularizer))
        if self.bias_regularizer is not None and core.bias is not None:
            out.append((core.bias, self.bias_regularizer))
        return out

    def constrained(self, module: nn.Module) -> list[tuple[nn.Parameter, tuple[int, ...]]]:
        if self.kernel_constraint is None:
            return []
        weight = module.core.weight  # type: ignore[union-attr]  # a _Block
        # Keras's axis 0 of its kernel: Dense (in, out) -> torch's (out, in) dim 1; Conv2D
        # (kh, kw, in, out) -> torch's (out, in, kh, kw) dim 2.
        return [(weight, (1,) if weight.dim() == 2 else (2,))]


# ---------------------------------------------------------------------------------------------
# The registry: each layer class registers itself; the spec's union and `archlab zoo layers`
# read it, so adding a layer is one class in one module.

LAYER_TYPES: dict[str, type[LayerSpec]] = {}
L = TypeVar("L", bound=type[LayerSpec])


def register_layer(cls: L) -> L:
    """Class decorator: make a layer spec known by its Keras name (its ``type`` literal)."""
    name = cls.model_fields["type"].default
    if not isinstance(name, str) or name in LAYER_TYPES:
        raise TypeError(f"Expected a new Keras layer name on {cls.__name__}, received {name!r}")
    LAYER_TYPES[name] = cls
    return cls


def keras_layer_name(layer_type: str) -> str:
    """The snake-case base Keras gives a layer's automatic name (``keras.src.utils.naming``):
    ``Conv2D`` -> ``conv2d``, ``ReLU`` -> ``re_lu``, ``LeakyReLU`` -> ``leaky_re_lu``,
    ``MaxPooling2D`` -> ``max_pooling2d``; archlab's summary numbers it as ``re_lu_7``."""
    name = re.sub(r"\W+", "", layer_type)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def layer_names() -> list[str]:
    """The registered layers' Keras names, aliases left out (what error messages list)."""
    return [name for name, cls in LAYER_TYPES.items() if not cls.alias]
