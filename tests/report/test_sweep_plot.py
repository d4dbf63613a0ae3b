"""The report's sweep plot: the gathered data (one panel per swept field and metric, one line
per combination of the other fields, the results table's means and CIs) and its place in
report.html/report.md, only for studies with a sweep. Crafted stores: nothing trains."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from archlab.analysis.results import collect
from archlab.report import REPORT_FILES, write_report
from archlab.report.gather import gather_sweeps
from archlab.report.sweep_plot import sweep_figure
from archlab.report.tables import to_records
from archlab.spec import load_study
from tests.analysis.crafted import Run, model, results, write_store

SWEEP_YAML = """\
name: crafted
data: {dataset: mnist, validation: test}
models:
  mlp:
    layers: [Flatten, {Dense: {units: 32, activation: relu}},
             {Dense: {units: 10, activation: softmax}}]
    sweep:
      train.batch_size: [32, 128]
      layers.1.Dense.units: [8, 16, 32]
  lin:
    layers: [Flatten, {Dense: {units: 10, activation: softmax}}]
"""

#: test accuracy of each repeat, per point (batch size, units)
ACCS = {(b, u): [0.80 + 0.02 * i + (0.01 if b == 32 else 0.0) + 0.003 * r
                 for r in range(3)]
        for i, (b, u) in enumerate((b, u) for b in (32, 128) for u in (8, 16, 32))}


def _point(b: int, u: int) -> str:
    return f"mlp[batch_size={b},units={u}]"


def _swept() -> dict[str, dict[str, int]]:
    return {_point(b, u): {"train.batch_size": b, "layers.1.Dense.units": u}
            for b, u in ACCS}


def test_gathered_panels_lines_and_values() -> None:
    r = results(*(model(_point(b, u), accs) for (b, u), accs in ACCS.items()),
                model("lin", [0.9, 0.91]))
    (plot,) = gather_sweeps(r, _swept(), metrics=("test_accuracy",))
    assert plot.sweep == "mlp"
    assert [(p.path, p.label, p.metric) for p in plot.panels] == [
        ("train.batch_size", "batch_size", "test_accuracy"),
        ("layers.1.Dense.units", "units", "test_accuracy")]
    by_batch, by_units = plot.panels
    assert by_batch.values == [32, 128] and by_batch.numeric
    assert by_units.values == [8, 16, 32]
    # against batch size: one line per value of units, each with both batch sizes in order
    assert [line.label for line in by_batch.lines] == ["units=8", "units=16", "units=32"]
    for line in by_batch.lines:
        assert [p.value for p in line.points] == [32, 128]
    assert [line.label for line in by_units.lines] == ["batch_size=32", "batch_size=128"]
    point = by_units.lines[1].points[2]
    assert point.model == _point(128, 32)
    assert point.summary.n == 3
    assert point.summary.mean == pytest.approx(sum(ACCS[128, 32]) / 3)


def test_models_without_the_metric_and_unswept_studies() -> None:
    r = results(model(_point(32, 8), [0.8, 0.81]),
                model(_point(32, 16), [], failed=1),  # no finished run: no point
                model("lin", [0.9]))
    swept = {k: v for k, v in _swept().items() if k in (_point(32, 8), _point(32, 16))}
    (plot,) = gather_sweeps(r, swept, metrics=("test_accuracy", "test_loss"))
    # crafted runs have no test loss: accuracy panels only; units has one point left
    assert {p.metric for p in plot.panels} == {"test_accuracy"}
    by_units = plot.panels[1]
    assert by_units.values == [8, 16]
    assert [p.model for line in by_units.lines for p in line.points] == [_point(32, 8)]
    assert gather_sweeps(r, {}) == []
    image = sweep_figure(plot)
    assert image.png.startswith(b"\x89PNG") and image.name == "sweep_mlp"


def test_categorical_values_keep_their_order() -> None:
    names = {"mlp[activation=tanh]": "tanh", "mlp[activation=relu]": "relu"}
    r = results(*(model(n, [0.9, 0.92]) for n in names))
    swept = {n: {"layers.1.Dense.activation": v} for n, v in names.items()}
    (plot,) = gather_sweeps(r, swept, metrics=("test_accuracy",))
    (panel,) = plot.panels
    assert panel.values == ["tanh", "relu"] and not panel.numeric
    assert [line.label for line in panel.lines] == [""]  # one field: a single line
    assert sweep_figure(plot).width > 100


def _sweep_store(directory: Path) -> Path:
    runs = [Run(_point(b, u), i, acc, seed=10 + i)
            for (b, u), accs in ACCS.items() for i, acc in enumerate(accs)]
    runs += [Run("lin", i, 0.9 + 0.001 * i, seed=10 + i) for i in range(3)]
    write_store(directory, runs)
    (directory / "study.yaml").write_text(SWEEP_YAML)
    return directory


def test_report_data_matches_the_results_table(tmp_path: Path) -> None:
    """The plotted means and error bars are the comparison table's: same Summary objects,
    written to results.json as the test accuracy's mean and 95 % CI."""
    d = _sweep_store(tmp_path / "study")
    res = collect(d)
    swept = {n: s.swept for n, s in load_study(d / "study.yaml").models.items() if s.swept}
    assert set(swept) == {_point(b, u) for b, u in ACCS}
    plots = gather_sweeps(res, swept)
    records = {row["model"]: row for row in to_records(res)}
    checked = 0
    for panel in plots[0].panels:
        for line in panel.lines:
            for p in line.points:
                row = records[p.model]
                assert p.summary.n == row["n"] == 3
                assert p.summary.mean == row[f"{panel.metric}_mean"]
                assert (p.summary.ci_low, p.summary.ci_high) == (
                    row[f"{panel.metric}_ci_low"], row[f"{panel.metric}_ci_high"])
                if panel.metric == "test_accuracy":  # crafted runs share one test loss
                    assert p.summary.ci_low < p.summary.mean < p.summary.ci_high
                checked += 1
    # 2 fields x 2 metrics (crafted stores record a test loss) x 6 points
    assert checked == 2 * 2 * 6


