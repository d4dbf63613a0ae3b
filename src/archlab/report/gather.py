"""The typed data behind each figure, gathered from the store and the files runs wrote; the
drawing is in :mod:`archlab.report.figures` (gather, then draw, as Optuna's plots do).

Reading a run's files never trusts them: weights that are not safetensors, that do not fit the
model, or a predictions file that is not one, raise a one-line :class:`StoreError`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from archlab.analysis.predictions import Predictions, load_predictions
from archlab.analysis.results import ModelResult, StudyResults
from archlab.analysis.stats import Summary
from archlab.describe import ARROW
from archlab.errors import StoreError
from archlab.model import BuiltModel

__all__ = [
    "NAME_CHARS",
    "Curves",
    "Gallery",
    "LayerWeights",
    "ScatterPoint",
    "SweepLine",
    "SweepPanel",
    "SweepPlot",
    "SweepPoint",
    "display_images",
    "gather_curves",
    "gather_gallery",
    "gather_model_scatter",
    "gather_samples",
    "gather_scatter",
    "gather_sweeps",
    "gather_weights",
    "name_lines",
    "read_predictions",
    "read_weights",
    "short_label",
]

# ---------------------------------------------------------------------------------------------
# Learning curves


@dataclass
class Curves:
    """Per-epoch mean, min and max over a model's runs for each history column."""

    epochs: np.ndarray
    mean: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    n: int


_HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def gather_curves(histories: list[list[dict[str, float]]]) -> Curves | None:
    """Mean and min-max band per epoch over the runs' stored histories (None for no epoch)."""
    histories = [h for h in histories if h]
    if not histories:
        return None
    length = max(len(h) for h in histories)
    epochs = np.arange(1, length + 1)
    mean, low, high = {}, {}, {}
    for key in _HISTORY_KEYS:
        grid = np.full((len(histories), length), np.nan)
        for i, h in enumerate(histories):
            for row in h:
                e = int(row["epoch"])
                if 1 <= e <= length:
                    grid[i, e - 1] = row[key]
        finite = np.where(np.isfinite(grid), grid, np.nan)
        with warnings.catch_warnings():  # an epoch no run reached finitely stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean[key] = np.nanmean(finite, axis=0)
            low[key] = np.nanmin(finite, axis=0)
            high[key] = np.nanmax(finite, axis=0)
    return Curves(epochs, mean, low, high, len(histories))


# ---------------------------------------------------------------------------------------------
# Weights


@dataclass(frozen=True)
class LayerWeights:
    """One weighted layer (Conv2D or Dense): its Keras name and its flattened values."""

    name: str
    weights: np.ndarray | None
    biases: np.ndarray | None


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``weights.safetensors`` file, as numpy arrays. Anything that is not a
    readable safetensors file (a pickle renamed, a truncated file) raises :class:`StoreError`;
    it is never unpickled."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as fh:
            return {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, TypeError, KeyError) as exc:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        raise StoreError(f"{path.name} is not a readable safetensors file ({reason})") from None


def gather_weights(built: BuiltModel, weights: dict[str, np.ndarray]) -> list[LayerWeights]:
    """Each Conv2D/Dense layer's weights and biases, in model order. Weights that do not fit
    ``built`` (other tensor names or shapes) raise :class:`StoreError`."""
    expected = {k: tuple(v.shape) for k, v in built.module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        shaped = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        parts = [f"{len(v)} {what} (first: {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", extra), ("of another shape", shaped))
                 if v]
        raise StoreError("the saved weights do not fit the model rebuilt from its stored "
                         f"config: tensors {', '.join(parts)}")
    order = [k[: -len(".core.weight")] for k in expected if k.endswith(".core.weight")]
    names = [r.name for r in built.rows if r.layer in ("Conv2D", "Dense")]
    if len(names) != len(order):
        names = order
    out = []
    for prefix, label in zip(order, names, strict=True):
        w = weights.get(prefix + ".core.weight")
        b = weights.get(prefix + ".core.bias")
        out.append(LayerWeights(label, None if w is None else w.astype(np.float64).ravel(),
                                None if b is None else b.astype(np.float64).ravel()))
    return out


# ---------------------------------------------------------------------------------------------
# Predictions: confusion matrix and the most confident mistakes


def read_predictions(path: Path) -> Predictions:
    """A run's stored predictions; a file that is not one (or whose parts do not fit together)
    raises :class:`StoreError`."""
    from safetensors import SafetensorError

    try:
        return load_predictions(path)
    except (SafetensorError, OSError, ValueError, TypeError, KeyError) as exc:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        raise StoreError(f"{path.name} is not a readable predictions file ({reason})") from None


