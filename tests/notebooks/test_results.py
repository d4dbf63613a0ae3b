"""archlab.collect_results in a notebook: DataFrames equal to the store, the report's figures as
live matplotlib Figures, one-line errors; and the progress view's HTML."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import archlab
from archlab.analysis.results import open_store
from archlab.errors import ArchlabError
from archlab.notebook import NotebookProgress, Results
from archlab.store import FINAL_METRICS

STUDY: dict[str, Any] = {
    "name": "nb",
    "seed": 4,
    "data": {"dataset": "mnist-sample", "validation": {"split": 0.1}},
    "train": {"optimizer": {"name": "adam"}, "batch_size": 256, "epochs": 2, "repeats": 2},
    "models": {
        "mlp": {"layers": ["Flatten", {"Dense": {"units": 8, "activation": "relu"}},
                           {"Dense": {"units": 10, "activation": "softmax"}}],
                "sweep": {"layers.1.Dense.units": [4, 8]}},
        "lin": {"layers": ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]},
    },
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    out = tmp_path_factory.mktemp("nb") / "nb"
    outcome = archlab.run_study(STUDY, out, threads=1)  # a dict; silent outside a notebook
    found = archlab.collect_results(outcome)
    assert isinstance(found, Results) and isinstance(found, archlab.StudyResults)
    return found


def test_models_table_is_results_csv(results: Results) -> None:
    pytest.importorskip("pandas")
    import csv
    import io

    from archlab.report.tables import to_csv

    df = results.to_pandas()
    rows = list(csv.DictReader(io.StringIO(to_csv(results))))
    assert list(df.columns) == list(rows[0])
    assert list(df["model"]) == ["mlp[units=4]", "mlp[units=8]", "lin"]
    for (_, got), want in zip(df.iterrows(), results.models, strict=True):
        assert got["n"] == want.n == 2
        assert got["test_accuracy_mean"] == want.metrics["test_accuracy"].mean
        assert got["test_accuracy_ci_low"] == want.metrics["test_accuracy"].ci_low


def test_runs_and_epochs_tables_hold_the_stores_values(results: Results) -> None:
    pytest.importorskip("pandas")
    runs = results.to_pandas("runs")
    epochs = results.to_pandas("epochs")
    with open_store(results.directory) as store:
        records = store.runs()
        assert sorted(runs["run_id"]) == sorted(r.run_id for r in records)
        for r in records:
            row = runs[runs["run_id"] == r.run_id].iloc[0]
            assert (row["model"], row["seed"], row["status"]) == (r.model, r.seed, "finished")
            for k in FINAL_METRICS:
                assert row[k] == r.metrics[k]
            units = r.config_json["layers"][1]["Dense"]["units"] if r.model != "lin" else None
            if units is not None:
                assert row["layers.1.Dense.units"] == units
            hist = epochs[epochs["run_id"] == r.run_id].sort_values("epoch")
            want = store.history(r.run_id)
            assert list(hist["epoch"]) == [1, 2]
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds"):
                assert list(hist[key]) == [h[key] for h in want]
    with pytest.raises(ArchlabError, match=r"^to_pandas: Expected one of 'models', 'runs', "
                                           r"'epochs', received 'model'$"):
        results.to_pandas("model")


def test_without_pandas_one_line(results: Results, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ArchlabError) as info:
        results.to_pandas()
    assert str(info.value) == "pandas is not installed: pip install 'archlab[notebook]'"


def test_figures_are_the_reports_and_live(results: Results) -> None:
    from matplotlib.figure import Figure

    overview = results.plot_curves()
    one = results.plot_curves("lin")
    ranking = results.plot_ranking()
    sweep = results.plot_sweep("units")
    assert results.plot_sweep("layers.1.Dense.units").axes[0].get_xlabel() == \
        "layers.1.Dense.units"
    confusion = results.plot_confusion("mlp[units=8]")
    for fig in (overview, one, ranking, sweep, confusion):
        assert isinstance(fig, Figure) and fig.axes  # drawn, not cleared
        fig.canvas.draw()  # still renders
    assert [ax.get_title() for ax in one.axes] == ["loss (band: min–max over runs)",
                                                   "accuracy (band: min–max over runs)"]
    assert {line.get_label() for line in overview.axes[0].lines} == {"mlp[units=4]",
                                                                      "mlp[units=8]", "lin"}
    assert [t.get_text() for t in ranking.axes[0].get_yticklabels()][-1].endswith("(n=2)")
    assert confusion.axes[0].images[0].get_array().shape == (10, 10)  # classes x classes
    # The report still gets its PNGs: the figure functions are untouched afterwards.
    from archlab.report.figures import curves_figure
    from archlab.report.gather import gather_curves

    with open_store(results.directory) as store:
        curves = gather_curves([store.history(r.run_id) for r in results.models[0].runs])
    assert curves is not None and curves_figure("x", curves).png.startswith(b"\x89PNG")


@pytest.mark.parametrize("call, message", [
    (lambda r: r.plot_curves("ln"), r"^study 'nb': Expected a model, received 'ln' \(did "
                                    r"you mean 'lin'\?\)$"),
    (lambda r: r.plot_sweep("filters"), r"^plot_sweep: Expected a swept field of study 'nb' "
                                        r"\(layers.1.Dense.units\), received 'filters'$"),
    (lambda r: r.plot_ranking("val_los"), r"^study 'nb': no finished run has val_los$"),
])
def test_bad_arguments_are_one_line(results: Results, call: Any, message: str) -> None:
    with pytest.raises(ArchlabError, match=message):
        call(results)


def test_collect_results_from_a_directory(results: Results) -> None:
    again = archlab.collect_results(results.directory)
    assert [m.model for m in again.models] == [m.model for m in results.models]
    with pytest.raises(ArchlabError, match="no such study directory"):
        archlab.collect_results(results.directory / "missing")


def test_collect_results_under_another_correction(results: Results) -> None:
    assert results.correction == "holm"  # what the run recorded (the default)
    bh = archlab.collect_results(results.directory, correction="bh")
    assert bh.correction == "bh" and bh.ranked is not None
    assert bh.ranked.text.startswith("Benjamini-Hochberg")
    with pytest.raises(ArchlabError, match=r"^correction: Expected one of holm, bh, none, "
                                           r"received 'bonferroni'$"):
        archlab.collect_results(results.directory, correction="bonferroni")


class _Plan:
    def __init__(self, run_id: str, model: str, repeat: int, epochs: int) -> None:
        self.run_id, self.model, self.repeat = run_id, model, repeat
        self.config = type("C", (), {"train": type("T", (), {"epochs": epochs})()})()


def test_progress_view_html(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("IPython")
    shown: list[str] = []

    class Handle:
        def update(self, obj: Any) -> None:
            shown.append(obj.data)

    def display(obj: Any, display_id: bool = False) -> Handle:
        shown.append(obj.data)
        return Handle()

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", display)
    view = NotebookProgress(interval=3600)
    view.start([_Plan("a", "mlp[units=<8>]", 0, 2), _Plan("b", "lin", 0, 2)], skipped=1)
    view.event("a", {"kind": "batch", "done": 5, "total": 10})  # throttled: not drawn
    assert len(shown) == 2  # start's add, then start
    view.event("a", {"kind": "epoch", "epoch": 1, "epochs": 2, "loss": 0.5, "accuracy": 0.8,
                     "val_loss": 0.4, "val_accuracy": 0.85, "seconds": 1.0})
    html = shown[-1]
    assert "mlp[units=&lt;8&gt;]#0" in html and "<8>" not in html  # names are escaped
    assert "0/2 (1 already in the store)" in html and "epoch 2/2" in html
    assert "loss 0.5000 accuracy 0.8000 val_loss 0.4000 val_accuracy 0.8500" in html
    view.event("a", {"kind": "done", "status": "finished", "test_accuracy": 0.875})
    view.event("b", {"kind": "done", "status": "failed", "error": "ValueError: x"})
    view.stop()
    assert "2/2" in shown[-1] and "finished test_accuracy 0.8750" in shown[-1]
    assert "lin#0 failed ValueError: x" in shown[-1] and "\x1b" not in "".join(shown)
