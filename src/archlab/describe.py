"""One description of a model: the Keras summary, the compact one-line form and the results
table's architecture columns all read it.

Each layer is described once, from its typed spec, by :func:`describe_layer` (a
:class:`LayerFacts`). A built model adds what only building knows (Keras names, output shapes,
params, MACs, memory): :func:`describe_model` joins the two in a :class:`ModelDescription`,
which renders the summary (:meth:`~ModelDescription.summary`), the compact form
(:meth:`~ModelDescription.compact`) and the table columns (:attr:`~ModelDescription.
architecture`). The results table has typed layers but no built model:
:func:`describe_architecture` reads the same :class:`LayerFacts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from archlab.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Flatten,
    GaussianNoise,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    LayerList,
    LayerNormalization,
    LayerSpec,
    LeakyReLU,
    MaxPooling2D,
    Merge,
    SeparableConv2D,
    Shape,
    SpatialDropout2D,
    UpSampling2D,
)
from archlab.model import BuiltModel, MemoryEstimate, SummaryRow, format_bytes

__all__ = [
    "ARROW",
    "Architecture",
    "LayerFacts",
    "ModelDescription",
    "compact_architecture",
    "describe_architecture",
    "describe_layer",
    "describe_model",
    "format_shape",
    "summary_text",
]

ARROW = "\N{RIGHTWARDS ARROW}"
_TIMES = "\N{MULTIPLICATION SIGN}"


def _dims(shape: Sequence[int], times: str = _TIMES) -> str:
    return times.join(str(d) for d in shape)


def _k(v: tuple[int, int], times: str = _TIMES) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}{times}{v[1]}"


# ---------------------------------------------------------------------------------------------
# One layer


@dataclass(frozen=True)
class LayerFacts:
    """What every view says about one layer, read from its spec alone (no shapes needed)."""

    layer: str  # Keras class name
    label: str  # the compact form: "conv5 32 same", "avgpool2/1", "drop0.25"
    kernel: str | None = None  # Conv2D's kernel, table style: "5", "3x5"
    filters: int | None = None
    padding: str | None = None  # Conv2D's padding
    pooling: str | None = None  # table style: "2/2", "avg 3/1", "global avg"
    dropout: float | None = None
    batch_norm: bool = False
    units: int | None = None  # Dense
    regularizers: tuple[str, ...] = ()  # "l2 0.01"
    branches: tuple[tuple[LayerFacts, ...], ...] = ()  # Concatenate, Add, ...

    def walk(self) -> list[LayerFacts]:
        """This layer, then every layer of its branches (depth first)."""
        return [self] + [f for branch in self.branches for layer in branch for f in layer.walk()]


def _window(spec: MaxPooling2D | AveragePooling2D, times: str, always_strides: bool) -> str:
    """``2`` or ``3/1``: the pool size, then the strides (always, or where they differ)."""
    strides = spec.strides or spec.pool_size  # Keras: strides default to pool_size
    shown = always_strides or strides != spec.pool_size
    return _k(spec.pool_size, times) + (f"/{_k(strides, times)}" if shown else "")


def describe_layer(spec: LayerSpec) -> LayerFacts:
    """The one description of a layer that the compact form and the table columns share."""
    regs = tuple(", ".join(f"{k} {v:g}" for k, v in reg.to_config().items())
                 for reg in (getattr(spec, "kernel_regularizer", None),
                             getattr(spec, "bias_regularizer", None)) if reg and reg.to_config())
    same = " same" if getattr(spec, "padding", None) == "same" else ""
    if isinstance(spec, Conv2D):
        strides = f"/{_k(spec.strides)}" if spec.strides != (1, 1) else ""
        return LayerFacts(spec.type, f"conv{_k(spec.kernel_size)} {spec.filters}{strides}{same}",
                          kernel=_k(spec.kernel_size, "x"), filters=spec.filters,
                          padding=spec.padding, regularizers=regs)
    if isinstance(spec, MaxPooling2D | AveragePooling2D):
        avg = isinstance(spec, AveragePooling2D)
        label = ("avgpool" if avg else "pool") + _window(spec, _TIMES, False) + same
        return LayerFacts(spec.type, label,
                          pooling=("avg " if avg else "") + _window(spec, "x", True))
    if isinstance(spec, GlobalMaxPooling2D):  # a subclass of GlobalAveragePooling2D: first
        return LayerFacts(spec.type, "gmp", pooling="global max")
    if isinstance(spec, GlobalAveragePooling2D):
        return LayerFacts(spec.type, "gap", pooling="global avg")
    if isinstance(spec, Dense):
        return LayerFacts(spec.type, f"dense {spec.units}", units=spec.units, regularizers=regs)
    if isinstance(spec, Dropout):
        return LayerFacts(spec.type, f"drop{spec.rate:g}", dropout=spec.rate)
    if isinstance(spec, BatchNormalization):
        return LayerFacts(spec.type, "bn", batch_norm=True)
    if isinstance(spec, Flatten):
        return LayerFacts(spec.type, "flatten")
    if isinstance(spec, Activation):
        return LayerFacts(spec.type, str(spec.activation or "linear"))
    if isinstance(spec, Merge):
        branches = tuple(tuple(describe_layer(layer) for layer in branch)
                         for branch in spec.branches)
        name = "concat" if isinstance(spec, Concatenate) else spec.type.lower()
        label = name + "[" + " | ".join(" ".join(f.label for f in b) or "id"
                                       for b in branches) + "]"
        return LayerFacts(spec.type, label, branches=branches)
    if isinstance(spec, SeparableConv2D):
        strides = f"/{_k(spec.strides)}" if spec.strides != (1, 1) else ""
        return LayerFacts(spec.type, f"sepconv{_k(spec.kernel_size)} {spec.filters}{strides}"
                          f"{same}", kernel=_k(spec.kernel_size, "x"), filters=spec.filters,
                          padding=spec.padding, regularizers=regs)
    if isinstance(spec, DepthwiseConv2D):
        strides = f"/{_k(spec.strides)}" if spec.strides != (1, 1) else ""
        times = f" {_TIMES}{spec.depth_multiplier}" if spec.depth_multiplier != 1 else ""
        return LayerFacts(spec.type, f"dwconv{_k(spec.kernel_size)}{times}{strides}{same}")
    if isinstance(spec, LeakyReLU):
        return LayerFacts(spec.type, f"leakyrelu{spec.negative_slope:g}")
    if isinstance(spec, SpatialDropout2D):
        return LayerFacts(spec.type, f"sdrop{spec.rate:g}", dropout=spec.rate)
    if isinstance(spec, GaussianNoise):
        return LayerFacts(spec.type, f"noise{spec.stddev:g}")
    if isinstance(spec, LayerNormalization):
        return LayerFacts(spec.type, "ln")
    if isinstance(spec, UpSampling2D):
        return LayerFacts(spec.type, f"up{_k(spec.size)}")
    return LayerFacts(spec.type, spec.type.lower())  # a newly registered layer


# ---------------------------------------------------------------------------------------------
# The notebooks' table columns


@dataclass(frozen=True)
class Architecture:
    """What the notebooks' hand-typed tables described about each model."""

    conv_layers: int
    kernels: str
    channels: str
    padding: str
    pooling: str
    dropout: str
    batch_norm: int
    l2: str
    dense: str

    @classmethod
    def of(cls, layers: Sequence[LayerFacts]) -> Architecture:
        facts = [f for layer in layers for f in layer.walk()]
        convs = [f for f in facts if f.filters is not None]
        return cls(
            conv_layers=len(convs), kernels=",".join(f.kernel or "" for f in convs) or "-",
            channels="-".join(str(f.filters) for f in convs) or "-",
            padding="/".join(sorted({f.padding or "" for f in convs})) or "-",
            pooling=",".join(f.pooling for f in facts if f.pooling) or "-",
            dropout=",".join(f"{f.dropout:g}" for f in facts if f.dropout is not None) or "-",
            batch_norm=sum(f.batch_norm for f in facts),
            l2=";".join(sorted({r for f in facts for r in f.regularizers})) or "-",
            dense="-".join(str(f.units) for f in facts if f.units is not None))


