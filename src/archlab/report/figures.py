"""The report's figures: matplotlib's object-oriented API on the Agg canvas (no pyplot state,
no display). Each function draws the typed data :mod:`archlab.report.gather` collected and
returns a PNG :class:`Image`; none reads a file or the store."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from archlab.report.gather import (
    Curves,
    Gallery,
    LayerWeights,
    short_label,
)

__all__ = [
    "CONFUSION_MAX",
    "DPI",
    "GALLERY_WIDTH",
    "RC",
    "REPORT_FILES",
    "Image",
    "confusion_figure",
    "curves_figure",
    "gallery_figure",
    "kept_figures",
    "text_width",
    "violin_figure",
]

REPORT_FILES = "report_files"  # the PNGs beside report.md
DPI = 80
VIOLIN_SAMPLE = 4000  # values per layer fed to the violin's density estimate


@dataclass
class Image:
    """One PNG: embedded in the HTML as a data URI, written beside the Markdown as a file."""

    name: str  # file stem in the folder beside the Markdown
    alt: str
    png: bytes
    width: int
    height: int
    folder: str = REPORT_FILES  # a comparison report keeps its PNGs in a folder of its own

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.name}.png"


RC = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
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


def _blank(w: float, h: float) -> Any:
    """A figure without axes (the caller places its own)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


#: Set by :func:`kept_figures`: the list that keeps each drawn Figure instead of its PNG.
_KEPT: ContextVar[list[Any] | None] = ContextVar("archlab_kept_figures", default=None)


@contextmanager
def kept_figures() -> Iterator[list[Any]]:
    """Within this, every figure function keeps its live matplotlib Figure in the list it
    yields (and returns an Image without pixels) instead of rendering it to PNG: the report's
    very figures, for a notebook to show inline. A context variable: threads and other
    callers keep rendering."""
    kept: list[Any] = []
    token = _KEPT.set(kept)
    try:
        yield kept
    finally:
        _KEPT.reset(token)


def _png(fig: Any, name: str, alt: str) -> Image:
    """The one place a drawn figure becomes a PNG (or, under :func:`kept_figures`, is kept)."""
    kept = _KEPT.get()
    if kept is not None:
        kept.append(fig)
        return Image(name, alt, b"", 0, 0)
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


def curves_figure(name: str, curves: Curves) -> Image:
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


def violin_figure(name: str, layers: list[LayerWeights]) -> Image:
    """Violins drawn as one PolyCollection per axes (matplotlib's violinplot makes a patch per
    violin and a KDE that fails on constant data, e.g. a 1-unit bias)."""
    from matplotlib.collections import PolyCollection

    fig, axes = _figure(7.2, 2.8, 2, margins=(0.07, 0.99, 0.3, 0.91), wspace=0.18)
    rng = np.random.default_rng(0)
    for ax, title in ((axes[0], "weights"), (axes[1], "biases")):
        verts, medians, extremes, labels = [], [], [], []
        for layer in layers:
            v = layer.weights if title == "weights" else layer.biases
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
            labels.append(layer.name)
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


