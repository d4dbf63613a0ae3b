"""The ranking as a figure: each model's mean test accuracy with its 95 % CI, best first, and
whether its difference from the best is significant (the table's t-tests). Drawn like the
report's other figures (:mod:`archlab.report.figures`), returning a PNG :class:`Image`."""

from __future__ import annotations

import math
from typing import Any

from archlab.analysis.results import StudyResults
from archlab.analysis.stats import Summary
from archlab.report.figures import Image, _figure, _png

__all__ = ["ranking_figure"]


def ranking_figure(results: StudyResults, metric: str = "test_accuracy") -> Image | None:
    """Models with ``metric`` (finished runs), best mean first; error bars are the mean's 95 %
    CI (none with one run). Each model below the best is marked by the comparison the table
    makes (paired or Welch's t-test): filled when the best is significantly better, hollow
    when the difference is not significant. None when no model has the metric."""
    rows = [(m.model, s) for m in results.models if (s := m.metrics.get(metric)) is not None]
    if not rows:
        return None
    pct = metric.endswith("accuracy")
    scale = 100.0 if pct else 1.0
    higher = pct  # accuracies: higher is better; losses: lower
    rows.sort(key=lambda r: -r[1].mean if higher else r[1].mean)
    against = {c.other: c for c in results.ranking} if metric == "test_accuracy" else {}
    height = 0.9 + 0.28 * len(rows)
    width = 6.4
    label_in = min(3.5, 0.35 + 0.065 * max(len(f"{name} (n={s.n})") for name, s in rows))
    fig, (ax,) = _figure(width, height, margins=(label_in / width, 0.97, 0.5 / height,
                                                 1 - 0.3 / height))
    ys = list(range(len(rows)))[::-1]
    for y, (name, s) in zip(ys, rows, strict=True):
        err = None
        if s.n > 1 and math.isfinite(s.ci_low) and math.isfinite(s.ci_high):
            err = [[(s.mean - s.ci_low) * scale], [(s.ci_high - s.mean) * scale]]
        c = against.get(name)
        best = y == ys[0]
        color = "tab:orange" if best else "tab:blue"
        face = color if best or c is None or c.significant else "white"
        ax.errorbar([s.mean * scale], [y], xerr=err, fmt="o", ms=5, capsize=3, color=color,
                    markerfacecolor=face)
    ax.set_yticks(ys, [f"{name} (n={s.n})" for name, s in rows])
    _xlim(ax, [s for _, s in rows], scale, pct)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    what = metric.replace("_", " ") + (" (%)" if pct else "")
    ax.set_xlabel(f"{what}: mean and 95 % CI over repeats")
    ax.set_title("ranking: orange the best" + ("; hollow: not significantly worse" if against
                                                 else ""))
    ax.grid(axis="x", alpha=0.3)
    return _png(fig, f"ranking_{metric}", f"models ranked by mean {what}, with 95 % CIs")


def _xlim(ax: Any, summaries: list[Summary], scale: float, pct: bool) -> None:
    """Limits that keep the means readable, as the sweep plots' (report.figures): the CIs'
    extent, but no further than 1.5 spans of the means beyond them, and within 0-100 % for an
    accuracy (a CI over 2 runs can be far wider; its bar then runs off the axis)."""
    means = [s.mean * scale for s in summaries]
    lows = [s.ci_low * scale for s in summaries if s.n > 1 and math.isfinite(s.ci_low)] + means
    highs = [s.ci_high * scale for s in summaries if s.n > 1 and math.isfinite(s.ci_high)] \
        + means
    span = max(max(means) - min(means), 0.5 if pct else 0.01)
    low = max(min(lows), min(means) - 1.5 * span)
    high = min(max(highs), max(means) + 1.5 * span)
    if pct:
        low, high = max(low, 0.0), min(high, 100.0)
    pad = 0.06 * (high - low) if high > low else 0.5 * span
    ax.set_xlim(low - pad, high + pad)
