"""The study report: ``report.html`` (one file, images embedded, opens offline) and ``report.md``
with its PNGs in ``report_files/``.

Nothing here recomputes a number the store already holds: the table, the per-model statistics
and the conclusions come from :func:`archlab._results.collect`; the curves from the stored
per-epoch histories; the weight violins, confusion matrices, per-class accuracies and the
gallery of confident mistakes from the saved weights of each model's first finished run,
predicted once per model on the test set (one dataset load for the whole report).

Figures are drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot state, no
display); pages are rendered with Jinja2 templates (HTML autoescaped).
"""

from __future__ import annotations

import base64
import io
import math
import os
import platform
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from archlab._builder import BuiltModel, build_model, summary_text
from archlab._conclusions import conclusions, num_classes, stuck_at_chance
from archlab._errors import ArchlabError
from archlab._results import (
    COLUMNS,
    TEST_AS_VALIDATION_NOTE,
    ModelResult,
    StudyResults,
    collect,
    fmt_metric,
    format_duration,
    row_cells,
)
from archlab._stats import Summary
from archlab._store import FINAL_METRICS, RunRecord, Store

__all__ = ["REPORT_FILES", "compact_architecture", "write_report"]

REPORT_FILES = "report_files"
DPI = 80
GALLERY = 12  # most confidently misclassified test images shown per model
VIOLIN_SAMPLE = 4000  # values per layer fed to the violin's density estimate
_ARROW = "\N{RIGHTWARDS ARROW}"
_TIMES = "\N{MULTIPLICATION SIGN}"


# ---------------------------------------------------------------------------------------------
# Compact one-line architecture


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
            parts.append(f"{_ARROW}{', '.join(pending)}{_ARROW} {_dims(shape)}")
            pending = []
        pending.append(_layer_label(row.spec))
        shape = out
    if pending:
        parts.append(f"{_ARROW}{', '.join(pending)}{_ARROW} {_dims(shape)}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Figures


@dataclass
class Image:
    """One PNG: embedded in the HTML as a data URI, written beside the Markdown as a file."""

    name: str  # file stem in report_files/
    alt: str
    png: bytes
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def path(self) -> str:
        return f"{REPORT_FILES}/{self.name}.png"


_RC = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
       "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
       "axes.spines.right": False, "figure.dpi": DPI, "savefig.dpi": DPI}


def _figure(w: float, h: float, ncols: int = 1, *, margins: tuple[float, float, float, float],
            wspace: float = 0.25, **kw: Any) -> tuple[Any, Any]:
    """A figure with fixed margins (left, right, bottom, top): a layout engine would draw every
    figure twice, and drawing text is most of the cost of these small plots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    left, right, bottom, top = margins
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top, wspace=wspace)
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, axes


def _png(fig: Any, name: str, alt: str) -> Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    png = buf.getvalue()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return Image(name, alt, png, width, height)


_LINESTYLES = ("-", "--", ":", "-.")


def _style(i: int) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if i < 10 else "tab20"]
    return {"color": cmap(i % cmap.N), "linestyle": _LINESTYLES[(i // 20) % 4]}


def _epoch_axis(ax: Any, epochs: int) -> None:
    """Integer epoch ticks; a single epoch gets a sensible range instead of 0.96 to 1.04."""
    ax.set_xlim(0.5 if epochs <= 1 else 0.8, max(epochs, 1) + (0.5 if epochs <= 1 else 0.2))
    if epochs <= 8:
        ax.set_xticks(range(1, max(epochs, 1) + 1))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True, nbins=6)


@dataclass
class Curves:
    """Per-epoch mean, min and max over a model's runs for each history column."""

    epochs: np.ndarray
    mean: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    n: int


_HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _curves(histories: list[list[dict[str, float]]]) -> Curves | None:
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