#: A class name up to this many characters is shown whole, on one line, in a figure; a longer
#: one is wrapped onto a second line (and shortened with "…" past two).
NAME_CHARS = 30


def _split(text: str, width: int) -> tuple[str, str]:
    """``text`` cut before ``width`` characters: after the last space, "_", "-", "/" or "."
    in its second half, else at ``width`` exactly."""
    head = text[:width]
    cut = max(head.rfind(c) for c in " _-/.")
    at = cut + 1 if cut >= width // 2 else width
    return text[:at].rstrip(), text[at:].lstrip()


def name_lines(name: str, width: int = NAME_CHARS) -> list[str]:
    """``name`` as the lines a caption shows: one line up to ``width`` characters, else two
    (cut after a space, "_", "-", "/" or "." where one is near the middle), the second ending
    in "…" when the name is longer still."""
    name = " ".join(name.split()) or "?"
    if len(name) <= width:
        return [name]
    first, rest = _split(name, width)
    if len(rest) > width:
        rest = rest[: width - 1] + "…"
    return [first, rest]


def short_label(label: str, width: int = NAME_CHARS) -> str:
    """A class name on one line: whole up to ``width`` characters, else cut with "…"."""
    label = " ".join(label.split())
    return label if len(label) <= width else label[: width - 1] + "…"


@dataclass(frozen=True)
class Gallery:
    """Test images with their captions, ready to draw.

    ``images`` are uint8 as displayed: (m, H, W) grey or (m, H, W, 3) RGB (raw pixels as the
    dataset holds them; preprocessed floats of older runs stretched to 0..255 per image).
    ``captions`` holds each image's lines; with ``mistakes``, the lines after the true class's
    name (the first ``true_lines[i]`` lines) give the wrong prediction and its confidence."""

    images: np.ndarray
    captions: list[tuple[str, ...]]
    mistakes: bool = True
    true_lines: tuple[int, ...] = ()


def _stretch(x: np.ndarray) -> np.ndarray:
    """Preprocessed images (x/255, or normalized to any range) stretched to 0..255 each."""
    x = x.astype(np.float64)
    axes = tuple(range(1, x.ndim))
    lo = x.min(axis=axes, keepdims=True)
    span = np.maximum(x.max(axis=axes, keepdims=True) - lo, 1e-12)
    return np.rint((x - lo) / span * 255).astype(np.uint8)


def display_images(images: np.ndarray) -> np.ndarray:
    """Stored images as drawn: uint8 (m, H, W) grey or (m, H, W, 3) RGB. Raw pixels are kept
    as they are (RGBA is laid over white); float images are stretched to 0..255 each."""
    x = images if images.dtype == np.uint8 else _stretch(images)
    if x.ndim == 3:
        return x
    channels = x.shape[-1]
    if channels == 1:
        return x[..., 0]
    if channels == 4 and images.dtype == np.uint8:
        alpha = x[..., 3:].astype(np.float64) / 255.0
        rgb = x[..., :3].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)
        return np.rint(rgb).astype(np.uint8)
    return np.ascontiguousarray(x[..., :3])


def gather_gallery(pred: Predictions) -> Gallery | None:
    """The gallery of ``pred``'s stored mistakes (None when the model made none): each image
    under its true class's name, then "→ predicted (confidence)"."""
    if not len(pred.mistake_true):
        return None
    names = pred.class_names
    captions, true_lines = [], []
    for t, p, c in zip(pred.mistake_true, pred.mistake_pred, pred.mistake_confidence,
                       strict=True):
        truth = name_lines(names[t])
        guess = name_lines(names[p])
        guess[0] = f"{ARROW} {guess[0]}"
        guess[-1] += f" ({c * 100:.0f}%)"
        captions.append((*truth, *guess))
        true_lines.append(len(truth))
    return Gallery(display_images(pred.mistake_images), captions, True, tuple(true_lines))


def gather_samples(pred: Predictions) -> Gallery | None:
    """The sample test images ``pred`` stored (a few per class), each under its class's name;
    None when the file holds none (runs written before samples were stored)."""
    if not len(pred.sample_labels):
        return None
    captions = [tuple(name_lines(pred.class_names[c])) for c in pred.sample_labels]
    return Gallery(display_images(pred.sample_images), captions, False,
                   tuple(len(c) for c in captions))


