"""One description of a model, from its built layers: the Keras summary, the compact one-line
form and the table's architecture columns all read it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from archlab.layers import Shape
from archlab.model import BuiltModel

ARROW = "\N{RIGHTWARDS ARROW}"
_TIMES = "\N{MULTIPLICATION SIGN}"


def _dims(shape: Sequence[int]) -> str:
    return _TIMES.join(str(d) for d in shape)


def _k(v: Any) -> str:
    v = tuple(v) if isinstance(v, list | tuple) else (v, v)
    return str(v[0]) if v[0] == v[1] else f"{v[0]}{_TIMES}{v[1]}"


def _layer_label(spec: Any) -> str:
    t = spec.type
    if t == "Conv2D":
        text = f"conv{_k(spec.kernel_size)} {spec.filters}"
        if tuple(spec.strides) != (1, 1):
            text += f"/{_k(spec.strides)}"
        return text + (" same" if spec.padding == "same" else "")
    if t in ("MaxPooling2D", "AveragePooling2D"):
        text = ("pool" if t == "MaxPooling2D" else "avgpool") + _k(spec.pool_size)
        if spec.strides is not None and tuple(spec.strides) != tuple(spec.pool_size):
            text += f"/{_k(spec.strides)}"
        return text + (" same" if spec.padding == "same" else "")
    if t == "Dense":
        return f"dense {spec.units}"
    if t == "Dropout":
        return f"drop{spec.rate:g}"
    if t == "BatchNormalization":
        return "bn"
    if t == "Flatten":
        return "flatten"
    if t == "GlobalAveragePooling2D":
        return "gap"
    if t == "GlobalMaxPooling2D":
        return "gmp"
    if t == "Activation":
        return str(spec.activation)
    if t == "Concatenate":
        branches = [" ".join(_layer_label(b) for b in branch) or "id" for branch in
                    spec.branches]
        return "concat[" + " | ".join(branches) + "]"
    return t.lower()


def compact_architecture(built: BuiltModel) -> str:
    """``28×28×1 →conv5 32→ 24×24×32 →pool2, drop0.25→ 12×12×32 →flatten→ …`` from its rows.

    Every weighted layer (Conv2D, Dense, Concatenate) and every layer that changes the shape
    starts a new arrow; shape-preserving layers (dropout, batch norm, activation) join the
    arrow before them.
    """
    parts = [_dims(built.input_shape)]
    pending: list[str] = []
    shape = tuple(built.input_shape)
    for row in built.rows:
        if "/" in row.name:  # inside a Concatenate branch: the Concatenate row lists it
            continue
        out = tuple(row.output_shape)
        if pending and (out != shape or row.layer in ("Conv2D", "Dense", "Concatenate")):
            parts.append(f"{ARROW}{', '.join(pending)}{ARROW} {_dims(shape)}")
            pending = []
        pending.append(_layer_label(row.spec))
        shape = out
    if pending:
        parts.append(f"{ARROW}{', '.join(pending)}{ARROW} {_dims(shape)}")
    return " ".join(parts)


def format_shape(shape: Shape) -> str:
    return "(None, " + ", ".join(str(d) for d in shape) + ")"


def summary_text(built: BuiltModel) -> str:
    """Keras's ``model.summary()`` as plain text."""
    width = max([len(f"{r.name} ({r.layer})") for r in built.rows] + [20]) + 2
    lines = [f'Model: "{built.name}"', "_" * (width + 40),
             f"{'Layer (type)':<{width}}{'Output Shape':<26}{'Param #':>12}", "=" * (width + 40)]
    for r in built.rows:
        lines.append(f"{r.name + ' (' + r.layer + ')':<{width}}{format_shape(r.output_shape):<26}"
                     f"{r.params:>12,}")
    lines += ["=" * (width + 40), f"Total params: {built.total_params:,}",
              f"Trainable params: {built.trainable_params:,}",
              f"Non-trainable params: {built.non_trainable_params:,}",
              f"MACs per sample: {built.macs_per_sample:,}"]
    return "\n".join(lines)


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


def _walk(layers: Iterable[Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for item in layers:
        name, args = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        yield name, args
        for branch in args.get("branches", []):
            yield from _walk(branch)


def _pair(v: Any, default: Any = None) -> str:
    v = default if v is None else v
    if isinstance(v, list | tuple):
        return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"
    return str(v)


def describe_architecture(layers: list[Any]) -> Architecture:
    """Summarize a model's layers (its YAML form) the way the notebooks' tables did."""
    convs, pools, drops, dense, regs, pads = [], [], [], [], [], set()
    bn = 0
    for name, a in _walk(layers):
        if name == "Conv2D":
            convs.append((_pair(a["kernel_size"]), a["filters"]))
            pads.add(a.get("padding", "valid"))
        elif name in ("MaxPooling2D", "AveragePooling2D"):
            k = _pair(a.get("pool_size"), 2)
            s = _pair(a.get("strides"), a.get("pool_size", 2))
            pools.append(("avg " if name.startswith("Avg") else "") + f"{k}/{s}")
        elif name.startswith("Global"):
            pools.append("global")
        elif name == "Dropout":
            drops.append(f"{a['rate']:g}")
        elif name == "BatchNormalization":
            bn += 1
        elif name == "Dense":
            dense.append(str(a["units"]))
        for key in ("kernel_regularizer", "bias_regularizer"):
            if a.get(key):
                regs.append(", ".join(f"{k} {v:g}" for k, v in a[key].items()))
    return Architecture(
        conv_layers=len(convs), kernels=",".join(k for k, _ in convs) or "-",
        channels="-".join(str(c) for _, c in convs) or "-", padding="/".join(sorted(pads)) or "-",
        pooling=",".join(pools) or "-", dropout=",".join(drops) or "-", batch_norm=bn,
        l2=";".join(sorted(set(regs))) or "-", dense="-".join(dense))
