"""The report's sweep figure: test accuracy and loss against one swept field, a line per
combination of the other swept fields, each point the mean over its repeats with its 95 % CI
(drawn from :mod:`archlab.report.gather`'s SweepPlot, on the figures' canvas)."""

from __future__ import annotations

import json
import math
from typing import Any

from archlab.report.figures import DPI, Image, _legend_width, _png, _style
from archlab.report.gather import SweepPanel, SweepPlot

__all__ = ["json_key", "sweep_figure"]


_SWEEP_TITLES = {"test_accuracy": "test accuracy (%)", "test_loss": "test loss"}


def _sweep_x(panel: SweepPanel) -> tuple[list[float], bool]:
    """Axis positions of the panel's values (the values themselves when numeric, else their
    index) and whether the axis is logarithmic (positive numbers spanning 10x or more)."""
    if not panel.numeric:
        return [float(i) for i in range(len(panel.values))], False
    xs = [float(v) for v in panel.values]
    log = len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 10
    return xs, log


def _sweep_panel(ax: Any, panel: SweepPanel) -> None:
    from matplotlib.ticker import NullFormatter, NullLocator

    xs, log = _sweep_x(panel)
    where = {json_key(v): x for v, x in zip(panel.values, xs, strict=True)}
    scale = 100.0 if panel.metric.endswith("accuracy") else 1.0
    for i, line in enumerate(panel.lines):
        px = [where[json_key(p.value)] for p in line.points]  # each point at its own value
        ys = [p.summary.mean * scale for p in line.points]
        lo = [max(0.0, (p.summary.mean - p.summary.ci_low) * scale)
              if p.summary.n > 1 and math.isfinite(p.summary.ci_low) else 0.0
              for p in line.points]
        hi = [max(0.0, (p.summary.ci_high - p.summary.mean) * scale)
              if p.summary.n > 1 and math.isfinite(p.summary.ci_high) else 0.0
              for p in line.points]
        st = _style(i)
        ax.errorbar(px, ys, yerr=[lo, hi], marker="o", ms=3.5, capsize=2.5, linewidth=1.1,
                    elinewidth=0.9, label=line.label or None, color=st["color"],
                    linestyle=st["linestyle"])
    _sweep_ylim(ax, panel, scale)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(xs, [_value_label(v) for v in panel.values])
    if len(xs) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)
    else:
        ax.margins(x=0.1)  # the end points' error bars clear of the spines
    ax.set_xlabel(panel.path)
    ax.set_ylabel(_SWEEP_TITLES.get(panel.metric, panel.metric))
    ax.set_title(f"{_SWEEP_TITLES.get(panel.metric, panel.metric).split(' (')[0]} "
                 f"by {panel.label}")
    ax.yaxis.get_major_locator().set_params(nbins=5)
    ax.grid(alpha=0.3)


def _sweep_ylim(ax: Any, panel: SweepPanel, scale: float) -> None:
    """Y limits that keep the means readable: the error bars' extent, but no further than
    1.5 spans of the means beyond them (a CI over 2 runs can be 20 times the spread of the
    means; such a bar runs off the axis) and never outside what the metric can take (0-100 %
    accuracy, a loss of 0 or more)."""
    means = [p.summary.mean * scale for line in panel.lines for p in line.points]
    lows = [p.summary.ci_low * scale for line in panel.lines for p in line.points
            if p.summary.n > 1 and math.isfinite(p.summary.ci_low)] + means
    highs = [p.summary.ci_high * scale for line in panel.lines for p in line.points
             if p.summary.n > 1 and math.isfinite(p.summary.ci_high)] + means
    span = max(max(means) - min(means), 0.5 if scale == 100.0 else 0.01)
    low = max(min(lows), min(means) - 1.5 * span, 0.0)
    high = max(highs) if scale != 100.0 else min(max(highs), 100.0)
    high = min(high, max(means) + 1.5 * span)
    pad = 0.06 * (high - low) if high > low else 0.5 * span
    ax.set_ylim(low - pad, high + pad)


def json_key(value: Any) -> str:

    return json.dumps(value, sort_keys=True)


def _value_label(value: Any) -> str:

    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


def sweep_figure(plot: SweepPlot) -> Image:
    """A swept model's metrics against each swept field: a row of panels per field (test
    accuracy, test loss), a line per combination of the other swept fields, error bars the
    95 % CI of each point's mean over its repeats (none with one run)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = list(dict.fromkeys(p.path for p in plot.panels))
    metrics = list(dict.fromkeys(p.metric for p in plot.panels))
    labels = list(dict.fromkeys(line.label for p in plot.panels for line in p.lines
                                if line.label))
    font = 6 if len(labels) > 10 else 7
    legend_in = _legend_width(labels, font, 1) if labels else 0.0
    panel_w, panel_h = 3.6, 2.4
    width = panel_w * len(metrics) + legend_in + 0.2
    height = panel_h * len(paths) + 0.3
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.7 / width, right=1 - (legend_in + 0.15) / width,
                        bottom=0.5 / height, top=1 - 0.3 / height, wspace=0.3,
                        hspace=0.55 * 2.4 / panel_h)
    axes = fig.subplots(len(paths), len(metrics), squeeze=False)
    for panel in plot.panels:
        ax = axes[paths.index(panel.path)][metrics.index(panel.metric)]
        _sweep_panel(ax, panel)
    for row in axes:  # a field without one of the metrics leaves its panel empty
        for ax in row:
            if not ax.has_data():
                ax.set_axis_off()
    for row in axes:  # a legend per field: its lines are the other fields' combinations
        used = next((ax for ax in row if ax.has_data()), row[0])
        handles, names = used.get_legend_handles_labels()
        if names:
            row[-1].legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           fontsize=font, frameon=False,
                           borderaxespad=0.0)
    return _png(fig, f"sweep_{plot.sweep}", f"{plot.sweep}: test accuracy and loss against "
                "each swept field, one line per combination of the other swept fields "
                "(error bars: 95 % CI over each point's repeats; a bar longer than the axis "
                "runs off it)")
