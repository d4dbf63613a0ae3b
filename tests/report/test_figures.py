"""The report's figures as laid out: every label inside the figure, none over another, long
class and model names whole, points at their values, error bars said. Each figure is drawn
and its text measured (the Agg renderer) just before it becomes a PNG. Crafted data only."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from matplotlib import rc_context
from PIL import Image as PILImage

import archlab.report.figures as figures
import archlab.report.overview_plot as overview_plot
import archlab.report.sweep_plot as sweep_plot
from archlab.report.figures import RC, confusion_figure, gallery_figure
from archlab.report.gather import (
    Curves,
    ScatterPoint,
    gather_gallery,
    gather_samples,
    gather_sweeps,
)
from archlab.report.overview_plot import overlay_figure, scatter_figure
from archlab.report.sweep_plot import sweep_figure
from tests.analysis.crafted import model, results
from tests.report.crafted_predictions import crafted


class Drawn:
    """A figure's texts (visible, non-empty), legends and axes, measured in pixels."""

    def __init__(self, fig: Any) -> None:
        from matplotlib.text import Text

        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        self.size = fig.canvas.get_width_height()
        hidden = set()  # labels of ticks outside the view: matplotlib does not draw them
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                lo, hi = sorted(axis.get_view_interval())
                eps = 1e-9 * max(abs(lo), abs(hi), 1.0)
                for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                    if not lo - eps <= tick.get_loc() <= hi + eps:
                        hidden |= {id(tick.label1), id(tick.label2)}
        self.texts = [(t.get_text(), t.get_window_extent(renderer))
                      for t in fig.findobj(Text)
                      if t.get_visible() and t.get_text().strip() and id(t) not in hidden]
        self.legends = [lg.get_window_extent(renderer) for lg in fig.legends] + [
            ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend()]
        self.axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        self.titles = [ax.title.get_window_extent(renderer) for ax in self.axes
                       if ax.title.get_text()]
        self.frames = [ax.get_window_extent(renderer) for ax in self.axes]

    def outside(self, slack: float = 1.0) -> list[str]:
        w, h = self.size
        return [text for text, b in self.texts
                if b.x0 < -slack or b.y0 < -slack or b.x1 > w + slack or b.y1 > h + slack]

    def overlapping(self, which: Callable[[str], bool]) -> list[tuple[str, str]]:
        boxes = [(t, b) for t, b in self.texts if which(t)]
        return [(a, c) for i, (a, b) in enumerate(boxes) for c, d in boxes[i + 1:]
                if b.overlaps(d)]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Drawn]]:
    """Every figure the report functions make in the test, measured before it is saved."""
    out: list[Drawn] = []
    real = figures._png

    def measured(fig: Any, name: str, alt: str) -> Any:
        out.append(Drawn(fig))
        return real(fig, name, alt)

    for module in (figures, overview_plot, sweep_plot):  # each renders through its own _png
        monkeypatch.setattr(module, "_png", measured)
    with rc_context(RC):
        yield out