def _curves_figure(name: str, curves: Curves) -> Image:
    fig, (ax_loss, ax_acc) = _figure(7.2, 2.5, 2, margins=(0.07, 0.99, 0.16, 0.9))
    marker = "o" if len(curves.epochs) <= 15 else None
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for prefix, what, color in (("", "train", "C0"), ("val_", "validation", "C1")):
            k = prefix + key
            y = curves.mean[k] * (100 if key == "accuracy" else 1)
            ax.plot(curves.epochs, y, color=color, marker=marker, ms=3,
                    label=what + (f" (mean of {curves.n})" if curves.n > 1 else ""))
            if curves.n > 1:
                scale = 100 if key == "accuracy" else 1
                ax.fill_between(curves.epochs, curves.low[k] * scale, curves.high[k] * scale,
                                color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label + (" (%)" if key == "accuracy" else ""))
        ax.set_title(f"{label}" + (" (band: min–max over runs)" if curves.n > 1 else ""))
        _epoch_axis(ax, len(curves.epochs))
        ax.yaxis.get_major_locator().set_params(nbins=5)  # every tick is drawn text: keep few
        ax.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    return _png(fig, f"{name}_curves", f"{name}: loss and accuracy per epoch, train vs validation")


def _density(values: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """A Gaussian KDE that copes with constant or tiny samples (matplotlib's would fail)."""
    std = float(np.std(values))
    span = float(np.ptp(values)) if values.size else 0.0
    bw = 1.06 * std * values.size ** (-1 / 5) if std > 0 else 0.0
    bw = max(bw, span / 50, abs(float(np.mean(values))) * 1e-3, 1e-6)
    z = (coords[:, None] - values[None, :]) / bw
    return np.exp(-0.5 * z * z).sum(axis=1) / (values.size * bw * math.sqrt(2 * math.pi))


def _violin_figure(name: str, layers: list[tuple[str, np.ndarray | None, np.ndarray | None]],
                   ) -> Image:
    """Violins drawn as one PolyCollection per axes (matplotlib's violinplot makes a patch per
    violin and a KDE that fails on constant data, e.g. a 1-unit bias)."""
    from matplotlib.collections import PolyCollection

    fig, axes = _figure(7.2, 2.8, 2, margins=(0.07, 0.99, 0.3, 0.91), wspace=0.18)
    rng = np.random.default_rng(0)
    for ax, idx, title in ((axes[0], 1, "weights"), (axes[1], 2, "biases")):
        verts, medians, extremes, labels = [], [], [], []
        for layer in layers:
            v = layer[idx]
            if v is None or v.size == 0:
                continue
            if v.size > VIOLIN_SAMPLE:
                v = rng.choice(v, VIOLIN_SAMPLE, replace=False)
            v = v.astype(np.float64)
            pos = len(labels) + 1
            lo, hi = float(v.min()), float(v.max())
            if hi - lo < 1e-12:
                lo, hi = lo - 1e-3 * max(abs(lo), 1.0), hi + 1e-3 * max(abs(hi), 1.0)
            ys = np.linspace(lo, hi, 60)
            d = _density(v, ys)
            d = 0.4 * d / d.max()
            verts.append(np.concatenate([np.column_stack([pos - d, ys]),
                                         np.column_stack([pos + d, ys])[::-1]]))
            medians.append((pos, float(np.median(v))))
            extremes.append((pos, float(v.min()), float(v.max())))
            labels.append(layer[0])
        if not labels:
            ax.text(0.5, 0.5, f"no {title}", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.add_collection(PolyCollection(verts, facecolors="C0", edgecolors="C0", alpha=0.5,
                                         linewidths=0.6))
        xs = [p for p, _ in medians]
        ax.hlines([m for _, m in medians], [x - 0.25 for x in xs], [x + 0.25 for x in xs],
                  colors="C3", linewidth=1)
        ax.vlines(xs, [e[1] for e in extremes], [e[2] for e in extremes], colors="C0",
                  linewidth=0.6)
        ax.set_xlim(0.4, len(labels) + 0.6)
        ax.autoscale_view(scalex=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=40, ha="right")
        ax.set_title(f"{title} per weighted layer (red: median)")
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.yaxis.get_major_locator().set_params(nbins=5)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig, f"{name}_weights", f"{name}: distribution of each weighted layer's weights "
                "and biases (violins, min to max)")


def _confusion_figure(name: str, cm: np.ndarray, classes: Sequence[str]) -> Image:
    """Row-normalized colours, counts in the cells; each true class's accuracy in its label."""
    n = len(classes)
    totals = cm.sum(axis=1)
    frac = cm / np.maximum(totals, 1)[:, None]
    short = [_short(c) for c in classes]
    rows = [f"{c} ({frac[i, i] * 100:.1f}%)" if totals[i] else f"{c} (-)"
            for i, c in enumerate(short)]
    left = 0.25 + 0.055 * max(len(r) for r in rows)
    size = 0.24 * n + 0.6
    width, height = left + size + 0.15, size + 0.85
    fig, (ax,) = _figure(width, height, margins=(left / width, 1 - 0.15 / width, 0.55 / height,
                                                 1 - 0.3 / height))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), short, rotation=90 if max(map(len, short)) > 2 else 0)
    ax.set_yticks(range(n), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (per-class accuracy)")
    ax.set_title("confusion matrix, test set")
    if n <= 20:
        fs = 6 if n <= 10 else 4
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fs,
                    color="white" if frac[i, j] > 0.5 else "black")
    return _png(fig, f"{name}_confusion", f"{name}: confusion matrix on the test set (colour: "
                "fraction of the true class; per-class accuracy beside each true class)")


