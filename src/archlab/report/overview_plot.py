"""The report's overview figures, across models: every model's validation curves overlaid, and
test accuracy against parameters or training time (a study's models, or several studies'). They
draw what :mod:`archlab.report.gather` collected, with the helpers of
:mod:`archlab.report.figures`."""

from __future__ import annotations

import math
from typing import Any

from archlab.report.figures import Image, _epoch_axis, _figure, _legend_width, _png, _style
from archlab.report.gather import Curves, ScatterPoint

__all__ = ["LABELLED_POINTS", "LABEL_CHARS", "overlay_figure", "scatter_figure"]


def overlay_figure(models: list[tuple[str, Curves]], colors: dict[str, int]) -> Image:
    """Validation loss and accuracy of every model per epoch; the legend to the right of both
    panels (its width measured from the names, so it never covers a panel or its title)."""
    ncols = 1 if len(models) <= 16 else 2
    font = 6 if len(models) > 16 else 7
    legend_in = _legend_width([n for n, _ in models], font, ncols)
    width = 7.2 + legend_in
    height = max(3.0, 0.16 * math.ceil(len(models) / ncols) + 0.8)
    right = 1 - (legend_in + 0.1) / width
    top = 1 - 0.3 / height
    fig, (ax_loss, ax_acc) = _figure(width, height, 2,
                                     margins=(0.7 / width, right, 0.45 / height, top))
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
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="upper left",
               bbox_to_anchor=(right + 0.1 / width, top), ncols=ncols, fontsize=font,
               frameon=False, borderaxespad=0.0)
    return _png(fig, "overview_validation", "validation loss and accuracy per epoch, all models")


def _count_label(x: float, _pos: Any = None) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


#: Points are labelled beside them when every label is at most this long and there are at most
#: LABELLED_POINTS of them; otherwise a legend to the right names them (long sweep names).
LABEL_CHARS = 16
LABELLED_POINTS = 12


def _labels_collide(fig: Any, ax: Any, texts: list[Any]) -> bool:
    """Whether any two point labels overlap, or one reaches past the axes (measured with the
    Agg renderer: only the labels' extents are computed)."""
    ax.get_ylim()  # settles the autoscaled limits the labels' positions depend on
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    frame = ax.get_window_extent(renderer)
    if any(b.x0 < frame.x0 or b.x1 > frame.x1 or b.y1 > frame.y1 + 2 for b in boxes):
        return True
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def scatter_figure(points: list[ScatterPoint], colors: dict[str, int], xlabel: str, title: str,
                   name: str, seconds: bool) -> Image:
    """Test accuracy of each model against a cost (log x), with ± 1 std error bars over its
    repeats (said in the title and the alt text). Short names label their points, each set to
    the side with room; when names are long or many, or two labels would overlap, a legend to
    the right names the points instead, its measured width widening the figure, so nothing is
    cut at the edge or drawn over another label."""
    labels = [p.label for p in points]
    font = 6 if len(points) > 12 else 7
    ncols = 1 if len(points) <= 16 else 2
    bars = any(p.error for p in points)
    alt = title + (" (error bars: ± 1 std over each model's repeats)" if bars else "")
    beside = len(points) <= LABELLED_POINTS and max(map(len, labels)) <= LABEL_CHARS
    if beside:
        fig = _scatter(points, colors, xlabel, title, seconds, bars, font, 0, 0.0)
        texts = fig.axes[0].texts
        if not _labels_collide(fig, fig.axes[0], texts):
            return _png(fig, name, alt)
    legend_in = _legend_width(labels, font, ncols)
    return _png(_scatter(points, colors, xlabel, title, seconds, bars, font, ncols, legend_in),
                name, alt)


def _scatter(points: list[ScatterPoint], colors: dict[str, int], xlabel: str, title: str,
             seconds: bool, bars: bool, font: float, ncols: int, legend_in: float) -> Any:
    """The scatter figure: labels beside the points (``ncols`` 0) or a legend of ``ncols``
    columns, ``legend_in`` inches wide, to the right."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    beside = ncols == 0
    width = 4.8 + legend_in
    rows = math.ceil(len(points) / max(ncols, 1))
    height = 3.4 if beside else max(3.4, 0.16 * rows + 0.8)
    top = 1 - (0.5 if bars else 0.3) / height
    right = 1 - (legend_in + 0.15) / width
    fig, (ax,) = _figure(width, height, margins=(0.6 / width, right, 0.48 / height, top))
    xs = [p.x for p in points]
    lo, hi = min(xs), max(xs)
    span = max(hi / lo, 1.5)
    ax.set_xscale("log")
    ax.set_xlim(lo / span ** (0.15 if beside else 0.08), hi * span ** (0.15 if beside else 0.08))
    mid = math.sqrt(lo * hi)  # right of it, a label goes to the point's left
    for p in points:
        color = _style(colors.get(p.label, 0))["color"]
        ax.errorbar([p.x], [p.accuracy * 100], yerr=[p.error * 100] if p.error else None,
                    fmt="o", ms=4, color=color, capsize=2, label=p.label)
        if beside:
            left_side = len(points) > 1 and p.x > mid
            ax.annotate(p.label, (p.x, p.accuracy * 100), xytext=(-4 if left_side else 4, 2),
                        textcoords="offset points", ha="right" if left_side else "left",
                        fontsize=font, color="0.25")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(
        (lambda x, _p: f"{x:g} s") if seconds else _count_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    if beside:
        ax.margins(y=0.12)  # room for the top point's label
    ax.set_title(title + ("\n(error bars: ± 1 std over each model's repeats)" if bars else ""))
    ax.grid(alpha=0.3)
    if not beside:
        fig.legend(*ax.get_legend_handles_labels(), loc="upper left",
                   bbox_to_anchor=(right + 0.1 / width, top), ncols=ncols, fontsize=font,
                   frameon=False, borderaxespad=0.0, handletextpad=0.3)
    return fig