def _rgb(png: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB")).astype(int)


@pytest.mark.parametrize("k", [2, 10, 20])
def test_confusion_matrix_shows_whole_names_inside_the_figure(drawn: list[Drawn],
                                                              k: int) -> None:
    pred = crafted(k, accuracy=0.6)
    image = confusion_figure("m", pred.confusion, pred.class_names)
    (fig,) = drawn
    assert fig.outside() == []
    texts = [t for t, _ in fig.texts]
    for name in pred.class_names:  # names up to 30 characters are whole
        if len(name) <= 30:
            assert name in texts and any(t.startswith(f"{name} (") for t in texts)
    assert "true (per-class accuracy)" in texts and "predicted" in texts
    # tick labels clear of each other, and of the axis labels
    assert fig.overlapping(lambda t: t in pred.class_names) == []
    labels = {"true (per-class accuracy)", "predicted", "confusion matrix, test set"}
    clash = fig.overlapping(lambda t: t in labels or t in pred.class_names or t.endswith("%)"))
    assert [pair for pair in clash if set(pair) & labels] == []
    assert image.width == fig.size[0]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_gallery_captions_never_overlap_and_colour_stays(drawn: list[Drawn],
                                                         channels: int) -> None:
    pred = crafted(11, accuracy=0.3, channels=channels)
    gallery = gather_gallery(pred)
    assert gallery is not None
    image = gallery_figure("m", gallery)
    samples = gather_samples(pred)
    assert samples is not None
    sample_image = gallery_figure("samples", samples, title="sample test images")
    for fig in drawn:
        assert fig.outside() == []
        assert fig.overlapping(lambda t: True) == []
    assert max(image.width, sample_image.width) <= figures.GALLERY_WIDTH + 1
    # the longest names are whole (one name is over 30 characters: two lines)
    shown = " ".join(t for t, _ in drawn[1].texts)
    for name in pred.class_names:
        assert " ".join(name.split()) in shown.replace("_ ", "_") or len(name) > 30
    pixels = _rgb(sample_image.png)
    colour = (np.abs(pixels[..., 0] - pixels[..., 1]) > 30).mean()
    if channels == 1:
        assert colour == 0  # grey is drawn grey
    else:
        assert colour > 0.05  # colour is drawn in colour


def _curves(n: int) -> Curves:
    e = np.arange(1, 4)
    vals = {key: np.linspace(0.5, 0.9, 3) + 0.01 * n for key in
            ("loss", "accuracy", "val_loss", "val_accuracy")}
    return Curves(e, vals, vals, vals, 1)


def test_validation_legend_covers_no_panel_or_title(drawn: list[Drawn]) -> None:
    names = [f"convolutional_network_with_long_name[kernel_size={k},filters={f}]"
             for k in (3, 5) for f in (2, 4, 8)]
    overlay_figure([(n, _curves(i)) for i, n in enumerate(names)],
                   {n: i for i, n in enumerate(names)})
    (fig,) = drawn
    assert fig.outside() == []
    (legend,) = fig.legends
    assert not any(legend.overlaps(b) for b in fig.titles + fig.frames)
    assert {t for t, _ in fig.texts} >= set(names)


def _points(names: list[str], errors: bool = True) -> list[ScatterPoint]:
    return [ScatterPoint(n, 1000.0 * (i + 1) ** 1.5, 0.8 + 0.02 * (i % 4),
                         0.01 if errors else 0.0) for i, n in enumerate(names)]


def test_scatter_names_the_points_whole_and_says_what_the_bars_are(drawn: list[Drawn]) -> None:
    long = [f"convolutional_network_with_long_name[kernel_size={k},filters={f}]"
            for k in (3, 5) for f in (2, 4, 8)]
    image = scatter_figure(_points(long), {}, "parameters", "test accuracy vs parameters",
                           "p", False)
    fig = drawn[-1]
    assert fig.outside() == []  # a long name at the right edge is not cut
    assert fig.legends and {t for t, _ in fig.texts} >= set(long)
    assert not any(lg.overlaps(f) for lg in fig.legends for f in fig.frames)
    assert "± 1 std" in image.alt and any("± 1 std" in t for t, _ in fig.texts)
    short = ["k5", "k3bn", "mlp"]
    image = scatter_figure(_points(short, errors=False), {}, "parameters",
                           "test accuracy vs parameters", "p", False)
    fig = drawn[-1]
    assert not fig.legends  # short names label their points
    assert fig.outside() == [] and fig.overlapping(lambda t: t in short) == []
    assert "std" not in image.alt  # one run each: no bars, none said
    crowded = ["a1", "a2", "a3", "a4", "a5"]  # labels that would overlap: a legend instead
    points = [ScatterPoint(n, 1000.0 + i, 0.8, 0.0) for i, n in enumerate(crowded)]
    scatter_figure(points, {}, "parameters", "t", "p", False)
    assert drawn[-1].legends and drawn[-1].outside() == []


def test_sweep_points_sit_on_their_values(drawn: list[Drawn],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each point is drawn at its value (kernel 3 at x = 3, not beside it)."""
    names = {(k, f): f"conv[kernel_size={k},filters={f}]" for k in (3, 5) for f in (2, 4, 8)}
    r = results(*(model(n, [0.7 + 0.01 * f + 0.002 * k, 0.71 + 0.01 * f])
                  for (k, f), n in names.items()))
    swept = {n: {"layers.0.Conv2D.kernel_size": k, "layers.0.Conv2D.filters": f}
             for (k, f), n in names.items()}
    (plot,) = gather_sweeps(r, swept)
    from matplotlib.axes import Axes

    seen: list[list[float]] = []
    real = Axes.errorbar

    def errorbar(self: Axes, x: Any, *args: Any, **kw: Any) -> Any:
        seen.append([float(v) for v in x])
        return real(self, x, *args, **kw)

    monkeypatch.setattr(Axes, "errorbar", errorbar)
    sweep_figure(plot)
    assert seen and all(set(xs) <= {3.0, 5.0} or set(xs) <= {2.0, 4.0, 8.0} for xs in seen)
    assert [3.0, 5.0] in seen and [2.0, 4.0, 8.0] in seen
    (fig,) = drawn
    assert fig.outside() == []
    assert not any(lg.overlaps(f) for lg in fig.legends for f in fig.frames)

