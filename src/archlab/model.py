"""Model builder: walks a model's Keras layers, infers shapes, builds the torch module.

Shape problems become one-line :class:`SpecError` s naming file, model, layer, field and the
input shape. Counting is done on torch's ``meta`` device, so listing a 38M-parameter model
allocates nothing; so is the memory estimate, which :func:`validate_study` checks against the
memory available before anything is trained.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from archlab.errors import SpecError
from archlab.layers import (
    Activation,
    ActivityRegularization,
    Dense,
    LayerSpec,
    Merge,
    Regularizer,
    Shape,
    ShapeProblem,
    Softmax,
    apply_max_norm,
    keras_layer_name,
)
from archlab.optimizers import Optimizer
from archlab.spec import Study

__all__ = [
    "ACTIVATION_FACTOR",
    "BYTES_PER_VALUE",
    "BuiltModel",
    "LayerMemory",
    "MemoryEstimate",
    "SummaryRow",
    "available_memory",
    "build_model",
    "check_memory",
    "format_bytes",
    "validate_study",
]


@dataclass(frozen=True)
class SummaryRow:
    """One line of a Keras-style ``model.summary()``."""

    name: str  # e.g. "conv2d_1", "branch2/conv2d_3"
    layer: str  # Keras class name
    output_shape: Shape
    params: int
    macs: int
    spec: LayerSpec
    where: str = ""  # the layer in error-message words: "layer 5 (Concatenate), branch 2, layer 1"


#: Bytes per value: archlab trains in float32.
BYTES_PER_VALUE = 4
#: Activation memory per output value of a training batch: the forward pass keeps each layer's
#: output for the backward pass, which holds a gradient of the same size.
ACTIVATION_FACTOR = 2


@dataclass(frozen=True)
class LayerMemory:
    """The memory one summary row accounts for in a training step."""

    name: str  # the summary row's name (conv2d_1)
    layer: str  # Keras class
    where: str  # "layer 3", as errors name it
    parameter_bytes: int  # weights, gradients, optimizer slots (and buffers)
    activation_bytes: int  # its output for one batch, forward and backward

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.activation_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    """What one training step of a model needs, estimated from shapes before allocating.

    Parameters: ``params × 4 B × (1 weight + 1 gradient + the optimizer's slots)`` (Adam 2,
    SGD with momentum 1, ...: :attr:`Optimizer.state_slots`); non-trainable values (moving
    statistics) once. Activations: every layer's output for one batch, ``× 4 B × 2`` (kept
    for the backward pass, and its gradient), plus the input batch. Not counted: the dataset
    itself, torch's workspace and allocator slack.
    """

    batch_size: int
    optimizer: str
    input_bytes: int
    layers: tuple[LayerMemory, ...]

    @property
    def parameter_bytes(self) -> int:
        return sum(m.parameter_bytes for m in self.layers)

    @property
    def activation_bytes(self) -> int:
        return self.input_bytes + sum(m.activation_bytes for m in self.layers)

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.activation_bytes

    @property
    def largest(self) -> LayerMemory:
        """The layer with the largest share."""
        return max(self.layers, key=lambda m: m.total_bytes)


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 MiB``, ``3.2 GiB``, ``4.0 TiB``: binary units, as memory is sold."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover - the loop returns at PiB


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes a run could use now: free GPU memory on CUDA; else MemAvailable from
    /proc/meminfo (what Linux can hand out without swapping), else total physical memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file says kB, meaning KiB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class BuiltModel:
    """A built model: the torch module plus what Keras's summary would say about it."""

    name: str
    module: nn.Module
    input_shape: Shape
    output_shape: Shape
    rows: list[SummaryRow]
    trainable_params: int
    non_trainable_params: int
    macs_per_sample: int
    memory: MemoryEstimate  # one training step at the model's batch size and optimizer
    regularized: list[tuple[nn.Parameter, Regularizer]] = field(default_factory=list)
    #: weights under Keras's max_norm constraint, with the dims their norms are taken over
    constrained: list[tuple[nn.Parameter, tuple[int, ...]]] = field(default_factory=list)
    #: the layers' activity regularizers, each keeping its last forward pass's penalty
    activity: list[ActivityRegularization] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def regularization_loss(self) -> torch.Tensor | None:
        """Keras's regularization losses: Σ l2·Σw² + l1·Σ|w| over regularized tensors."""
        terms = []
        for p, reg in self.regularized:
            if reg.l2:
                terms.append(reg.l2 * p.square().sum())
            if reg.l1:
                terms.append(reg.l1 * p.abs().sum())
        return torch.stack(terms).sum() if terms else None

    def activity_loss(self) -> torch.Tensor | None:
        """Keras 3's activity regularization loss of the last forward pass: each regularized
        layer's penalty summed over the batch and divided by the batch size."""
        terms = [m.per_sample.mean() for m in self.activity if m.per_sample is not None]
        return torch.stack(terms).sum() if terms else None

    def apply_constraints(self) -> None:
        """Keras's weight constraints (``kernel_constraint: max_norm``): after each step."""
        for p, dims in self.constrained:
            apply_max_norm(p, dims)