def test_report_has_the_sweep_figure_only_with_a_sweep(tmp_path: Path) -> None:
    d = _sweep_store(tmp_path / "sweep")
    html_path, md_path = write_report(d)
    text, md = html_path.read_text(), md_path.read_text()
    assert '<section id="sweeps">' in text and 'href="#sweeps"' in text
    alt = html.escape("mlp: test accuracy and loss against each swept field", quote=True)
    assert alt in text
    assert "## Sweeps" in md and f"]({REPORT_FILES}/sweep_mlp.png)" in md
    assert (d / REPORT_FILES / "sweep_mlp.png").is_file()
    shown = re.search(r'<section id="sweeps">(.*?)</section>', text, re.S).group(1)
    assert shown.count("<img ") == 1
    # the same store without its study file, and a study without a sweep: no sweep section
    (d / "study.yaml").unlink()
    text = write_report(d)[0].read_text()
    assert 'id="sweeps"' not in text and not (d / REPORT_FILES / "sweep_mlp.png").exists()
    plain = write_store(tmp_path / "plain", [Run("a", i, 0.9 + 0.01 * i) for i in range(2)])
    (plain / "study.yaml").write_text(SWEEP_YAML.split("  mlp:")[0]
                                      + "  a:\n    layers: [Flatten, {Dense: {units: 10, "
                                        "activation: softmax}}]\n")
    html_path, md_path = write_report(plain)
    assert "Sweeps" not in html_path.read_text() and "## Sweeps" not in md_path.read_text()


def test_axis_keeps_the_means_readable_and_within_the_metric() -> None:
    """A CI over 2 runs can be far wider than the spread of the means: the accuracy axis stays
    within 0-100 % and within 1.5 spans of the means; the loss axis never goes below zero."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    from archlab.report.figures import RC
    from archlab.report.sweep_plot import _sweep_panel

    names = {"m[units=8]": [0.2, 0.9], "m[units=32]": [0.5, 0.52]}  # n = 2: t = 12.7
    r = results(*(model(n, accs) for n, accs in names.items()))
    swept = {"m[units=8]": {"layers.1.Dense.units": 8}, "m[units=32]": {
        "layers.1.Dense.units": 32}}
    (plot,) = gather_sweeps(r, swept, metrics=("test_accuracy",))
    (panel,) = plot.panels
    wide = panel.lines[0].points[0].summary
    assert wide.ci_low < -1.0 and wide.ci_high > 2.0  # the honest interval, far off the scale
    with rc_context(RC):
        ax = Figure().subplots()
        _sweep_panel(ax, panel)
        low, high = ax.get_ylim()
    means = [55.0, 51.0]
    span = max(means) - min(means)
    assert low > -10.0 and high < 110.0
    assert min(means) - 1.5 * span - 1.0 <= low < min(means)
    assert max(means) < high <= max(means) + 1.5 * span + 1.0