_LAYERS: TypeAdapter[list[LayerSpec]] = TypeAdapter(LayerList)


def describe_architecture(layers: Sequence[LayerSpec] | Sequence[Any]) -> Architecture:
    """A model's table columns from its typed layers (``RunConfig.layers``); the YAML form
    (``["Flatten", {"Dense": {...}}]``) is parsed first."""
    specs = [la for la in layers if isinstance(la, LayerSpec)]
    if len(specs) != len(layers):
        specs = _LAYERS.validate_python(list(layers))
    return Architecture.of([describe_layer(spec) for spec in specs])


# ---------------------------------------------------------------------------------------------
# A built model


def format_shape(shape: Shape) -> str:
    return "(None, " + ", ".join(str(d) for d in shape) + ")"


@dataclass(frozen=True)
class ModelDescription:
    """Everything the views of one built model show, described once."""

    name: str
    input_shape: Shape
    rows: tuple[SummaryRow, ...]  # Keras's summary rows, branch layers included
    layers: tuple[LayerFacts, ...]  # the top-level layers, in order
    trainable_params: int
    non_trainable_params: int
    macs_per_sample: int
    memory: MemoryEstimate

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    @property
    def architecture(self) -> Architecture:
        return Architecture.of(self.layers)

    def compact(self) -> str:
        """``28×28×1 →conv5 32→ 24×24×32 →pool2, drop0.25→ 12×12×32 →flatten→ …``.

        Every weighted layer (Conv2D, Dense, Concatenate) and every layer that changes the
        shape starts a new arrow; shape-preserving layers (dropout, batch norm, activation) join
        the arrow before them.
        """
        top = [r for r in self.rows if "/" not in r.name]  # branch rows: in the concat label
        parts = [_dims(self.input_shape)]
        pending: list[str] = []
        shape = tuple(self.input_shape)
        for row, facts in zip(top, self.layers, strict=True):
            out = tuple(row.output_shape)
            if pending and (out != shape or isinstance(
                    row.spec, Conv2D | Dense | Merge | DepthwiseConv2D | SeparableConv2D)):
                parts.append(f"{ARROW}{', '.join(pending)}{ARROW} {_dims(shape)}")
                pending = []
            pending.append(facts.label)
            shape = out
        if pending:
            parts.append(f"{ARROW}{', '.join(pending)}{ARROW} {_dims(shape)}")
        return " ".join(parts)

    def summary(self) -> str:
        """Keras's ``model.summary()`` as plain text, with MACs and the memory estimate."""
        width = max([len(f"{r.name} ({r.layer})") for r in self.rows] + [20]) + 2
        rule = width + 40
        lines = [f'Model: "{self.name}"', "_" * rule,
                 f"{'Layer (type)':<{width}}{'Output Shape':<26}{'Param #':>12}", "=" * rule]
        for r in self.rows:
            lines.append(f"{r.name + ' (' + r.layer + ')':<{width}}"
                         f"{format_shape(r.output_shape):<26}{r.params:>12,}")
        m = self.memory
        lines += ["=" * rule, f"Total params: {self.total_params:,}",
                  f"Trainable params: {self.trainable_params:,}",
                  f"Non-trainable params: {self.non_trainable_params:,}",
                  f"MACs per sample: {self.macs_per_sample:,}",
                  f"Training memory (estimate): {format_bytes(m.total_bytes)} = "
                  f"{format_bytes(m.parameter_bytes)} parameters (weights, gradients, "
                  f"{m.optimizer} state) + {format_bytes(m.activation_bytes)} activations "
                  f"(batch {m.batch_size})"]
        return "\n".join(lines)


def describe_model(built: BuiltModel) -> ModelDescription:
    """The one description of a built model."""
    specs = [r.spec for r in built.rows if "/" not in r.name]
    return ModelDescription(
        name=built.name, input_shape=built.input_shape, rows=tuple(built.rows),
        layers=tuple(describe_layer(s) for s in specs), trainable_params=built.trainable_params,
        non_trainable_params=built.non_trainable_params, macs_per_sample=built.macs_per_sample,
        memory=built.memory)


def compact_architecture(built: BuiltModel) -> str:
    """The compact one-line form of a built model (see :meth:`ModelDescription.compact`)."""
    return describe_model(built).compact()


def summary_text(built: BuiltModel) -> str:
    """Keras's ``model.summary()`` as plain text (see :meth:`ModelDescription.summary`)."""
    return describe_model(built).summary()