class _Sequential(nn.Sequential):
    """The model: its output is logits (the final softmax is folded into the loss)."""


def _count(module: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    # Keras counts BatchNormalization's moving mean and variance as non-trainable params.
    moving = sum(b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean",
                                                                            "running_var")))
    return trainable, frozen + moving


def _held(module: nn.Module) -> tuple[int, int]:
    """Values a module holds: (trainable parameters, everything else: frozen, buffers)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    other = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, other + sum(b.numel() for b in module.buffers())


class _Walker:
    def __init__(self, where: str, model: str) -> None:
        self.where = where
        self.model = model
        self.rows: list[SummaryRow] = []
        self.regularized: list[tuple[nn.Parameter, Regularizer]] = []
        self.constrained: list[tuple[nn.Parameter, tuple[int, ...]]] = []
        self.counters: dict[str, int] = {}
        self.values: list[tuple[int, int]] = []  # per row: (trainable, other) values held

    def _name(self, layer: LayerSpec, prefix: str) -> str:
        base = keras_layer_name(layer.type)
        self.counters[base] = self.counters.get(base, 0) + 1
        return f"{prefix}{base}_{self.counters[base]}"

    def fail(self, path: str, layer: LayerSpec, problem: ShapeProblem, shape: Shape) -> SpecError:
        field = "" if problem.field == "input" else f", field '{problem.field}'"
        return SpecError(f"{self.where}: model '{self.model}', {path} ({layer.type}){field}: "
                         f"{problem.message} (input shape {shape})")

    def _build(self, layer: LayerSpec, here: str, shape: Shape) -> nn.Module:
        try:
            return layer.build(shape)
        except RuntimeError as exc:
            # Even on the meta device torch refuses a tensor of more than 2^63 bytes; the schema
            # bounds each number, not their product (a 2^31-unit Dense after another).
            if "overflow" not in str(exc).lower():
                raise
            raise SpecError(f"{self.where}: model '{self.model}', {here} ({layer.type}): "
                            "Expected weights that torch can index (under 2^63 bytes), "
                            f"received a layer too large to build (input shape {shape})") \
                from None

    def walk(self, layers: list[LayerSpec], shape: Shape, path: str, prefix: str,
             last_is_output: bool) -> tuple[list[nn.Module], Shape]:
        modules: list[nn.Module] = []
        for i, layer in enumerate(layers):
            here = f"{path}layer {i + 1}"
            is_output = last_is_output and i == len(layers) - 1
            if isinstance(layer, Merge):
                branch_modules, outs = [], []
                for b, branch in enumerate(layer.branches):
                    mods, out = self.walk(branch, shape,
                                          f"{here} ({layer.type}), branch {b + 1}, ",
                                          f"{prefix}branch{b + 1}/", False)
                    branch_modules.append(nn.Sequential(*mods))
                    outs.append(out)
                try:
                    out_shape = layer.merge_shape(outs)
                except ShapeProblem as problem:
                    raise self.fail(here, layer, problem, shape) from None
                module: nn.Module = layer.build_merge(branch_modules)
                macs = 0
            else:
                try:
                    out_shape = layer.output_shape(shape)
                except ShapeProblem as problem:
                    raise self.fail(here, layer, problem, shape) from None
                if any(d <= 0 for d in out_shape):
                    raise self.fail(here, layer, ShapeProblem(
                        "strides", f"Expected a positive output size, received {out_shape}"),
                        shape)
                built_spec = layer
                folded = is_output and isinstance(layer, Dense) and layer.activation == "softmax"
                if folded:
                    # Stable loss: the module emits logits; softmax lives in the loss/predict.
                    built_spec = layer.model_copy(update={"activation": None})
                if is_output and (isinstance(layer, Softmax) or isinstance(layer, Activation)
                                  and layer.activation == "softmax"):
                    module = nn.Identity()
                else:
                    module = self._build(built_spec, here, shape)
                if folded and isinstance(getattr(module, "activity", None),
                                         ActivityRegularization):
                    module.activity.softmax = True  # type: ignore[union-attr]
                self.regularized += built_spec.regularized(module)
                self.constrained += built_spec.constrained(module)
                macs = layer.macs(shape)
            # A merge row holds no params of its own: its branches' rows list them.
            params = 0 if isinstance(layer, Merge) else sum(_count(module))
            self.rows.append(SummaryRow(self._name(layer, prefix), layer.type, out_shape, params,
                                        macs, layer, f"{here} ({layer.type})"))
            self.values.append((0, 0) if isinstance(layer, Merge) else _held(module))
            modules.append(module)
            shape = out_shape
        return modules, shape


def _check_output(where: str, model: str, layers: list[LayerSpec]) -> None:
    last = layers[-1]
    here = f"{where}: model '{model}', layer {len(layers)} ({last.type})"
    if isinstance(last, Softmax):
        return
    if not isinstance(last, Dense | Activation):
        raise SpecError(f"{here}: Expected the last layer to be Dense with activation 'softmax' "
                        f"(or Activation: softmax) for cross-entropy, received {last.type}")
    if last.activation != "softmax":
        shown = "null (linear)" if last.activation is None else f"'{last.activation}'"
        raise SpecError(f"{here}, field 'activation': Expected 'softmax' on the output layer "
                        f"for cross-entropy, received {shown}")


def build_model(study: Study, model: str, *, device: str | torch.device = "cpu",
                seed: int | None = None) -> BuiltModel:
    """Build ``study.models[model]`` as a torch module, initialized as Keras would.

    ``device="meta"`` builds shapes and counts without allocating weights. ``seed`` seeds
    torch's RNG before initialization so the same seed gives the same initial weights.
    """
    if model not in study.models:
        raise SpecError(f"{study.source}: Expected a model of study '{study.name}' "
                        f"({', '.join(study.models)}), received '{model}'")
    spec = study.models[model]
    _check_output(study.source, model, spec.layers)
    dataset = study.data.info  # the registry's record, or the one derived from the source
    input_shape: Shape = dataset.image_shape
    walker = _Walker(study.source, model)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device):
        modules, out_shape = walker.walk(list(spec.layers), input_shape, "", "", True)
        module = _Sequential(*modules)
    last = spec.layers[-1]
    here = f"{study.source}: model '{model}', layer {len(spec.layers)} ({last.type})"
    if len(out_shape) != 1:
        raise SpecError(f"{here}: Expected a flat output (classes,), received {out_shape}; add "
                        "Flatten (or a global pooling) before the output Dense")
    classes = dataset.num_classes
    if out_shape[0] != classes:
        field = ", field 'units'" if isinstance(last, Dense) else ""
        raise SpecError(f"{here}{field}: Expected {classes} outputs ({dataset.name} has "
                        f"{classes} classes), received {out_shape[0]}")
    trainable, frozen = _count(module)
    train = study.train_for(model)
    if (conflict := train.lr_conflict()) is not None:  # the study's and the model's fields
        raise SpecError(f"{study.source}: model '{model}', train: Expected {conflict[0]}, "
                        f"received {conflict[1]}")
    return BuiltModel(
        name=model, module=module, input_shape=input_shape, output_shape=out_shape,
        rows=walker.rows, trainable_params=trainable, non_trainable_params=frozen,
        macs_per_sample=sum(r.macs for r in walker.rows),
        memory=_estimate(walker, input_shape, train.batch_size, train.optimizer),
        regularized=walker.regularized, constrained=walker.constrained,
        activity=[m for m in module.modules() if isinstance(m, ActivityRegularization)],
    )


def _estimate(walker: _Walker, input_shape: Shape, batch: int, optimizer: Optimizer) -> \
        MemoryEstimate:
    per_weight = BYTES_PER_VALUE * (2 + optimizer.state_slots)  # weight, gradient, slots
    per_output = BYTES_PER_VALUE * ACTIVATION_FACTOR * batch
    layers = tuple(
        LayerMemory(row.name, row.layer, row.where,
                    trainable * per_weight + other * BYTES_PER_VALUE,
                    math.prod(row.output_shape) * per_output)
        for row, (trainable, other) in zip(walker.rows, walker.values, strict=True))
    return MemoryEstimate(batch, optimizer.name, math.prod(input_shape) * BYTES_PER_VALUE * batch,
                          layers)


def check_memory(study: Study, built: BuiltModel, available: int) -> None:
    """Raise a one-line SpecError when ``built``'s training step would not fit in ``available``
    bytes, naming the layer with the largest share."""
    memory = built.memory
    if memory.total_bytes <= available:
        return
    top = memory.largest
    share = top.total_bytes / memory.total_bytes
    raise SpecError(
        f"{study.source}: model '{built.name}', {top.where}: Expected a model whose training "
        f"step fits in the {format_bytes(available)} of memory available, received an "
        f"estimated {format_bytes(memory.total_bytes)}, of which {format_bytes(top.total_bytes)} "
        f"({share:.0%}) in this layer (batch_size {memory.batch_size}, {memory.optimizer})")


def validate_study(study: Study, *, memory_limit: int | None = None) -> dict[str, BuiltModel]:
    """Check every model's shapes (on the meta device) and, given ``memory_limit`` (bytes, e.g.
    :func:`available_memory`), that its training step fits; raise the first problem as
    SpecError."""
    built = {name: build_model(study, name, device="meta") for name in study.models}
    if memory_limit is not None:
        for b in built.values():
            check_memory(study, b, memory_limit)
    return built