def _gallery_figure(name: str, images: np.ndarray, captions: list[str]) -> Image:
    k = len(images)
    cols = min(k, 6)
    rows = math.ceil(k / cols)
    h, w = images.shape[1:3]
    pad, top = 3, 9  # pixels between tiles, rows of pixels for the caption above each tile
    mosaic = np.full((rows * (h + pad + top), cols * (w + pad)), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y0, x0 = r * (h + pad + top) + top, c * (w + pad)
        mosaic[y0:y0 + h, x0:x0 + w] = 255 - img
    scale = 3.0 / DPI  # inches per image pixel: 3 screen pixels each
    fig, (ax,) = _figure(mosaic.shape[1] * scale, mosaic.shape[0] * scale, margins=(0, 1, 0, 1))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for i, cap in enumerate(captions):
        r, c = divmod(i, cols)
        ax.text(c * (w + pad) + w / 2, r * (h + pad + top) + top - 1.5, cap, ha="center",
                va="bottom", fontsize=8, color="#b00020")
    ax.set_axis_off()
    return _png(fig, f"{name}_mistakes", f"{name}: the {k} most confidently misclassified test "
                "images, true → predicted (confidence)")


def _overlay_figure(models: list[tuple[str, Curves]], colors: dict[str, int]) -> Image:
    ncols = 1 if len(models) <= 16 else 2
    legend_in = 1.1 * ncols + 0.02 * max(len(n) for n, _ in models) * ncols
    width = 7.2 + legend_in
    height = max(3.0, 0.13 * math.ceil(len(models) / ncols) + 0.6)
    fig, (ax_loss, ax_acc) = _figure(width, height, 2,
                                     margins=(0.7 / width, 1 - (legend_in + 0.1) / width,
                                              0.45 / height, 1 - 0.3 / height))
    for name, c in models:
        st = _style(colors.get(name, 0))
        marker = "o" if len(c.epochs) <= 15 else None
        ax_loss.plot(c.epochs, c.mean["val_loss"], marker=marker, ms=2.5, label=name, **st)
        ax_acc.plot(c.epochs, c.mean["val_accuracy"] * 100, marker=marker, ms=2.5, label=name,
                    **st)
    for ax, label in ((ax_loss, "validation loss"), (ax_acc, "validation accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        _epoch_axis(ax, max(len(c.epochs) for _, c in models))
        ax.yaxis.get_major_locator().set_params(nbins=5)  # every tick is drawn text: keep few
        ax.grid(alpha=0.3)
    ax_loss.set_title("validation loss, all models (mean over runs)")
    ax_acc.set_title("validation accuracy, all models (mean over runs)")
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="upper right", ncols=ncols,
               fontsize=6 if len(models) > 16 else 7, frameon=False, borderaxespad=0.2)
    return _png(fig, "overview_validation", "validation loss and accuracy per epoch, all models")


def _count_label(x: float, _pos: Any = None) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def _scatter_figure(points: list[tuple[str, float, float, float]], colors: dict[str, int],
                    xlabel: str, title: str, name: str, seconds: bool) -> Image:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax,) = _figure(4.8, 3.4, margins=(0.12, 0.97, 0.14, 0.91))
    small = len(points) > 12
    for label, x, y, err in points:
        color = _style(colors.get(label, 0))["color"]
        ax.errorbar([x], [y * 100], yerr=[err * 100] if err else None, fmt="o", ms=4,
                    color=color, capsize=2)
        ax.annotate(label, (x, y * 100), xytext=(3, 2), textcoords="offset points",
                    fontsize=6 if small else 7, color="0.25")
    ax.set_xscale("log")
    xs = [p[1] for p in points]
    lo, hi = min(xs), max(xs)
    span = max(hi / lo, 1.5)
    ax.set_xlim(lo / span ** 0.08, hi * span ** 0.25)  # room for the labels on the right
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(
        (lambda x, _p: f"{x:g} s") if seconds else _count_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig, name, title)


# ---------------------------------------------------------------------------------------------
# Per-model work: rebuild, load the weights, predict once


@dataclass
class _Dataset:
    """One dataset load per data config for the whole report."""

    data_dir: str | Path | None
    cache: dict[str, Any] = field(default_factory=dict)

    def get(self, data_cfg: dict[str, Any], split_seed: int) -> tuple[Any, Any]:
        """(raw dataset, prepared tensors), or raises ArchlabError."""
        from archlab._data import load_dataset
        from archlab._spec import DataSpec, canonical_json
        from archlab._train import prepare_tensors

        key = canonical_json([data_cfg, split_seed])
        if key not in self.cache:
            spec = DataSpec.model_validate(data_cfg)
            raw_key = f"raw:{spec.dataset}"
            if raw_key not in self.cache:
                self.cache[raw_key] = load_dataset(spec.dataset, self.data_dir)
            raw = self.cache[raw_key]
            self.cache[key] = (raw, prepare_tensors(raw, spec, split_seed))
        return self.cache[key]


def _study_for(run: RunRecord) -> Any:
    """A one-model study from a run's stored config: exactly the model that was trained."""
    from archlab._spec import parse_study

    cfg = run.config
    return parse_study({"name": "report", "seed": int(cfg.get("split_seed", 0)),
                        "data": cfg["data"], "models": {run.model: {"layers": cfg["layers"]}}},
                       f"store run {run.run_id}")


@dataclass
class _Predictions:
    confusion: np.ndarray
    per_class: list[tuple[str, float, int]]  # class name, accuracy, support
    gallery: Image | None


def _predict(built: BuiltModel, weights: dict[str, Any], data: Any, raw: Any,
             name: str) -> _Predictions:
    import torch

    from archlab._train import predict_proba

    built.module.to_empty(device="cpu")
    built.module.load_state_dict(weights, strict=True)
    with torch.inference_mode():
        proba = predict_proba(built, data.x_test).double().numpy()
    y = data.y_test.numpy()
    pred = proba.argmax(1)
    classes = list(data.class_names)
    k = len(classes)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    support = cm.sum(axis=1)
    per_class = [(classes[i], float(cm[i, i] / support[i]) if support[i] else math.nan,
                  int(support[i])) for i in range(k)]
    wrong = np.flatnonzero(pred != y)
    gallery = None
    if wrong.size:
        conf = proba[wrong, pred[wrong]]
        top = wrong[np.argsort(-conf, kind="stable")[:GALLERY]]
        caps = [f"{_short(classes[y[i]])}{_ARROW}{_short(classes[pred[i]])} "
                f"{proba[i, pred[i]] * 100:.0f}%" for i in top]
        gallery = _gallery_figure(name, np.asarray(raw.x_test)[top], caps)
    return _Predictions(cm, per_class, gallery)


def _short(label: str) -> str:
    return label if len(label) <= 7 else label[:6] + "…"


# ---------------------------------------------------------------------------------------------
# Page model


@dataclass
class Cell:
    text: str
    sort: str  # the value the in-page sort uses (a number where the column is numeric)
    best: bool = False
    numeric: bool = False


@dataclass
class Section:
    result: ModelResult
    anchor: str
    description: str
    status: str
    ok: bool
    badge: str
    badge_class: str  # ok | bad
    training: str
    seeds: str
    errors: list[str]
    notes: list[str]
    metrics: list[tuple[str, str, str, str, str]]  # metric, mean, std, 95 % CI, n
    compact: str | None
    summary: str | None
    images: list[Image]
    per_class: list[tuple[str, str, int]]


def _fmt_train(cfg: dict[str, Any]) -> str:
    opt = dict(cfg.get("optimizer", {}))
    name = opt.pop("name", "?")
    args = ", ".join(f"{k}={v}" for k, v in opt.items())
    parts = [f"{name}({args})" if args else name, f"batch {cfg.get('batch_size')}",
             f"{cfg.get('epochs')} epoch{'s' if cfg.get('epochs') != 1 else ''}"]
    if cfg.get("early_stopping"):
        es = cfg["early_stopping"]
        parts.append(f"early stopping on {es.get('monitor')} (patience {es.get('patience')})")
    if cfg.get("restore_best"):
        parts.append("best-validation weights restored")
    return " · ".join(parts)


def _summary_row(label: str, s: Summary | None, pct: bool, digits: int = 4,
                 unit: str = "%") -> tuple[str, str, str, str, str]:
    if s is None:
        return (label, "–", "–", "–", "0")
    scale, d, unit = (100.0, 2, unit) if pct else (1.0, digits, "")

    def f(x: float) -> str:
        return f"{x * scale:.{d}f}{unit}" if math.isfinite(x) else "–"

    ci = f"{f(s.ci_low)} to {f(s.ci_high)}" if s.n > 1 else "–"
    return (label, f(s.mean), f(s.std) if s.n > 1 else "–", ci, str(s.n))


def _metric_rows(m: ModelResult) -> list[tuple[str, str, str, str, str]]:
    labels = {"train_loss": "train loss", "train_accuracy": "train accuracy",
              "val_loss": "validation loss", "val_accuracy": "validation accuracy",
              "test_loss": "test loss", "test_accuracy": "test accuracy"}
    rows = [_summary_row(labels[k], m.metrics.get(k), k.endswith("accuracy"))
            for k in FINAL_METRICS]
    rows.append(_summary_row("train − val accuracy gap", m.overfit_gap, True, unit=" pp"))
    rows.append(_summary_row("training time (s)", m.train_seconds, False, 1))
    rows.append(_summary_row("best epoch (val loss)", m.best_epoch, False, 1))
    return rows


def _status(m: ModelResult, classes: int) -> tuple[str, bool, str, str]:
    """(run counts, has a finished run, badge text, badge class)."""
    total = sum(m.statuses.values())
    counts = ", ".join(f"{v} {k}" for k, v in m.statuses.items())
    ok = m.n > 0
    kind = "ok"
    if "test_accuracy" in m.metrics:
        badge = f"{m.metrics['test_accuracy'].mean * 100:.2f}%"
        if stuck_at_chance(m, classes):
            badge, kind = badge + " · at chance", "bad"
    elif ok:
        badge = "done"
    elif m.diverged_epochs:
        badge, kind = "diverged", "bad"
    else:
        badge, kind = next(iter(m.statuses), "no run"), "bad"
    return f"{total} run{'s' if total != 1 else ''}: {counts}", ok, badge, kind


def _table(results: StudyResults) -> tuple[list[str], list[list[Cell]]]:
    """The CLI table's columns (plus the test accuracy CI with repeats), cells with sort keys
    and the best value of each metric column marked."""
    header = list(COLUMNS)
    with_ci = any(m.metrics.get("test_accuracy") and m.metrics["test_accuracy"].n > 1
                  for m in results.models)
    if with_ci:
        header.insert(header.index("test acc") + 1, "test acc 95% CI")
    rows: list[list[Cell]] = []
    numeric_cols = {"n", "conv", "BN", "params", "time (s)", "test acc 95% CI",
                    "train loss", "train acc", "val loss", "val acc", "test loss", "test acc"}
    better = {"train loss": min, "val loss": min, "test loss": min, "train acc": max,
              "val acc": max, "test acc": max, "time (s)": min, "params": min}
    for m in results.models:
        texts = row_cells(m)
        a = m.architecture
        sorts: list[Any] = [m.model, m.n, a.conv_layers, a.kernels, a.channels, a.pooling,
                            a.dropout, a.batch_norm, a.l2, m.total_params]
        sorts += [m.metrics[k].mean if k in m.metrics else None for k in FINAL_METRICS]
        sorts.append(m.train_seconds.mean if m.train_seconds else None)
        if with_ci:
            s = m.metrics.get("test_accuracy")
            i = COLUMNS.index("test acc") + 1
            if s is not None and s.n > 1:
                texts.insert(i, f"{s.ci_low * 100:.2f} to {s.ci_high * 100:.2f}%")
                sorts.insert(i, s.ci_low)
            else:
                texts.insert(i, "-")
                sorts.insert(i, None)
        cells = []
        for col, text, key in zip(header, texts, sorts, strict=True):
            numeric = col in numeric_cols
            if key is None:
                sort = ""
            elif numeric:
                sort = repr(float(key))
            else:
                sort = str(key)
            cells.append(Cell(text, sort, numeric=numeric))
        rows.append(cells)
    for j, col in enumerate(header):
        pick = better.get(col)
        if pick is None:
            continue
        vals = [float(r[j].sort) for r in rows if r[j].sort != ""]
        if len(vals) < 2:
            continue
        target = pick(vals)
        for r in rows:
            if r[j].sort != "" and float(r[j].sort) == target:
                r[j].best = True
    return header, rows


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _header(results: StudyResults, study: Any, data_info: str | None) -> dict[str, Any]:
    runs = [r for m in results.models for r in m.runs]
    data_cfgs = _unique(r.config["data"] for r in runs)
    data = data_cfgs[0] if data_cfgs else {}
    validation = data.get("validation")
    if validation == "test":
        protocol = "validation on the test set (the notebooks' protocol)"
    elif isinstance(validation, dict):
        seeds = _unique(r.config.get("split_seed") for r in runs)
        protocol = (f"validation on a stratified {validation.get('split', 0) * 100:g}% of the "
                    f"training set (split seed {', '.join(map(str, seeds))}); test set held out")
    else:
        protocol = "-"
    pre = data.get("preprocessing", "scale")
    pre_text = "x / 255" if pre == "scale" else f"keras normalize {pre.get('normalize', pre)}"
    envs = [r.environment for r in runs if r.environment]

    def vals(key: str) -> str:
        return ", ".join(str(v) for v in _unique(e.get(key) for e in envs)) or "-"

    def machine(e: dict[str, Any]) -> str:
        cpu, arch = e.get("processor") or e.get("machine"), e.get("machine")
        return (f"{cpu}{f' ({arch})' if arch and arch != cpu else ''}, {e.get('cpu_count')} "
                f"CPUs, {e.get('threads')} torch threads"
                + (f", device {e['device']}" if e.get("device") else ""))

    hardware = "; ".join(_unique(machine(e) for e in envs)) or "-"
    wall = sum(r.wall_seconds or 0.0 for r in runs)
    train = sum(r.train_seconds or 0.0 for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    trainings = _unique(_fmt_train(r.config.get("train", {})) for r in runs)
    repeats = _unique(sum(m.statuses.values()) for m in results.models)
    facts = [
        ("dataset", data.get("dataset", "-") + (f" ({data_info})" if data_info else "")),
        ("preprocessing", pre_text),
        ("protocol", protocol),
        ("training", trainings[0] if len(trainings) == 1 else
         f"{len(trainings)} different configurations (see each model)"),
        ("runs", f"{len(runs)} ({', '.join(f'{v} {k}' for k, v in statuses.items())}) over "
                 f"{len(results.models)} models; runs per model: "
                 f"{', '.join(map(str, sorted(repeats)))}"),
        ("versions", f"archlab {vals('archlab')} · torch {vals('torch')} · "
                     f"python {vals('python')}"),
        ("hardware", hardware),
        ("total time", f"{format_duration(wall, precise=True)} wall "
                       f"({format_duration(train, precise=True)} of it training), "
                       "summed over runs"),
    ]
    if study is not None and study.source and study.source != "<memory>":
        facts.insert(0, ("source", str(results.meta.get("source", study.source))))
    elif results.meta.get("source"):
        facts.insert(0, ("source", str(results.meta["source"])))
    return {"facts": facts, "description": getattr(study, "description", "") or ""}


def _load_study(directory: Path) -> Any:
    from archlab._spec import load_study

    try:
        return load_study(directory / "study.yaml")
    except ArchlabError:
        return None


def _section(m: ModelResult, i: int, study: Any, store: Store, dataset: _Dataset,
             curves_out: list[tuple[str, Curves]], classes: int) -> Section:
    from safetensors.torch import load_file

    status, ok, badge, badge_class = _status(m, classes)
    run0 = m.runs[0]
    desc = ""
    if study is not None and m.model in study.models:
        desc = study.models[m.model].description
    notes: list[str] = []
    errors = [f"{r.run_id} ({r.status}): {r.error}" for r in m.runs if r.error]
    images: list[Image] = []
    compact = summary = None
    built: BuiltModel | None = None
    try:
        built = build_model(_study_for(run0), m.model, device="meta")
        compact = compact_architecture(built)
        summary = summary_text(built)
    except ArchlabError as exc:
        notes.append(f"The model cannot be built from its stored config: {exc}")
    finished = [r for r in m.runs if r.status == "finished"]
    done = finished or [r for r in m.runs if r.status == "diverged"]
    curves = _curves([store.history(r.run_id) for r in done])
    if curves is not None:
        images.append(_curves_figure(m.model, curves))
        if finished:
            curves_out.append((m.model, curves))
        if not finished:
            notes.append("No run finished: the curves are those of the diverged run(s), up to "
                         "the epoch where the loss became non-finite.")
    per_class: list[tuple[str, str, int]] = []
    if not finished:
        notes.append("No finished run, so no saved weights: weight distributions, confusion "
                     "matrix and misclassified images are not available.")
    elif built is not None:
        first = finished[0]
        path = store.directory / "runs" / first.run_id / "weights.safetensors"
        if not path.exists():
            notes.append(f"The weights of run {first.run_id} are missing ({path.name} not "
                         "found): weight distributions and predictions are skipped.")
        else:
            weights = load_file(str(path))
            images.append(_violin_figure(m.model, _weighted_layers(built, weights)))
            notes.append(f"Weights, confusion matrix and misclassified images: run "
                         f"{first.run_id} (repeat {first.repeat}, seed {first.seed}).")
            try:
                raw, data = dataset.get(first.config["data"],
                                        int(first.config.get("split_seed", 0)))
            except ArchlabError as exc:
                notes.append(f"The dataset could not be loaded, so there are no predictions: "
                             f"{exc}")
            else:
                try:
                    pred = _predict(built, weights, data, raw, m.model)
                except (RuntimeError, ValueError) as exc:  # weights from another archlab
                    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    notes.append("The saved weights do not fit the model rebuilt from its "
                                 f"stored config, so there are no predictions: {first_line}")
                else:
                    images.append(_confusion_figure(m.model, pred.confusion,
                                                    data.class_names))
                    if pred.gallery is not None:
                        images.append(pred.gallery)
                    else:
                        notes.append("No test image is misclassified.")
                    per_class = [(c, f"{a * 100:.2f}%" if math.isfinite(a) else "–", n)
                                 for c, a, n in pred.per_class]
    train_cfgs = _unique(_fmt_train(r.config.get("train", {})) for r in m.runs)
    return Section(
        result=m, anchor=f"model-{i}", description=desc, status=status, ok=ok, badge=badge,
        badge_class=badge_class,
        training="; ".join(train_cfgs), seeds=", ".join(str(r.seed) for r in m.runs),
        errors=errors, notes=notes, metrics=_metric_rows(m), compact=compact, summary=summary,
        images=images, per_class=per_class)


def _weighted_layers(built: BuiltModel, weights: dict[str, Any]
                     ) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """(Keras layer name, weights, biases) of each Conv2D/Dense, in model order."""
    order = [k[: -len(".core.weight")] for k in built.module.state_dict()
             if k.endswith(".core.weight")]
    names = [r.name for r in built.rows if r.layer in ("Conv2D", "Dense")]
    if len(names) != len(order):
        names = order
    out = []
    for prefix, label in zip(order, names, strict=True):
        w = weights.get(prefix + ".core.weight")
        b = weights.get(prefix + ".core.bias")
        out.append((label, w.float().numpy().ravel() if w is not None else None,
                    b.float().numpy().ravel() if b is not None else None))
    return out


# ---------------------------------------------------------------------------------------------
# Rendering


def _env(autoescape: bool) -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("archlab", "templates"),
                              autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(directory: str | Path, *, data_dir: str | Path | None = None) -> list[Path]:
    """Write ``report.html`` and ``report.md`` (PNGs in ``report_files/``) for a study directory.

    Returns ``[report.html, report.md]``. ``data_dir`` is where the dataset lives (default:
    archlab's normal resolution); it is loaded once, to predict each model's test set.
    """
    from matplotlib import rc_context

    t0 = time.perf_counter()
    directory = Path(directory)
    results = collect(directory)
    study = _load_study(directory)
    dataset = _Dataset(data_dir)
    found = conclusions(results)
    curves: list[tuple[str, Curves]] = []
    with rc_context(_RC), Store(directory, create=False) as store:
        classes = num_classes(results)
        sections = [_section(m, i, study, store, dataset, curves, classes)
                    for i, m in enumerate(results.models)]
        overview = _overview(results, curves)
    data_info = None
    for key, value in dataset.cache.items():
        if not key.startswith("raw:"):
            _, t = value
            data_info = (f"{len(t.x_train):,} train / {len(t.x_val):,} validation / "
                         f"{len(t.x_test):,} test images, {len(t.class_names)} classes")
            break
    header, rows = _table(results)
    context = {
        "study": results.study,
        "results": results,
        "head": _header(results, study, data_info),
        "note": TEST_AS_VALIDATION_NOTE if results.validation_is_test else None,
        "columns": header,
        "rows": rows,
        "ci_note": any(m.n > 1 for m in results.models),
        "conclusions": found,
        "overview": overview,
        "sections": sections,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "fmt_metric": fmt_metric,
    }
    files_dir = directory / REPORT_FILES
    files_dir.mkdir(exist_ok=True)
    for old in files_dir.glob("*.png"):
        old.unlink()
    images = [*overview, *(img for s in sections for img in s.images)]
    for img in images:
        _atomic_write(files_dir / f"{img.name}.png", img.png)
    context["seconds"] = time.perf_counter() - t0
    html = _env(True).get_template("report.html.j2").render(**context)
    md = _env(False).get_template("report.md.j2").render(**context)
    html_path, md_path = directory / "report.html", directory / "report.md"
    _atomic_write(html_path, html)
    _atomic_write(md_path, md)
    return [html_path, md_path]


def _overview(results: StudyResults, curves: list[tuple[str, Curves]]) -> list[Image]:
    colors = {m.model: i for i, m in enumerate(results.models)}  # one colour per model
    out: list[Image] = []
    if curves:
        out.append(_overlay_figure(curves, colors))
    scored = [m for m in results.models if "test_accuracy" in m.metrics]

    def err(m: ModelResult) -> float:
        s = m.metrics["test_accuracy"]
        return s.std if s.n > 1 else 0.0

    pts = [(m.model, float(m.total_params), m.metrics["test_accuracy"].mean, err(m))
           for m in scored if m.total_params]
    if pts:
        out.append(_scatter_figure(pts, colors, "parameters (log scale)",
                                   "test accuracy vs parameters", "overview_params", False))
    pts = [(m.model, m.train_seconds.mean, m.metrics["test_accuracy"].mean, err(m))
           for m in scored if m.train_seconds and m.train_seconds.mean > 0]
    if pts:
        out.append(_scatter_figure(pts, colors, "training time (log scale)",
                                   "test accuracy vs training time", "overview_time", True))
    return out
