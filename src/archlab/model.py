"""Model builder: walks a model's Keras layers, infers shapes, builds the torch module.

Shape problems become one-line :class:`SpecError` s naming file, model, layer, field and the
input shape. Counting is done on torch's ``meta`` device, so listing a 38M-parameter model
allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from archlab.datasets import dataset_info
from archlab.errors import SpecError
from archlab.layers import (
    Activation,
    Branches,
    Concatenate,
    Dense,
    LayerSpec,
    Regularizer,
    Shape,
    ShapeProblem,
)
from archlab.spec import Study


@dataclass(frozen=True)
class SummaryRow:
    """One line of a Keras-style ``model.summary()``."""

    name: str  # e.g. "conv2d_1", "branch2/conv2d_3"
    layer: str  # Keras class name
    output_shape: Shape
    params: int
    macs: int
    spec: LayerSpec


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
    regularized: list[tuple[nn.Parameter, Regularizer]] = field(default_factory=list)

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


class _Sequential(nn.Sequential):
    """The model: its output is logits (the final softmax is folded into the loss)."""


def _count(module: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    # Keras counts BatchNormalization's moving mean and variance as non-trainable params.
    moving = sum(b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean",
                                                                            "running_var")))
    return trainable, frozen + moving


class _Walker:
    def __init__(self, where: str, model: str) -> None:
        self.where = where
        self.model = model
        self.rows: list[SummaryRow] = []
        self.regularized: list[tuple[nn.Parameter, Regularizer]] = []
        self.counters: dict[str, int] = {}

    def _name(self, layer: LayerSpec, prefix: str) -> str:
        base = "".join("_" + c.lower() if c.isupper() else c for c in layer.type).lstrip("_")
        base = base.replace("2_d", "2d")
        self.counters[base] = self.counters.get(base, 0) + 1
        return f"{prefix}{base}_{self.counters[base]}"

    def fail(self, path: str, layer: LayerSpec, problem: ShapeProblem, shape: Shape) -> SpecError:
        field = "" if problem.field == "input" else f", field '{problem.field}'"
        return SpecError(f"{self.where}: model '{self.model}', {path} ({layer.type}){field}: "
                         f"{problem.message} (input shape {shape})")

    def walk(self, layers: list[LayerSpec], shape: Shape, path: str, prefix: str,
             last_is_output: bool) -> tuple[list[nn.Module], Shape]:
        modules: list[nn.Module] = []
        for i, layer in enumerate(layers):
            here = f"{path}layer {i + 1}"
            is_output = last_is_output and i == len(layers) - 1
            if isinstance(layer, Concatenate):
                branch_modules, outs = [], []
                for b, branch in enumerate(layer.branches):
                    mods, out = self.walk(branch, shape, f"{here} (Concatenate), branch {b + 1}, ",
                                          f"{prefix}branch{b + 1}/", False)
                    branch_modules.append(nn.Sequential(*mods))
                    outs.append(out)
                if any(len(o) != 3 for o in outs) or len({o[:2] for o in outs}) != 1:
                    raise self.fail(here, layer, ShapeProblem(
                        "branches", "Expected branch outputs with the same height and width, "
                        f"received {', '.join(str(o) for o in outs)}"), shape)
                out_shape = (*outs[0][:2], sum(o[2] for o in outs))
                module: nn.Module = Branches(branch_modules)
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
                if is_output and isinstance(layer, Dense) and layer.activation == "softmax":
                    # Stable loss: the module emits logits; softmax lives in the loss/predict.
                    built_spec = layer.model_copy(update={"activation": None})
                if is_output and isinstance(layer, Activation) and layer.activation == "softmax":
                    module = nn.Identity()
                else:
                    module = built_spec.build(shape)
                self.regularized += built_spec.regularized(module)
                macs = layer.macs(shape)
            # A Concatenate row holds no params of its own: its branches' rows list them.
            params = 0 if isinstance(layer, Concatenate) else sum(_count(module))
            self.rows.append(SummaryRow(self._name(layer, prefix), layer.type, out_shape, params,
                                        macs, layer))
            modules.append(module)
            shape = out_shape
        return modules, shape


def _check_output(where: str, model: str, layers: list[LayerSpec]) -> None:
    last = layers[-1]
    here = f"{where}: model '{model}', layer {len(layers)} ({last.type})"
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
    dataset = dataset_info(study.data.dataset)
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
        raise SpecError(f"{here}{field}: Expected {classes} outputs ({study.data.dataset} has "
                        f"{classes} classes), received {out_shape[0]}")
    trainable, frozen = _count(module)
    return BuiltModel(
        name=model, module=module, input_shape=input_shape, output_shape=out_shape,
        rows=walker.rows, trainable_params=trainable, non_trainable_params=frozen,
        macs_per_sample=sum(r.macs for r in walker.rows), regularized=walker.regularized,
    )


def validate_study(study: Study) -> dict[str, BuiltModel]:
    """Check every model's shapes (on the meta device); raise the first problem as SpecError."""
    return {name: build_model(study, name, device="meta") for name in study.models}