def text_width(texts: Sequence[str], size: float) -> float:
    """The width in inches of the widest of ``texts`` drawn at ``size`` points (measured by
    the Agg renderer, nothing drawn): margins sized to the labels they hold."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    if not texts:
        return 0.0
    renderer = RendererAgg(8, 8, DPI)
    prop = FontProperties(size=size)
    return max(renderer.get_text_width_height_descent(t, prop, ismath=False)[0]
               for t in texts) / DPI


#: Above this many classes no confusion matrix is drawn (its cells and labels would be too
#: small to read): the report lists the most-confused pairs and per-class accuracy instead.
CONFUSION_MAX = 20


def confusion_figure(name: str, cm: np.ndarray, classes: Sequence[str]) -> Image:
    """Row-normalized colours, counts in the cells; each true class's accuracy in its label.
    Class names are shown whole up to :data:`NAME_CHARS` characters, and the margins are
    measured to hold them and the axis labels."""
    n = len(classes)
    totals = cm.sum(axis=1)
    frac = cm / np.maximum(totals, 1)[:, None]
    short = [short_label(c) for c in classes]
    rows = [f"{c} ({frac[i, i] * 100:.1f}%)" if totals[i] else f"{c} (-)"
            for i, c in enumerate(short)]
    tick = 7.0
    rotate = max(map(len, short)) > 2
    label_h = 0.3  # an axis label and its padding
    left = text_width(rows, tick) + label_h + 0.15
    bottom = (text_width(short, tick) if rotate else 0.15) + label_h + 0.15
    cell = 0.3 if n <= 10 else 0.24
    ylabel = "true (per-class accuracy)"
    size = max(cell * n, text_width([ylabel], RC["axes.labelsize"]) + 0.1)  # the label fits
    top = 0.35
    title = "confusion matrix, test set"
    width = max(left + size + 0.2, text_width([title], RC["axes.titlesize"]) + 0.3)
    height = top + size + bottom
    fig, (ax,) = _figure(width, height, margins=(left / width, (left + size) / width,
                                                 bottom / height, 1 - top / height))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(n), short, rotation=90 if rotate else 0, fontsize=tick)
    ax.set_yticks(range(n), rows, fontsize=tick)
    ax.set_xlabel("predicted")
    ax.set_ylabel(ylabel)
    fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top",
             fontsize=RC["axes.titlesize"])
    fs = 6 if n <= 10 else 5
    for i, j in zip(*np.nonzero(cm), strict=True):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fs,
                color="white" if frac[i, j] > 0.5 else "black")
    return _png(fig, f"{name}_confusion", f"{name}: confusion matrix on the test set (colour: "
                "fraction of the true class; per-class accuracy beside each true class)")


GALLERY_WIDTH = 700  # pixels: a gallery fits an 800-pixel-wide window without shrinking
_CAPTION_PT = 8.0


def gallery_figure(name: str, gallery: Gallery, *, title: str | None = None) -> Image:
    """The gallery's images in a grid, each with its caption lines under it; columns as wide
    as the longest caption line (measured), as many as fit :data:`GALLERY_WIDTH` pixels.
    Grey images are drawn grey, RGB images in colour; a mistake's prediction is in red."""
    images, captions = gallery.images, gallery.captions
    k = len(images)
    h, w = images.shape[1:3]
    longest = max(h, w)
    scale = round(84 / longest) if longest <= 84 else 84 / longest  # about 84 pixels a side
    img_w, img_h = w * scale, h * scale
    line = _CAPTION_PT / 72 * DPI * 1.3  # pixels per caption line
    lines = max(len(c) for c in captions)
    text_px = text_width([t for c in captions for t in c], _CAPTION_PT) * DPI
    cell_w = max(img_w, text_px) + 12
    cell_h = img_h + lines * line + 10
    cols = max(1, min(k, int(GALLERY_WIDTH // cell_w)))
    rows = math.ceil(k / cols)
    head = 22 if title else 4
    fig_w, fig_h = cols * cell_w, rows * cell_h + head
    fig = _blank(fig_w / DPI, fig_h / DPI)
    if title:
        fig.text(6 / fig_w, 1 - 6 / fig_h, title, ha="left", va="top", fontsize=8.5,
                 color="0.15")
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        x0 = c * cell_w + (cell_w - img_w) / 2
        y_top = head + r * cell_h
        ax = fig.add_axes((x0 / fig_w, 1 - (y_top + img_h) / fig_h, img_w / fig_w,
                           img_h / fig_h))
        grey = img.ndim == 2
        ax.imshow(img, cmap="gray" if grey else None, vmin=0, vmax=255,
                  interpolation="nearest" if scale >= 1 else "antialiased")
        ax.set_axis_off()
        first = gallery.true_lines[i] if gallery.true_lines else len(captions[i])
        for j, text in enumerate(captions[i]):
            red = gallery.mistakes and j >= first
            y = y_top + img_h + 3 + j * line
            fig.text((c * cell_w + cell_w / 2) / fig_w, 1 - y / fig_h, text, ha="center",
                     va="top", fontsize=_CAPTION_PT, color="#b00020" if red else "0.15")
    if gallery.mistakes:
        return _png(fig, f"{name}_mistakes", f"{name}: the {k} most confidently misclassified "
                    "test images: true class, then → predicted class (confidence)")
    return _png(fig, name, title or f"{k} test images")


def _legend_width(names: Sequence[str], size: float, ncols: int) -> float:
    """Inches a legend of ``names`` takes in ``ncols`` columns: the measured text plus each
    entry's handle and padding."""
    return ncols * (text_width(names, size) + 0.45) + 0.1