# ---------------------------------------------------------------------------------------------
# Overview scatter plots


@dataclass(frozen=True)
class ScatterPoint:
    """One model in an accuracy-vs-cost plot: x (params or seconds), mean test accuracy and its
    std over repeats (0 with one run)."""

    label: str
    x: float
    accuracy: float
    error: float


def gather_scatter(results: StudyResults, by: Literal["params", "time"]) -> list[ScatterPoint]:
    """Test accuracy against parameters or against median training time, one point per model
    with a test accuracy (and a positive x)."""
    return gather_model_scatter(results.models, by)


def gather_model_scatter(models: Sequence[ModelResult],
                         by: Literal["params", "time"]) -> list[ScatterPoint]:
    """:func:`gather_scatter` of any models (those of several studies, say), labelled by their
    ``model`` name."""
    out = []
    for m in models:
        s = m.metrics.get("test_accuracy")
        if s is None:
            continue
        x = m.total_params if by == "params" else m.median_train_seconds
        if x is None or x <= 0:
            continue
        out.append(ScatterPoint(m.model, float(x), s.mean, s.std if s.n > 1 else 0.0))
    return out


# ---------------------------------------------------------------------------------------------
# Sweeps: a metric against each swept field


#: The metrics a sweep plot shows, each in its own column of panels.
SWEEP_METRICS = ("test_accuracy", "test_loss")


@dataclass(frozen=True)
class SweepPoint:
    """One sweep point (a model) at one value of the plotted field: its metric summarized over
    its finished repeats, the very :class:`Summary` of the results table (mean, 95 % CI)."""

    model: str
    value: Any
    summary: Summary


@dataclass(frozen=True)
class SweepLine:
    """The points that share the values of the other swept fields (``label`` says which:
    ``batch_size=32, units=128``; empty when only one field is swept), in value order."""

    label: str
    points: list[SweepPoint]


@dataclass(frozen=True)
class SweepPanel:
    """``metric`` against the swept field ``path`` (short name ``label``), one line per
    combination of the other swept fields. ``values`` are the field's values in axis order;
    ``numeric`` says whether they are numbers (else they are categories)."""

    path: str
    label: str
    metric: str
    values: list[Any]
    numeric: bool
    lines: list[SweepLine]


@dataclass(frozen=True)
class SweepPlot:
    """One swept model (``sweep``: its name in the study file): a panel per swept field and
    metric, fields in the order the sweep lists them."""

    sweep: str
    panels: list[SweepPanel]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def gather_sweeps(results: StudyResults, swept: Mapping[str, Mapping[str, Any]],
                  metrics: tuple[str, ...] = SWEEP_METRICS) -> list[SweepPlot]:
    """The sweep plots of a study: ``swept`` maps each sweep point's model name to its values
    (``{path: value}``, the expanded study's ``ModelSpec.swept``). Points are grouped by the
    model they were expanded from (the name before ``[``) and its swept paths; a point without
    the metric (no finished run) is left out, and a metric no point has gets no panel."""
    from archlab.spec.sweep import swept_label

    groups: dict[tuple[str, tuple[str, ...]], list[tuple[Any, Mapping[str, Any]]]] = {}
    for m in results.models:
        values = swept.get(m.model)
        if not values:
            continue
        base = m.model.split("[", 1)[0]
        groups.setdefault((base, tuple(values)), []).append((m, values))
    plots = []
    for (base, paths), members in groups.items():
        panels = []
        for path in paths:
            label = swept_label(path, list(paths))
            others = [p for p in paths if p != path]
            axis = list({_key(v[path]): v[path] for _, v in members}.values())
            numeric = all(_is_number(v) for v in axis)
            if numeric:
                axis.sort()
            rank = {_key(v): i for i, v in enumerate(axis)}
            for metric in metrics:
                lines: dict[str, list[SweepPoint]] = {}
                for m, values in members:
                    summary = m.metrics.get(metric)
                    name = ", ".join(f"{swept_label(p, list(paths))}={_text(values[p])}"
                                     for p in others)
                    points = lines.setdefault(name, [])
                    if summary is not None:
                        points.append(SweepPoint(m.model, values[path], summary))
                kept = [SweepLine(name, sorted(pts, key=lambda p: rank[_key(p.value)]))
                        for name, pts in lines.items() if pts]
                if kept:
                    panels.append(SweepPanel(path, label, metric, axis, numeric, kept))
        if panels:
            plots.append(SweepPlot(base, panels))
    return plots
